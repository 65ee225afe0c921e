"""Unit and property tests of the pure analytics functions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.analytics.margins import (
    allocate_idle,
    group_key,
    lease_cost,
    margin_rows,
    margin_total,
)
from cambist.analytics.report import Snapshot, margin_report, summary_report
from cambist.analytics.rows import EndpointRow, LeaseRow, UsageRow
from cambist.analytics.utilization import (
    deployment_utilization,
    endpoint_utilization,
    platform_utilization,
    tenant_utilization,
)
from cambist.analytics.window import Window, overlap_seconds, parse_duration, resolve_window
from cambist.domain.errors import InvalidRequest

T0 = 1_767_225_600.0
W = Window(T0, T0 + 3600)


def _ep(id: str = "ep1", cap: float = 100.0, created: float = T0, removed: float | None = None,
        deployment: str | None = "d1", owner: str | None = None,
        kind: str = "deployment") -> EndpointRow:
    return EndpointRow(id, "m", "sim", kind, owner, deployment, cap, created, removed)


def _u(tokens: int = 100, *, t: float = T0 + 10, ep: str | None = "ep1", tenant: str = "a",
       price: str = "0.01", cost: str = "0.002", reasoning: int = 0, model: str = "m",
       pooled: bool = True, prompt: int = 10) -> UsageRow:
    return UsageRow(tenant, model, ep, "sim", prompt, tokens, reasoning, Decimal(price),
                    Decimal(cost), t, pooled)


def test_parse_duration_and_window() -> None:
    assert parse_duration("90m") == 5400
    assert parse_duration("24h") == 86400
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "24", "h", "-1h", "0m", "5y", "400d"):
        with pytest.raises(InvalidRequest):
            parse_duration(bad)
    w = resolve_window("2h", None, T0)
    assert (w.since, w.until) == (T0 - 7200, T0)
    assert resolve_window(str(T0 - 10), str(T0), T0 + 99) == Window(T0 - 10, T0)
    with pytest.raises(InvalidRequest):
        resolve_window(str(T0), str(T0 - 1), T0)


def test_overlap() -> None:
    assert overlap_seconds(None, None, W) == 0
    assert overlap_seconds(T0 - 100, None, W) == 3600
    assert overlap_seconds(T0 + 600, T0 + 1200, W) == 600
    assert overlap_seconds(T0 - 100, T0 - 1, W) == 0


def test_endpoint_utilization_uses_lifetime_in_window() -> None:
    eps = [_ep("ep1", 100.0, created=T0 + 1800), _ep("ep2", 50.0, removed=T0 + 100)]
    usage = [_u(9000, ep="ep1"), _u(1000, ep="ep2"), _u(7, ep="ep1", t=T0 - 1)]
    rows = {r.key: r for r in endpoint_utilization(eps, usage, W)}
    assert rows["ep1"].capacity_tokens == 100.0 * 1800
    assert rows["ep1"].utilization == pytest.approx(9000 / 180000)
    assert rows["ep2"].utilization == pytest.approx(1000 / 5000)
    dep = deployment_utilization(eps, usage, W)
    assert [(d.key, d.busy_tokens, d.capacity_tokens) for d in dep] == [("d1", 10000, 185000.0)]


def test_external_endpoints_have_no_capacity() -> None:
    eps = [_ep("x", 0.0, kind="external", deployment=None)]
    (row,) = endpoint_utilization(eps, [_u(10, ep="x", pooled=False)], W)
    assert row.utilization is None
    assert platform_utilization(eps, [], W).utilization is None


def test_tenant_peak_shows_pooling() -> None:
    usage = [_u(3000, t=T0 + 10, tenant="bursty"), _u(300, t=T0 + 2000, tenant="steady")]
    usage += [_u(300, t=T0 + 300 * i + 5, tenant="steady") for i in range(12) if i != 6]
    rows = {r.tenant_id: r for r in tenant_utilization(usage, W)}
    assert rows["bursty"].peak_tok_s == pytest.approx(10.0)
    assert rows["bursty"].dedicated_utilization == pytest.approx(1 / 12)
    assert rows["steady"].dedicated_utilization == pytest.approx(1.0)


def test_lease_cost_per_second_platform_only() -> None:
    leases = [LeaseRow("l1", None, "sim", Decimal("3.60"), T0 - 100, None),
              LeaseRow("l2", None, "sim", Decimal("7.20"), T0 + 1800, T0 + 2700),
              LeaseRow("l3", "ten", "sim", Decimal("100"), T0, None),
              LeaseRow("l4", None, "sim", Decimal("100"), None, None)]
    assert lease_cost(leases, W) == Decimal("3.60") + Decimal("1.80")


def test_margins_and_idle_allocation() -> None:
    usage = [_u(100, price="0.02", cost="0.001", model="a"),
             _u(300, price="0.03", cost="0.003", model="b", reasoning=100),
             _u(50, price="0.01", cost="0.008", model="b", pooled=False, ep="x")]
    leases = [LeaseRow("l1", None, "sim", Decimal("0.36"), T0, None)]  # 0.36 in W
    rep = margin_report(Snapshot(tuple(usage), (), tuple(leases)), W, "model")
    total = rep["total"]
    assert total["revenue"] == Decimal("0.06")
    assert total["compute_cost"] == Decimal("0.012")
    assert total["effective_cost"] == Decimal("0.36") + Decimal("0.008")
    rows = {r["key"]: r for r in rep["data"]}
    # idle 0.356 split 1:3 over pooled completion tokens
    assert rows["a"]["effective_cost"] == Decimal("0.001") + Decimal("0.089")
    assert rows["b"]["reasoning_tokens"] == 100 and rows["b"]["visible_tokens"] == 250
    assert rows["b"]["cost_per_query"] == rows["b"]["effective_cost"] / 2
    assert total["compute_margin"] == Decimal("0.048") / Decimal("0.06")
    assert total["effective_margin"] < 0


def test_tenant_view_is_scoped() -> None:
    usage = [_u(100, tenant="a"), _u(100, tenant="b")]
    snap = Snapshot(tuple(usage), (_ep(),), (LeaseRow("l", None, "s", Decimal(1), T0, None),))
    rep = summary_report(snap, W, tenant="a")
    assert "platform" not in rep
    assert [t["tenant_id"] for t in rep["tenants"]] == ["a"]
    assert rep["total"]["requests"] == 1
    with pytest.raises(InvalidRequest):
        margin_report(snap, W, "colour")


_usage_rows = st.lists(st.builds(
    _u, tokens=st.integers(0, 10_000), t=st.floats(T0, T0 + 3599),
    tenant=st.sampled_from(["a", "b", "c"]), model=st.sampled_from(["m1", "m2"]),
    price=st.decimals(0, 10, places=6).map(str), cost=st.decimals(0, 1, places=6).map(str),
    pooled=st.booleans(), ep=st.sampled_from(["ep1", "ep2"])), max_size=30)


@settings(max_examples=60, deadline=None)
@given(usage=_usage_rows, idle=st.decimals(-5, 50, places=6),
       by=st.sampled_from(["model", "tenant", "supplier", "endpoint"]))
def test_groups_sum_to_totals(usage: list[UsageRow], idle: Decimal, by: str) -> None:
    shares = allocate_idle(usage, idle)
    if any(u.pooled and u.completion_tokens for u in usage):
        assert sum(shares, Decimal(0)) == idle
    rows = margin_rows(usage, shares, group_key(by))
    total = margin_total(usage, shares)
    for field in ("revenue", "compute_cost", "effective_cost", "spread"):
        assert sum((getattr(r, field) for r in rows), Decimal(0)) == getattr(total, field)
    assert sum(r.requests for r in rows) == total.requests == len(usage)
    if total.revenue:
        assert total.compute_margin == (total.revenue - total.compute_cost) / total.revenue
        assert total.spread == total.revenue - total.compute_cost


@settings(max_examples=60, deadline=None)
@given(caps=st.lists(st.floats(1, 5000), min_size=1, max_size=4),
       loads=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1), st.floats(0, 3599)),
                      max_size=20))
def test_utilization_in_unit_interval(caps: list[float],
                                      loads: list[tuple[int, float, float]]) -> None:
    eps = [_ep(f"ep{i}", c) for i, c in enumerate(caps)]
    budget = {e.id: e.capacity_tok_s * W.seconds for e in eps}
    usage = []
    for idx, frac, t in loads:
        ep = eps[idx % len(eps)].id
        n = int(budget[ep] * frac * 0.5)
        budget[ep] -= n
        usage.append(_u(n, ep=ep, t=T0 + t))
    for row in [*endpoint_utilization(eps, usage, W), *deployment_utilization(eps, usage, W),
                platform_utilization(eps, usage, W)]:
        assert row.utilization is not None and 0 <= row.utilization <= 1
    for tr in tenant_utilization(usage, W):
        assert tr.dedicated_utilization is None or 0 <= tr.dedicated_utilization <= 1


def test_window_refuses_absurd_bounds() -> None:
    import pytest

    from cambist.analytics.window import resolve_window
    from cambist.domain.errors import InvalidRequest

    for since, until in (("0", "1.7976931348623157e+308"), ("nan", None), ("0", None),
                         ("-5", None)):
        with pytest.raises(InvalidRequest):
            resolve_window(since, until, 1_767_225_600.0)
