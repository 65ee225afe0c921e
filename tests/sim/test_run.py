"""Whole runs: demand shapes, cohort vs per-request agreement, the CLI's outputs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cambist.cli.main import app
from cambist.sim.demand import generate_demand
from cambist.sim.figures import run_figures
from cambist.sim.run import RunOptions, SimRun, simulate
from cambist.sim.scenario import load_scenario

HERE = Path(__file__).parent


def test_demand_kinds_have_their_shapes() -> None:
    sc = load_scenario("steady")
    d = generate_demand(sc, 40, 3, seed=3)
    again = generate_demand(sc, 40, 3, seed=3)
    assert np.array_equal(d.requests, again.requests)  # a seed names one demand
    kinds = [t.kind for t in d.tenants]
    assert kinds.count("chat") == 28 and kinds.count("batch") == 6 and kinds.count("agent") == 6
    for i, t in enumerate(d.tenants):
        if t.kind == "agent":
            ratio = d.reasoning[i].sum() / d.visible[i].sum()
            assert 10 <= ratio <= 100  # hidden reasoning 10-100x the visible output
        elif t.kind == "batch":
            assert (d.requests[i] == 0).mean() > 0.5  # idle between jobs
        else:
            assert d.reasoning[i].sum() == 0
    chat = [i for i, t in enumerate(d.tenants) if t.kind == "chat"]
    hourly = d.requests[chat].sum(axis=0).reshape(-1, 60).sum(axis=1)
    assert hourly.max() > 1.5 * hourly.min()  # diurnal


async def _run(per_request: bool) -> SimRun:
    sc = load_scenario(str(HERE / "agreement.yaml"))
    return await simulate(sc, RunOptions(days=1, tenants=3, seed=5, per_request=per_request,
                                         baselines=False))


async def test_cohort_and_per_request_runs_of_a_day_agree() -> None:
    """The stated tolerance: lease cost, served tokens and utilization within
    2%, metered compute cost within 5%, TTFT SLO attainment within 1 point,
    TTFT p95 within 15% and p98 within 25%. Beyond p98 the modes part: single
    requests show sub-minute bursts that a minute's cohort averages away
    (on this day p99 is ~1.4 s per cohort, several seconds per request), so
    cohort runs are optimistic at the far tail."""
    cohort, single = await _run(False), await _run(True)
    c, s = cohort.outcomes["cambist"], single.outcomes["cambist"]
    assert s.served > 1e6 and len(single.driver.fleet.units) >= 4
    assert s.cost == pytest.approx(c.cost, rel=0.02)
    assert s.served == pytest.approx(c.served, rel=0.02)
    assert s.utilization == pytest.approx(c.utilization, rel=0.02)
    metered = [sum(float(x[3]) for x in r.driver.metered if x[1] >= 24) for r in (cohort, single)]
    assert metered[1] == pytest.approx(metered[0], rel=0.05)
    slo = cohort.scenario.ttft_slo_ms / 1000
    assert abs(s.samples.attainment(slo) - c.samples.attainment(slo)) < 0.01
    assert s.samples.quantile(0.95) == pytest.approx(c.samples.quantile(0.95), rel=0.15)
    assert s.samples.quantile(0.98) == pytest.approx(c.samples.quantile(0.98), rel=0.25)


def test_cli_writes_report_plots_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sim", "surge", "--days", "0.5", "--tenants", "12",
                                   "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "capture ratio" in res.output or "cambist" in res.output
    fig = json.loads((out / "figures.json").read_text())
    assert set(fig["policies"]) == {"cambist", "dedicated", "single-supplier", "oracle"}
    for p in fig["policies"].values():
        assert float(p["cost"]) > 0 and p["output_tokens"] > 0
    # Same demand for every policy; the oracle never pays more than holding the
    # single supplier's start placement, and pooling beats dedicated capacity.
    served = {n: p["output_tokens"] for n, p in fig["policies"].items()}
    assert max(served.values()) - min(served.values()) < 0.01 * max(served.values())
    assert float(fig["policies"]["oracle"]["cost"]) <= float(
        fig["policies"]["single-supplier"]["cost"]) + 1e-6
    assert fig["policies"]["cambist"]["utilization"] > fig["policies"]["dedicated"]["utilization"]
    for png in ("cost-per-mtok.png", "hourly-cost.png", "utilization.png", "margins.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Capture ratio" in (out / "report.md").read_text() or fig.get("capture_ratio") is None


async def test_money_reaches_the_journal_and_balances() -> None:
    sc = load_scenario("steady")
    run = await simulate(sc, RunOptions(days=0.5, tenants=6, seed=2))
    fig = run_figures(run)
    for p in fig["policies"].values():
        assert isinstance(p["cost"], str) and len(p["cost"].split(".")[-1]) <= 6
    books = run.books
    assert books.problems == [] and books.entries > 6
    assert books.revenue == pytest.approx(sum(run.revenue.values()), abs=Decimal("0.0001"))
    assert books.compute_cost == pytest.approx(Decimal(repr(run.outcomes["cambist"].cost)),
                                               abs=Decimal("0.001"))
    assert books.tenant_credit > 0  # prepaid credit covers every tenant's charges
