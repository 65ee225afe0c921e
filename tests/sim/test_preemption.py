"""Preemptions: lost units leave at once, are replaced, and time to restore is reported.

``preemption.yaml`` takes units back at 30% per unit-hour (a unit lives about
three hours) with one spin-up time (300 s) everywhere, so a quarter of a day
after the warm-up sees many losses and every restore waits on a known delay.

The bound on time to restore, stated: the platform notices a loss at the next
minute boundary (<= 60 s) and leases the replacement at once, which serves
``spin_up_s`` later; restores are checked on the minute grid (<= 60 s more).
Each further loss of the same model while one is open, and the policy's hourly
re-placement (which can swap provisioning units for others), can each add one
more such delay, so with ``n`` further losses in its window a restore takes at
most ``(n + 2) * (60 + spin_up_s) + 60`` seconds when no replacement lease is
refused. It can be shorter than ``spin_up_s`` only when units already
provisioning, or surplus units being retired, fill the gap first.
"""

from __future__ import annotations

import copy
import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from cambist.sim.figures import run_figures
from cambist.sim.fleet import Preemption
from cambist.sim.run import START, RunOptions, SimRun, simulate
from cambist.sim.scenario import Scenario, load_scenario

HERE = Path(__file__).parent
SPIN_UP_S = 300.0
_OPTIONS = RunOptions(days=0.25, tenants=4, seed=5, baselines=False)
_runs: dict[str, SimRun] = {}


async def _run(key: str, sc: Scenario) -> SimRun:
    if key not in _runs:  # each scenario runs once per session
        _runs[key] = await simulate(sc, _OPTIONS)
    return _runs[key]


def _zero(sc: Scenario) -> Scenario:
    return dataclasses.replace(sc, market=dataclasses.replace(sc.market, preemption_per_hour=0.0))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Figures equal but for timings (wall/CPU time differ between runs)."""
    drop = {"wall_s", "speedup", "cpu_s", "speedup_cpu", "timings_s"}
    return {k: v for k, v in a.items() if k not in drop} == \
        {k: v for k, v in b.items() if k not in drop}


def _bound(p: Preemption, all_: list[Preemption]) -> float:
    end = p.restored_at if p.restored_at is not None else float("inf")
    later = sum(1 for q in all_ if q is not p and q.model == p.model
                and p.lost_at < q.lost_at < end)
    return (later + 2) * (60.0 + SPIN_UP_S) + 60.0


async def test_lost_units_are_replaced_and_restore_times_are_bounded() -> None:
    sc = load_scenario(str(HERE / "preemption.yaml"))
    run = await _run("high", sc)
    fleet = run.driver.fleet
    recs = fleet.preemptions
    assert len(recs) >= 20  # over the warm-up and the measured window
    units = {u.lease_id: u for u in fleet.units}
    for p in recs:
        lost = units[p.lease_id]
        # It stopped at the loss: out of the fleet, billed to the loss, not beyond.
        assert lost.preempted and lost.end == p.lost_at and lost.billed_end() == p.lost_at
        assert 0 <= p.detected_at - p.lost_at < 60.0
        if not p.planned:
            continue  # it was being retired: its successor was already leased
        # Every lost unit is replaced, at once, through the supplier's lease call;
        # no replacement serves before the supplier's spin-up.
        assert p.replaced_by, p
        for lease_id in p.replaced_by:
            new = units[lease_id]
            assert new.start >= p.detected_at
            assert new.ready - p.lost_at >= SPIN_UP_S
        if p.detected_at + SPIN_UP_S >= run.driver.end:
            continue  # its replacement cannot serve before the run ends
        assert p.restore_s is not None, p
        assert p.restore_s <= _bound(p, recs), p
    restores = sorted(p.restore_s for p in recs if p.planned and p.restore_s is not None)
    assert restores[len(restores) // 2] >= SPIN_UP_S  # the median waits on a spin-up
    assert sum(r >= SPIN_UP_S for r in restores) >= 0.8 * len(restores)

    fig = run_figures(run)["preemptions"]
    measured = [p for p in recs if p.lost_at >= START]
    assert fig["count"] == len(measured) > 0
    assert fig["replaced"] == sum(1 for p in measured if p.planned)
    assert fig["unrestored_at_end"] == sum(
        1 for p in measured if p.planned and p.detected_at + SPIN_UP_S >= run.driver.end)
    t = fig["time_to_restore_s"]
    assert SPIN_UP_S <= t["p50"] <= t["p90"] <= t["max"]


async def test_same_seed_same_preemptions_and_figures() -> None:
    sc = load_scenario(str(HERE / "preemption.yaml"))
    a = await _run("high", sc)
    b = await simulate(sc, _OPTIONS)
    assert [(p.lease_id, p.lost_at, p.restored_at) for p in a.driver.fleet.preemptions] == \
        [(p.lease_id, p.lost_at, p.restored_at) for p in b.driver.fleet.preemptions]
    assert _same(run_figures(a), run_figures(b))


async def test_zero_rate_preempts_nothing_and_changes_nothing(tmp_path: Path) -> None:
    """A zero rate draws nothing: the run is the one a scenario file without the
    preemption keys (written before them) gives, so its figures are unchanged."""
    sc = _zero(load_scenario(str(HERE / "preemption.yaml")))
    raw = yaml.safe_load((HERE / "preemption.yaml").read_text())
    old = copy.deepcopy(raw)
    del old["market"]["preemption_per_hour"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    before = load_scenario(str(tmp_path / "old.yaml"))
    assert before.market.preemption_per_hour == 0.0 and before.version == sc.version
    zero, legacy = await _run("zero", sc), await _run("legacy", before)
    assert zero.driver.fleet.preemptions == [] and not any(
        u.preempted or u.preempt_at is not None for u in zero.driver.fleet.units)
    fz, fl = run_figures(zero), run_figures(legacy)
    assert fz["preemptions"]["count"] == 0 and fz["preemptions"]["time_to_restore_s"]["p50"] \
        is None
    assert _same(fz, fl)
    # Preemptions do change the run (units leave, replacements are leased).
    high = await _run("high", load_scenario(str(HERE / "preemption.yaml")))
    assert len(high.driver.fleet.units) > len(zero.driver.fleet.units)


async def test_money_still_balances_with_preemptions() -> None:
    run = await _run("high", load_scenario(str(HERE / "preemption.yaml")))
    books = run.books
    assert books.problems == [] and books.entries > 4
    assert books.revenue == pytest.approx(sum(run.revenue.values()), abs=Decimal("0.0001"))
    assert books.compute_cost == pytest.approx(Decimal(repr(run.outcomes["cambist"].cost)),
                                               abs=Decimal("0.001"))
    assert books.tenant_credit > 0


def test_rates_load_with_supplier_overrides(tmp_path: Path) -> None:
    surge = load_scenario("surge")
    assert surge.market.preemption_rate("vast") > surge.market.preemption_rate("aws") > 0
    assert load_scenario("steady").market.preemption_per_hour == 0.0
    raw = yaml.safe_load((HERE / "preemption.yaml").read_text())
    raw["market"]["preemption_per_hour"] = 2
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="preemption_per_hour must be a number in"):
        load_scenario(str(tmp_path / "bad.yaml"))
