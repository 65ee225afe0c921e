"""The benchmark's "limits and metering off" launcher stands in for the real
admission and wallet: when those grow a member the gateway uses, the stand-ins
must too (bench/gateway_scale.py measured 500s when they fell behind)."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

from cambist.gateway.limits import Admission
from cambist.ledger.plans import PlanBook
from cambist.ledger.wallet import TenantWallet

_PATH = Path(__file__).resolve().parents[2] / "bench" / "gateway" / "variant_scale.py"


def _variants():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("variant_scale", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("variant_scale", module)
    spec.loader.exec_module(module)
    return module


_INTERNAL = {"clock", "key", "key_id", "tenant", "tokens", "settled"}


def test_the_free_admission_has_what_the_gateway_uses_of_an_admission() -> None:
    free = _variants().FreeAdmission(PlanBook().plan_of("ten_a"))
    used = {n for n in dir(Admission) if not n.startswith("_")} - _INTERNAL
    assert used, "Admission has public members"
    missing = sorted(n for n in used if not hasattr(free, n))
    assert not missing, f"FreeAdmission lacks {missing}"
    assert free.headers == {} and free.extra == {}


def test_the_null_wallet_has_the_hot_path_of_a_wallet() -> None:
    wallet = _variants().NullWallet()
    for name in ("reserve", "settle", "release"):
        assert callable(getattr(TenantWallet, name)) and callable(getattr(wallet, name))
    hold = wallet.reserve("ten_a", Decimal("0.01"), "req_1")
    assert hold.amount == Decimal("0.01")
