"""Autoscaling policy: unit behaviour, and a simulated diurnal load (virtual time,
no engines) where the SLO must hold and leased capacity track demand."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from cambist.deploy.autoscale import Autoscaler, DiurnalForecast, LoadSample, ScalePolicy

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


def test_slo_pressure_adds_a_replica_and_scale_down_waits() -> None:
    p = ScalePolicy(ttft_slo_ms=SLO_MS, scale_down_delay_s=600, billing_minimum_s=0,
                    use_forecast=False)
    a = Autoscaler(p, CAP, min_replicas=1, max_replicas=10)
    # Throughput says 1 replica is enough, but TTFT is over the SLO.
    assert a.decide(LoadSample(0, 1_000, 0, 2_000), 2, [10, 10]).replicas == 3
    # Demand falls: nothing happens for the delay, then it scales down.
    assert a.decide(LoadSample(60, 100, 0, 100), 3, [60] * 3).replicas == 3
    assert a.decide(LoadSample(600, 100, 0, 100), 3, [600] * 3).replicas == 3
    assert a.decide(LoadSample(700, 100, 0, 100), 3, [700] * 3).replicas == 1


def test_billing_minimum_keeps_paid_replicas() -> None:
    p = ScalePolicy(scale_down_delay_s=0, billing_minimum_s=3_600, use_forecast=False)
    a = Autoscaler(p, CAP, max_replicas=10)
    # Four replicas, demand for one: only the two past their hour may go.
    d = a.decide(LoadSample(0, 100), 4, [4_000, 3_700, 1_000, 10])
    assert d.replicas == 2


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
    """Replicas leased at ``t`` serve from ``t + spin_up``; released ones go at once."""

    spin_up: float
    leased: list[float] = field(default_factory=list)
    released_ages: list[float] = field(default_factory=list)

    def ready(self, t: float) -> int:
        return sum(1 for s in self.leased if t - s >= self.spin_up)

    def apply(self, want: int, t: float) -> None:
        while len(self.leased) < want:
            self.leased.append(t)
        while len(self.leased) > want:
            oldest = min(self.leased)
            self.leased.remove(oldest)
            self.released_ages.append(t - oldest)


def simulate(policy: ScalePolicy, days: int = 3, dt: float = 60.0) -> dict[str, float]:
    """Run the policy on the diurnal demand; report SLO and utilization after day 1."""
    rng = random.Random(7)
    a = Autoscaler(policy, CAP, min_replicas=1, max_replicas=20)
    fleet = Fleet(policy.spin_up_s)
    fleet.apply(1, -policy.spin_up_s)
    ok = steps = 0
    served = leased_cap = 0.0
    t = 0.0
    while t < days * DAY:
        d = demand(t, rng)
        ready = fleet.ready(t)
        rho = d / (ready * CAP) if ready else math.inf
        ttft = 200.0 / (1 - rho) if rho < 1 else 1e6
        queue = max(0.0, (d - ready * CAP) / 100)
        decision = a.decide(LoadSample(t, d, queue, ttft), len(fleet.leased),
                            [t - s for s in fleet.leased])
        fleet.apply(decision.replicas, t)
        if t >= DAY:
            steps += 1
            ok += ttft <= SLO_MS
            served += d
            leased_cap += len(fleet.leased) * CAP
        t += dt
    return {"slo": ok / steps, "utilization": served / leased_cap,
            "min_release_age": min(fleet.released_ages, default=math.inf)}


POLICY = ScalePolicy(target_utilization=0.7, ttft_slo_ms=SLO_MS, spin_up_s=300,
                     billing_minimum_s=3_600, scale_down_delay_s=900)


def test_diurnal_load_holds_the_slo_and_tracks_demand() -> None:
    """Days 2-3 of the simulation, once a day has taught the forecast. Measured:
    SLO met in 100% of minutes; utilization of leased capacity 0.53 (the 30%
    headroom, the hour-long billing minimum after the evening fall and the
    forecast's early leases cost the rest). Purely reactive scaling misses the
    SLO for 16 minutes over the two mornings (99.4%) at utilization 0.55."""
    r = simulate(POLICY)
    assert r["slo"] == 1.0
    assert r["utilization"] >= 0.5
    assert r["min_release_age"] >= POLICY.billing_minimum_s
    reactive = simulate(replace(POLICY, use_forecast=False))
    assert reactive["slo"] < 0.997
