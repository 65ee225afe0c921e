"""Autoscaling policy in capacity (output tokens/s): unit behaviour, the surplus
arithmetic, and a simulated diurnal load (virtual time, no engines) where the
SLO must hold and leased capacity track demand.

(These tests were rewritten when the autoscaler moved from a replica count to
capacity: what they check, SLO pressure, the scale-down delay, the billing
minimum, the diurnal SLO, is the same; the numbers are now tokens/s.)"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from decimal import Decimal

from cambist.deploy.autoscale import (
    Autoscaler,
    DiurnalForecast,
    LoadSample,
    ScaleDecision,
    ScalePolicy,
)
from cambist.deploy.sizing import HeldUnit, surplus

DAY = 86_400.0
CAP = 5_000.0  # output tok/s per replica
SLO_MS = 1_000.0


def test_forecast_learns_a_daily_bucket_and_looks_ahead() -> None:
    f = DiurnalForecast(DAY, 900, alpha=0.5)
    assert f.peak(0, 3600) is None
    for t in range(0, int(DAY) + 1800, 60):
        f.observe(t, 10_000.0 if 9 * 3600 <= t % DAY < 10 * 3600 else 1_000.0)
    assert f.peak(DAY + 8 * 3600, DAY + 8.5 * 3600) == 1_000.0
    assert f.peak(DAY + 8.5 * 3600, DAY + 9.1 * 3600) == 10_000.0


def test_slo_pressure_adds_headroom_and_scale_down_waits() -> None:
    p = ScalePolicy(ttft_slo_ms=SLO_MS, scale_down_delay_s=600, billing_minimum_s=0,
                    use_forecast=False, target_utilization=0.5, shrink_band=0.25)
    a = Autoscaler(p)
    # Throughput says 2,000 tok/s of capacity is enough, but TTFT is over the SLO:
    # ask slo_headroom more than serves now.
    d = a.decide(LoadSample(0, 1_000, 0, 2_000), 2 * CAP, 2)
    assert d.need_tok_s == 2 * CAP * 1.25 and d.reason == "TTFT over SLO"
    # Pressure is measured on what serves: capacity still coming up is the answer
    # to it, so no more is asked while it comes (no ratchet).
    d = a.decide(LoadSample(30, 1_000, 0, 2_000), 3 * CAP, 3, serving_tok_s=2 * CAP)
    assert d.need_tok_s == 2.5 * CAP and not d.shrink
    # Demand falls: nothing goes while the pressure is inside the delay window...
    assert not a.decide(LoadSample(60, 100, 0, 100), 3 * CAP, 3).shrink
    assert not a.decide(LoadSample(600, 100, 0, 100), 3 * CAP, 3).shrink
    # ...then the surplus above the largest need of the window may go.
    d = a.decide(LoadSample(700, 100, 0, 100), 3 * CAP, 3)
    assert d.shrink and d.keep_tok_s == 200.0


def test_steady_demand_inside_the_shrink_band_holds() -> None:
    p = ScalePolicy(scale_down_delay_s=300, use_forecast=False, target_utilization=0.8,
                    shrink_band=0.25)
    a = Autoscaler(p)
    rng = random.Random(3)
    # 4,000 tok/s +-5% needs 5,000 +-250 of capacity; 6,000 held is within the band.
    for t in range(0, 7200, 60):
        d = a.decide(LoadSample(t, 4_000 * rng.uniform(0.95, 1.05)), 6_000, 3)
        assert d.need_tok_s <= 6_000 and not d.shrink
    # 7,000 is not: the surplus over the largest need of the delay window goes.
    d = a.decide(LoadSample(7200, 4_000), 7_000, 4)
    assert d.shrink and 5_000 <= d.keep_tok_s <= 5_250 + 1e-6


def _unit(uid: str, tok_s: float, per_hour: str, age: float, minimum: float = 600,
          serving: bool = True) -> HeldUnit:
    return HeldUnit(uid, tok_s, Decimal(per_hour), age, minimum, serving)


def test_surplus_goes_dearest_per_token_first_and_never_inside_a_billing_minimum() -> None:
    units = [
        _unit("cheap", 8_000, "16.00", 5_000),      # $0.56/Mtok
        _unit("dear", 1_000, "4.00", 5_000),        # $1.11/Mtok
        _unit("dearest-new", 1_000, "5.00", 100),   # $1.39/Mtok, inside its minimum
        _unit("mid", 2_000, "5.00", 5_000),         # $0.69/Mtok
    ]
    # 12,000 held, keep 9,000: 3,000 may go. The dearest is inside its minimum;
    # then "dear" (1,000) and "mid" (2,000); "cheap" would leave too little.
    assert surplus(units, 9_000) == ["dear", "mid"]
    # Nothing may go below what must be kept, nor below min_units.
    assert surplus(units, 11_500) == []
    assert surplus(units, 0, min_units=3) == ["dear"]


def test_surplus_keeps_a_provisioning_unit_while_a_healthy_one_as_dear_can_go() -> None:
    old = _unit("old", 1_000, "2.00", 4_000)
    new = _unit("new", 1_000, "2.00", 700, serving=False)  # past its minimum, not serving
    assert surplus([new, old], 1_000) == ["old"]
    # A dearer provisioning unit still goes first: it costs more per token.
    dearer = _unit("dearer", 1_000, "3.00", 700, serving=False)
    assert surplus([old, dearer], 1_000) == ["dearer"]


def demand(t: float, rng: random.Random) -> float:
    """Night 2,000 tok/s; a steep rise at 09:00 to 24,000 (10-minute ramp), a lunch
    dip, a fall at 18:00; +-5% noise."""
    h = (t % DAY) / 3600

    def step(x: float) -> float:
        return 1 / (1 + math.exp(-x * 6 / (10 / 60)))  # ~10 minutes from 5% to 95%

    level = 2_000 + 22_000 * step(h - 9) * (1 - step(h - 18)) - 6_000 * step(h - 12.5) * (
        1 - step(h - 13.5))
    return level * rng.uniform(0.95, 1.05)


@dataclass
class Fleet:
    """Units of ``CAP`` tok/s leased at ``t`` serve from ``t + spin_up``; a deficit is
    leased in whole units, a surplus released through :func:`surplus`."""

    spin_up: float
    billing_minimum_s: float
    leased: dict[str, float] = field(default_factory=dict)
    released_ages: list[float] = field(default_factory=list)
    n: int = 0

    def ready(self, t: float) -> int:
        return sum(1 for s in self.leased.values() if t - s >= self.spin_up)

    def held(self, t: float) -> list[HeldUnit]:
        return [HeldUnit(u, CAP, Decimal("8.00"), t - s, self.billing_minimum_s,
                         t - s >= self.spin_up) for u, s in self.leased.items()]

    def apply(self, d: ScaleDecision, t: float) -> None:
        have = len(self.leased) * CAP
        if d.need_tok_s > have:
            for _ in range(math.ceil((d.need_tok_s - have) / CAP - 1e-9)):
                self.n += 1
                self.leased[f"u{self.n}"] = t
        elif d.shrink:
            for u in surplus(self.held(t), d.keep_tok_s):
                self.released_ages.append(t - self.leased.pop(u))


def simulate(policy: ScalePolicy, days: int = 3, dt: float = 60.0) -> dict[str, float]:
    """Run the policy on the diurnal demand; report SLO and utilization after day 1."""
    rng = random.Random(7)
    a = Autoscaler(policy)
    fleet = Fleet(policy.spin_up_s, policy.billing_minimum_s)
    fleet.leased["u0"] = -policy.spin_up_s
    ok = steps = 0
    served = leased_cap = 0.0
    t = 0.0
    while t < days * DAY:
        d = demand(t, rng)
        ready = fleet.ready(t)
        rho = d / (ready * CAP) if ready else math.inf
        ttft = 200.0 / (1 - rho) if rho < 1 else 1e6
        queue = max(0.0, (d - ready * CAP) / 100)
        decision = a.decide(LoadSample(t, d, queue, ttft), len(fleet.leased) * CAP,
                            len(fleet.leased), ready * CAP)
        fleet.apply(decision, t)
        if t >= DAY:
            steps += 1
            ok += ttft <= SLO_MS
            served += d
            leased_cap += len(fleet.leased) * CAP
        t += dt
    return {"slo": ok / steps, "utilization": served / leased_cap,
            "min_release_age": min(fleet.released_ages, default=math.inf),
            "leases": fleet.n}


POLICY = ScalePolicy(target_utilization=0.7, ttft_slo_ms=SLO_MS, spin_up_s=300,
                     billing_minimum_s=3_600, scale_down_delay_s=900)


def test_diurnal_load_holds_the_slo_and_tracks_demand() -> None:
    """Days 2-3 of the simulation, once a day has taught the forecast. Measured:
    SLO met in 100% of minutes; utilization of leased capacity 0.54 (the 30%
    headroom, the hour-long billing minimum after the evening fall and the
    forecast's early leases cost the rest); 27 units leased in three days.
    Purely reactive scaling misses the SLO for 21 minutes over the two
    mornings (99.3%) at utilization 0.55."""
    r = simulate(POLICY)
    assert r["slo"] == 1.0
    assert r["utilization"] >= 0.5
    assert r["min_release_age"] >= POLICY.billing_minimum_s
    # Leases follow the day (the morning rise, the lunch dip), not the +-5% noise.
    assert r["leases"] <= 30
    reactive = simulate(replace(POLICY, use_forecast=False))
    assert reactive["slo"] < 0.997
