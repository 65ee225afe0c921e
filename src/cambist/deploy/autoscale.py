"""Autoscaling: replicas from demand now, SLO pressure and a diurnal forecast.

The policy is pure: :meth:`Autoscaler.decide` turns one :class:`LoadSample`
(output tokens/s demanded, queue depth, TTFT p95) and the replicas' ages into
a replica count. Three signals, the largest wins:

* demand now, at ``target_utilization`` of each replica's capacity (headroom
  for bursts and for the queueing delay that grows as utilization nears 1);
* the forecast: demand pooled over time-of-day buckets (an EWMA per bucket of a
  ``period_s`` day) predicts the peak over the next ``spin_up_s`` plus one
  bucket, so capacity is leased before a daily rise arrives, not after it has
  already broken the SLO;
* SLO pressure: TTFT above the SLO or a queue deeper than ``queue_per_replica``
  adds a replica whatever the throughput arithmetic says.

Scaling down waits until the lower count has been enough for
``scale_down_delay_s`` and the forecast agrees for the same span ahead, and
never releases a replica inside its billing minimum (it is paid for anyway).
:class:`Autoscaling` is the control loop that applies decisions through
:meth:`DeployController.scale`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cambist.deploy.records import Records
from cambist.deploy.spec import DeploySpec
from cambist.domain.deployment import ReplicaState

if TYPE_CHECKING:
    from cambist.deploy.controller import DeployController

__all__ = ["Autoscaler", "Autoscaling", "DiurnalForecast", "LoadSample", "LoadSource",
           "ScaleDecision", "ScalePolicy", "replica_ages"]

LIVE = frozenset({ReplicaState.PENDING, ReplicaState.LEASING, ReplicaState.LAUNCHING,
                  ReplicaState.HEALTHY})


@dataclass(frozen=True, slots=True)
class LoadSample:
    """What a deployment saw over the last interval."""

    t: float
    tokens_per_s: float
    """Output tokens/s demanded (served plus queued)."""
    queue_depth: float = 0.0
    """Requests waiting, over all replicas."""
    ttft_p95_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Autoscaling settings."""

    target_utilization: float = 0.7
    ttft_slo_ms: float | None = None
    queue_per_replica: float = 4.0
    spin_up_s: float = 300.0
    """Lease to routable: how far ahead capacity must be asked for."""
    billing_minimum_s: float = 3600.0
    scale_down_delay_s: float = 900.0
    period_s: float = 86_400.0
    bucket_s: float = 900.0
    forecast_alpha: float = 0.5
    """EWMA weight of the newest day in each time-of-day bucket."""
    use_forecast: bool = True
    """Off: purely reactive (for comparison)."""


