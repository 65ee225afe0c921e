"""Privacy tier policies on keys and tenants: stored, met, applied at once,
kept across rotation, and enforced by the request parser."""

from __future__ import annotations

import pytest

from cambist.domain.endpoint import format_tier_list, meet_tiers, parse_tier_list
from cambist.domain.errors import InvalidRequest, NotFound
from cambist.gateway.privacy import PrivacyTierNotAllowed, parse_privacy
from cambist.ledger.keys import Keyring

ZR = frozenset({"zero_retention", "confidential"})


def test_tier_lists_parse_format_and_meet() -> None:
    assert parse_tier_list(None) is None and parse_tier_list(" ") is None
    assert parse_tier_list("confidential, zero_retention") == ZR
    assert format_tier_list(ZR) == "zero_retention,confidential"
    with pytest.raises(InvalidRequest, match="unknown privacy tier 'secret'"):
        parse_tier_list("standard,secret")
    assert meet_tiers(None, ZR) == ZR and meet_tiers(ZR, None) == ZR
    assert meet_tiers(ZR, frozenset({"standard", "confidential"})) == {"confidential"}


def test_parser_applies_the_policy() -> None:
    assert parse_privacy(None, None, None) == "standard"
    # No tier named: the first allowed in PRIVACY_TIERS order.
    assert parse_privacy(None, None, ZR) == "zero_retention"
    assert parse_privacy("confidential", None, ZR) == "confidential"
    with pytest.raises(PrivacyTierNotAllowed) as err:
        parse_privacy("standard", None, ZR)
    assert err.value.status == 403
    assert "may not use the standard tier" in err.value.message
    assert "zero_retention, confidential" in err.value.message
    with pytest.raises(PrivacyTierNotAllowed):
        parse_privacy(None, "anonymous", ZR)
    with pytest.raises(PrivacyTierNotAllowed, match="no privacy tier"):
        parse_privacy(None, None, frozenset())


async def test_key_and_tenant_policies_meet(keyring: Keyring, tenant: str) -> None:
    _, free = await keyring.create_key(tenant, "inference")
    kid, strict = await keyring.create_key(tenant, "inference", privacy_tiers=ZR)
    assert keyring.authenticate(free).privacy_tiers is None  # type: ignore[union-attr]
    assert keyring.authenticate(strict).privacy_tiers == ZR  # type: ignore[union-attr]

    await keyring.set_privacy(tenant_id=tenant, tiers=frozenset({"standard", "confidential"}))
    assert keyring.authenticate(free).privacy_tiers == {"standard",  # type: ignore[union-attr]
                                                        "confidential"}
    assert keyring.authenticate(strict).privacy_tiers == {"confidential"}  # type: ignore[union-attr]

    # Rotation keeps the key's own policy.
    _, rotated = await keyring.rotate(kid)
    assert keyring.authenticate(rotated).privacy_tiers == {"confidential"}  # type: ignore[union-attr]
    assert (await keyring.key_info(kid))["privacy_tiers"] == "zero_retention,confidential"  # type: ignore[index]

    await keyring.set_privacy(tenant_id=tenant, tiers=None)
    assert keyring.authenticate(free).privacy_tiers is None  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        await keyring.set_privacy(tenant_id=tenant, tiers=frozenset())
    with pytest.raises(NotFound):
        await keyring.set_privacy(key_id="key_nope", tiers=ZR)
    with pytest.raises(NotFound):
        await keyring.set_privacy(tenant_id="ten_nope", tiers=ZR)


async def test_other_processes_see_policy_changes(keyring: Keyring, tenant: str,
                                                  engine: object, clock: object) -> None:
    kid, secret = await keyring.create_key(tenant, "inference")
    other = Keyring(engine, clock, keyring._secret)  # type: ignore[arg-type]
    await other.refresh()
    assert other.authenticate(secret).privacy_tiers is None  # type: ignore[union-attr]
    await keyring.set_privacy(key_id=kid, tiers=ZR)
    await other.refresh()  # what KeyringRefresh does every half second
    assert other.authenticate(secret).privacy_tiers == ZR  # type: ignore[union-attr]
