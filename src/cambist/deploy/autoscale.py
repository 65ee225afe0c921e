"""Autoscaling in capacity: output tokens/s from demand now, SLO pressure and a
diurnal forecast.

An autoscaled deployment is sized in what it serves, not in replicas: its
units differ (one L40S next to eight H100s), so a count sized at the mean
unit and filled with units of any size swings wildly at steady demand. The
policy is pure: :meth:`Autoscaler.decide` turns one :class:`LoadSample`
(output tokens/s demanded, queue depth, TTFT p95) and the capacity held into
a :class:`ScaleDecision`. The capacity needed is the largest of three signals:

* demand now, at ``target_utilization`` (headroom for bursts and for the
  queueing delay that grows as utilization nears 1);
* the forecast: demand pooled over time-of-day buckets (an EWMA per bucket of a
  ``period_s`` day) predicts the peak over the next ``spin_up_s`` plus one
  bucket, so capacity is leased before a daily rise arrives, not after it has
  already broken the SLO;
* SLO pressure: TTFT above the SLO or a queue deeper than ``queue_per_replica``
  per replica asks ``slo_headroom`` more than is held, whatever the
  throughput arithmetic says.

Growing is immediate. Shrinking has hysteresis: only when the capacity held
exceeds, by more than ``shrink_band``, the largest need of the last
``scale_down_delay_s`` and the forecast over the same span ahead; then the
surplus above that level goes. Steady demand thus holds steady capacity.
Which units are leased for a deficit (the cheapest $/Mtok) and which go from
a surplus (the dearest $/Mtok, never inside a billing minimum) is
:mod:`cambist.deploy.sizing`'s arithmetic, applied by
:meth:`DeployController.scale_capacity`; :class:`Autoscaling` is the control
loop that decides and applies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cambist.deploy.records import Records
from cambist.deploy.spec import DeploySpec
from cambist.domain.deployment import LIVE_REPLICA_STATES as LIVE

if TYPE_CHECKING:
    from cambist.deploy.controller import DeployController

__all__ = ["Autoscaler", "Autoscaling", "DiurnalForecast", "LoadSample", "LoadSource",
           "ScaleDecision", "ScalePolicy", "replica_ages"]



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
    """No unit is released within this long of its start, nor within its lease's
    own billing minimum (whichever is longer)."""
    scale_down_delay_s: float = 900.0
    shrink_band: float = 0.25
    """Capacity above the need by at most this fraction is kept (hysteresis)."""
    slo_headroom: float = 0.25
    """SLO pressure asks this much more capacity than is held."""
    period_s: float = 86_400.0
    bucket_s: float = 900.0
    forecast_alpha: float = 0.5
    """EWMA weight of the newest day in each time-of-day bucket."""
    use_forecast: bool = True
    """Off: purely reactive (for comparison)."""


class DiurnalForecast:
    """Demand by time of day: per bucket, the EWMA over days of its mean.

    The mean, not the peak: a day's highest sample in a bucket is often a
    one-off burst (a batch job, a backlog draining) that does not recur at the
    same time the next day, and capacity leased ahead for it is paid for
    idle; the daily rise the forecast is for shows in the mean. (Bursts are
    the reactive signals' job.)"""

    def __init__(self, period_s: float, bucket_s: float, alpha: float) -> None:
        self.period_s, self.bucket_s, self.alpha = period_s, bucket_s, alpha
        self.n = max(1, round(period_s / bucket_s))
        self.level: list[float | None] = [None] * self.n
        self._cur: tuple[int, int] | None = None  # (day, bucket) being filled
        self._sum = 0.0
        self._n = 0

    def _key(self, t: float) -> tuple[int, int]:
        return int(t // self.period_s), int((t % self.period_s) // self.bucket_s) % self.n

    def observe(self, t: float, tokens_per_s: float) -> None:
        """Add a sample; a bucket's mean enters its EWMA when the bucket ends."""
        key = self._key(t)
        if self._cur is not None and key != self._cur:
            self._close()
        if self._cur != key:
            self._cur, self._sum, self._n = key, 0.0, 0
        self._sum += tokens_per_s
        self._n += 1

    def _close(self) -> None:
        assert self._cur is not None
        b = self._cur[1]
        old = self.level[b]
        mean = self._sum / max(self._n, 1)
        self.level[b] = mean if old is None else self.alpha * mean + (1 - self.alpha) * old

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
    """The capacity one deployment should hold, in output tokens/s of full-batch
    serving: at least ``need_tok_s`` (a deficit is leased at once); above
    :attr:`ceiling_tok_s` the surplus goes, down to ``keep_tok_s``, when
    ``shrink``."""

    need_tok_s: float
    keep_tok_s: float
    """The largest need seen over the scale-down delay and forecast for it ahead."""
    shrink: bool
    """Capacity held exceeds :attr:`ceiling_tok_s` and the delay has passed."""
    reason: str
    band: float = 0.0
    forecast_tok_s: float | None = None

    @property
    def ceiling_tok_s(self) -> float:
        """Held capacity up to this is kept (the shrink band above ``keep_tok_s``)."""
        return self.keep_tok_s * (1.0 + self.band)


@dataclass
class Autoscaler:
    """One deployment's scaling state (see the module docstring)."""

    policy: ScalePolicy
    forecast: DiurnalForecast = field(init=False)
    _needs: deque[tuple[float, float]] = field(default_factory=deque, init=False)
    """(t, need) over the last ``scale_down_delay_s``."""
    _first: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        p = self.policy
        self.forecast = DiurnalForecast(p.period_s, p.bucket_s, p.forecast_alpha)

    def _capacity_for(self, tok_s: float) -> float:
        return tok_s / self.policy.target_utilization

    def decide(self, s: LoadSample, have_tok_s: float, replicas: int = 1,
               serving_tok_s: float | None = None) -> ScaleDecision:
        """The capacity to hold now, given ``have_tok_s`` held (serving and coming up)
        over ``replicas`` replicas, ``serving_tok_s`` of it serving now (default:
        all of it)."""
        p = self.policy
        self.forecast.observe(s.t, s.tokens_per_s)
        ahead = self.forecast.peak(s.t, s.t + p.spin_up_s + p.bucket_s) \
            if p.use_forecast else None
        need, why = self._capacity_for(s.tokens_per_s), "demand"
        if ahead is not None and self._capacity_for(ahead) > need:
            need, why = self._capacity_for(ahead), "forecast rise"
        slo_hit = p.ttft_slo_ms is not None and s.ttft_p95_ms is not None \
            and s.ttft_p95_ms > p.ttft_slo_ms
        queued = s.queue_depth > p.queue_per_replica * max(replicas, 1)
        serving = have_tok_s if serving_tok_s is None else serving_tok_s
        if (slo_hit or queued) and need < serving * (1.0 + p.slo_headroom):
            # The throughput arithmetic says enough, the users say otherwise:
            # hold more than serves now, whatever the estimate of a unit. (More
            # than *serves*: units still coming up are the answer to an earlier
            # pressure, and asking again each step while they come would ratchet.)
            need, why = serving * (1.0 + p.slo_headroom), \
                "TTFT over SLO" if slo_hit else "queue"
        if self._first is None:
            self._first = s.t
        self._needs.append((s.t, need))
        while self._needs[0][0] < s.t - p.scale_down_delay_s:
            self._needs.popleft()
        keep = max(n for _, n in self._needs)
        later = self.forecast.peak(s.t, s.t + p.spin_up_s + p.scale_down_delay_s) \
            if p.use_forecast else None
        if later is not None:
            keep = max(keep, self._capacity_for(later))
        if need > have_tok_s + 1e-9:
            return ScaleDecision(need, keep, False, why, p.shrink_band, ahead)
        if have_tok_s <= keep * (1.0 + p.shrink_band) + 1e-9:
            return ScaleDecision(need, keep, False, "steady", p.shrink_band, ahead)
        if s.t - self._first < p.scale_down_delay_s:
            return ScaleDecision(need, keep, False, "waiting before scaling down",
                                 p.shrink_band, ahead)
        return ScaleDecision(need, keep, True, "demand fell", p.shrink_band, ahead)


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
    """Loop: decide and apply the capacity of every autoscaled deployment."""

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
            units = await c.placer.held_units(dep.name, now, self.policy.billing_minimum_s)
            scaler = self.scalers.get(dep.name)
            if scaler is None:
                scaler = self.scalers[dep.name] = Autoscaler(self.policy)
            d = scaler.decide(sample, sum(u.tok_s for u in units), len(units),
                              sum(u.tok_s for u in units if u.serving))
            await c.scale_capacity(dep.name, d, units,
                                   demand_tok_s=round(sample.tokens_per_s, 1))