class DiurnalForecast:
    """Demand by time of day: per bucket, the EWMA over days of its peak."""

    def __init__(self, period_s: float, bucket_s: float, alpha: float) -> None:
        self.period_s, self.bucket_s, self.alpha = period_s, bucket_s, alpha
        self.n = max(1, round(period_s / bucket_s))
        self.level: list[float | None] = [None] * self.n
        self._cur: tuple[int, int] | None = None  # (day, bucket) being filled
        self._peak = 0.0

    def _key(self, t: float) -> tuple[int, int]:
        return int(t // self.period_s), int((t % self.period_s) // self.bucket_s) % self.n

    def observe(self, t: float, tokens_per_s: float) -> None:
        """Add a sample; a bucket's peak enters its EWMA when the bucket ends."""
        key = self._key(t)
        if self._cur is not None and key != self._cur:
            self._close()
        if self._cur != key:
            self._cur, self._peak = key, 0.0
        self._peak = max(self._peak, tokens_per_s)

    def _close(self) -> None:
        assert self._cur is not None
        b = self._cur[1]
        old = self.level[b]
        self.level[b] = self._peak if old is None else (
            self.alpha * self._peak + (1 - self.alpha) * old)

    def peak(self, start: float, end: float) -> float | None:
        """Highest forecast over ``[start, end]`` (``None`` before a day is seen)."""
        vals = []
        t = start
        while t <= end + 1e-9:
            v = self.level[self._key(t)[1]]
            if v is not None:
                vals.append(v)
            t += self.bucket_s
        v = self.level[self._key(end)[1]]
        if v is not None:
            vals.append(v)
        return max(vals) if vals else None


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    replicas: int
    reason: str
    forecast_tok_s: float | None = None


@dataclass
class Autoscaler:
    """One deployment's scaling state (see the module docstring)."""

    policy: ScalePolicy
    capacity_tok_s: float
    """Output tokens/s one replica serves at full batch."""
    min_replicas: int = 1
    max_replicas: int = 64
    forecast: DiurnalForecast = field(init=False)
    _low_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        p = self.policy
        self.forecast = DiurnalForecast(p.period_s, p.bucket_s, p.forecast_alpha)

    def _needed(self, tok_s: float) -> int:
        per = self.capacity_tok_s * self.policy.target_utilization
        return math.ceil(tok_s / per - 1e-9) if per > 0 else self.max_replicas

    def decide(self, s: LoadSample, current: int, ages_s: Sequence[float]) -> ScaleDecision:
        """The replica count for now; ``ages_s``: how long each replica has been leased."""
        p = self.policy
        self.forecast.observe(s.t, s.tokens_per_s)
        ahead = self.forecast.peak(s.t, s.t + p.spin_up_s + p.bucket_s) \
            if p.use_forecast else None
        want, why = self._needed(s.tokens_per_s), "demand"
        if ahead is not None and self._needed(ahead) > want:
            want, why = self._needed(ahead), "forecast rise"
        slo_hit = p.ttft_slo_ms is not None and s.ttft_p95_ms is not None \
            and s.ttft_p95_ms > p.ttft_slo_ms
        queued = s.queue_depth > p.queue_per_replica * max(current, 1)
        if (slo_hit or queued) and want <= current:
            want, why = current + 1, "TTFT over SLO" if slo_hit else "queue"
        want = min(max(want, self.min_replicas), self.max_replicas)
        if want >= current:
            self._low_since = None
            return ScaleDecision(want, why if want > current else "steady", ahead)
        return self._down(s, current, want, ages_s, ahead)

    def _down(self, s: LoadSample, current: int, want: int, ages_s: Sequence[float],
              ahead: float | None) -> ScaleDecision:
        p = self.policy
        if self._low_since is None:
            self._low_since = s.t
        if s.t - self._low_since < p.scale_down_delay_s:
            return ScaleDecision(current, "waiting before scaling down", ahead)
        later = self.forecast.peak(s.t, s.t + p.spin_up_s + p.scale_down_delay_s) \
            if p.use_forecast else None
        if later is not None:
            want = max(want, min(self._needed(later), current))
        free = sum(1 for a in ages_s if a >= p.billing_minimum_s)
        want = max(want, current - free)
        if want >= current:
            return ScaleDecision(current, "billing minimum or forecast holds", ahead)
        return ScaleDecision(want, "demand fell", ahead)


async def replica_ages(records: Records, name: str, now: float) -> tuple[list[float], float]:
    """Seconds each live replica's lease has run (0 before it starts), and the mean
    output tokens/s a serving replica of ``name`` offers (0 when none serves)."""
    ages, caps = [], []
    eps = {e.id: e for e in await records.endpoints()}
    for r in await records.replicas(name):
        if r.state not in LIVE:
            continue
        lease = await records.lease(r.lease_id) if r.lease_id else None
        started = lease.started_at if lease is not None else None
        ages.append(now - started if started is not None else 0.0)
        ep = eps.get(r.endpoint_id or "")
        if ep is not None and ep.capacity_tok_s:
            caps.append(float(ep.capacity_tok_s))
    return ages, sum(caps) / len(caps) if caps else 0.0


class LoadSource(Protocol):
    """Where the loop reads a deployment's load (engine metrics live, a model in
    the simulator)."""

    async def sample(self, deployment: str, now: float) -> LoadSample | None: ...


class Autoscaling:
    """Loop: decide and apply a replica count for every autoscaled deployment."""

    name = "deploy-autoscale"

    def __init__(self, controller: DeployController, source: LoadSource,
                 policy: ScalePolicy | None = None, interval_s: float = 30.0) -> None:
        self.controller, self.source = controller, source
        self.policy = policy or ScalePolicy()
        self.interval_s = interval_s
        self.scalers: dict[str, Autoscaler] = {}

    async def step(self, now: float) -> None:
        c = self.controller
        for dep in await c.records.deployments():
            if str(dep.state) in ("draining", "stopped"):
                continue
            spec = DeploySpec.from_json(await c.records.deployment_spec(dep.name))
            if not spec.autoscaled:
                continue
            sample = await self.source.sample(dep.name, now)
            if sample is None:
                continue
            ages, capacity = await replica_ages(c.records, dep.name, now)
            scaler = self.scalers.get(dep.name)
            if scaler is None:
                assert spec.max_replicas is not None
                scaler = self.scalers[dep.name] = Autoscaler(
                    self.policy, capacity, spec.min_replicas, spec.max_replicas)
            if capacity > 0:
                scaler.capacity_tok_s = capacity
            d = scaler.decide(sample, dep.replicas, ages)
            if d.replicas != dep.replicas:
                await c.scale(dep.name, d.replicas, d.reason,
                              demand_tok_s=round(sample.tokens_per_s, 1),
                              forecast_tok_s=None if d.forecast_tok_s is None
                              else round(d.forecast_tok_s, 1))
