from __future__ import annotations

import pytest

from cambist.ledger.accounts import supplier_payable, tenant_account, tenant_of


def test_account_names() -> None:
    assert tenant_account("ten_1") == "tenant:ten_1"
    assert supplier_payable("lambda") == "supplier:lambda:payable"
    assert tenant_of("tenant:ten_1") == "ten_1"
    assert tenant_of("platform:cash") is None


@pytest.mark.parametrize("bad", ["", "a:b", "x" * 65, "sp ace"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        tenant_account(bad)
    with pytest.raises(ValueError, match="invalid"):
        supplier_payable(bad)
