"""The shipped billing fakes keep the protocol contracts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cambist.domain.errors import Conflict, InsufficientCredit
from cambist.domain.usage import UsageRecord
from cambist.testing import FakeAuthenticator, FakePriceList, FakeWallet


def record(request_id: str, price: str) -> UsageRecord:
    return UsageRecord(request_id, "t", "k", "m", "e", "s", 1, 1, 0, Decimal(price),
                       Decimal(0), 1, "ok", 0.0)


def test_wallet_holds_charges_and_is_idempotent() -> None:
    wallet = FakeWallet({"t": Decimal("1.00")})
    r1 = wallet.reserve("t", Decimal("0.60"), "req_1")
    assert wallet.reserve("t", Decimal("0.60"), "req_1") is r1
    assert wallet.available("t") == Decimal("0.40")
    with pytest.raises(InsufficientCredit):
        wallet.reserve("t", Decimal("0.50"), "req_2")
    wallet.settle(r1, record("req_1", "0.25"))
    with pytest.raises(Conflict):
        wallet.settle(r1, record("req_1", "0.25"))
    assert wallet.balance("t") == Decimal("0.75") and wallet.available("t") == Decimal("0.75")
    r2 = wallet.reserve("t", Decimal("0.50"), "req_2")
    wallet.release(r2)
    wallet.release(r2)
    assert wallet.released == [r2] and wallet.holds == {}
    assert [r.request_id for r in wallet.records] == ["req_1"]
    assert wallet.charged("t") == Decimal("0.25")


def test_authenticator_and_prices() -> None:
    auth = FakeAuthenticator()
    secret, principal = auth.issue("t")
    assert auth.authenticate(secret) == principal and principal.scope == "inference"
    auth.revoke(secret)
    assert auth.authenticate(secret) is None
    prices = FakePriceList()
    p1 = prices.set("m", "1", "2")
    p2 = prices.set("m", "1", "3")
    assert prices.price("m") == p2 and p2.version == p1.version + 1
    assert prices.price("m", "zdr") is None
    assert p2.charge(1_000_000, 0) == Decimal(1)
