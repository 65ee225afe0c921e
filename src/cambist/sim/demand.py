"""Demand generators: tenants and their traffic, one cohort per tenant per minute.

Three kinds of tenant, drawn from the scenario's mix:

- **chat**: a diurnal rate (peak mid-afternoon in the tenant's own time zone,
  quieter weekends) with Poisson arrivals;
- **batch**: bursty jobs arriving at random, each sending at a high rate for a
  few hours and nothing in between;
- **agent**: sessions running long tool loops (each step a request whose
  prompt grows with the context) whose hidden reasoning is 10-100x the
  visible output.

A :class:`Demand` holds per-tenant, per-minute arrays (requests, prompt,
visible output and reasoning tokens). They are generated with numpy from a
seeded generator, so a (scenario, seed, tenants, days) names one demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cambist.sim.scenario import DemandSpec, Scenario

__all__ = ["Demand", "Tenant", "generate_demand"]

F32 = npt.NDArray[np.float32]
_MIN_PER_DAY = 1440
_AGENT_STEP_S = 30.0
"""A tool step (model call plus tool run) takes about this long."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """One simulated tenant."""

    id: str
    kind: str
    model: str
    mean_rps: float
    reasoning_multiplier: float


@dataclass(slots=True)
class Demand:
    """Per-minute cohorts: arrays of shape ``(tenants, minutes)``."""

    tenants: list[Tenant]
    requests: F32
    prompt: F32
    visible: F32
    reasoning: F32

    @property
    def minutes(self) -> int:
        return int(self.requests.shape[1])

    @property
    def output(self) -> F32:
        """Output tokens the GPUs generate: visible plus hidden reasoning."""
        out: F32 = self.visible + self.reasoning
        return out

    def by_model(self) -> dict[str, list[int]]:
        """Model -> indices of the tenants calling it."""
        out: dict[str, list[int]] = {}
        for i, t in enumerate(self.tenants):
            out.setdefault(t.model, []).append(i)
        return out

    def slice(self, tenants: list[int], start: int, end: int) -> Demand:
        """Some tenants over minutes ``[start, end)`` (arrays copied)."""
        return Demand([self.tenants[i] for i in tenants],
                      self.requests[tenants, start:end].copy(),
                      self.prompt[tenants, start:end].copy(),
                      self.visible[tenants, start:end].copy(),
                      self.reasoning[tenants, start:end].copy())


def _counts(n_tenants: int, mix: tuple[DemandSpec, ...]) -> list[int]:
    """Tenants per kind by largest remainder, so the shares add up to ``n_tenants``."""
    total = sum(d.share for d in mix)
    exact = [d.share / total * n_tenants for d in mix]
    counts = [int(x) for x in exact]
    order = sorted(range(len(mix)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: n_tenants - sum(counts)]:
        counts[i] += 1
    return counts


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else pair[0]


def _log_uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    if pair[0] <= 0 or pair[1] <= pair[0]:
        return pair[1] if pair[0] <= 0 else pair[0]
    return float(np.exp(rng.uniform(np.log(pair[0]), np.log(pair[1]))))


def _diurnal(minutes: int, amplitude: float, tz_hours: float) -> npt.NDArray[np.float64]:
    """Rate multiplier by minute: peak at 14:00 local, weekends at 70%."""
    t = np.arange(minutes, dtype=np.float64)
    hour = (t / 60.0 + tz_hours) % 24.0
    day = np.floor((t / 60.0 + tz_hours) / 24.0) % 7
    shape = 1.0 + amplitude * np.cos(2 * np.pi * (hour - 14.0) / 24.0)
    out: npt.NDArray[np.float64] = shape * np.where(day >= 5, 0.7, 1.0)
    return out


def _batch_rate(rng: np.random.Generator, minutes: int, spec: DemandSpec, rps: float) \
        -> npt.NDArray[np.float64]:
    rate = np.zeros(minutes, dtype=np.float64)
    jobs = rng.poisson(spec.jobs_per_day * minutes / _MIN_PER_DAY)
    for _ in range(int(jobs)):
        start = int(rng.integers(0, minutes))
        length = int(_uniform(rng, spec.job_hours) * 60)
        rate[start:start + max(length, 1)] += rps * 60.0
    return rate


def _tokens(rng: np.random.Generator, n: npt.NDArray[np.int64], mean: float, cv: float) -> F32:
    """Tokens of ``n`` requests of mean size ``mean``: the sum's spread shrinks as 1/sqrt(n)."""
    sigma = cv / np.sqrt(np.maximum(n, 1))
    noise = np.exp(rng.normal(0.0, 1.0, n.shape) * sigma - sigma * sigma / 2)
    out: F32 = (n * mean * noise).astype(np.float32)
    return out


def _tenant(rng: np.random.Generator, spec: DemandSpec, i: int, minutes: int) \
        -> tuple[Tenant, tuple[F32, F32, F32, F32]]:
    rps = _log_uniform(rng, spec.rps)
    tz = float(rng.choice([-8.0, -5.0, 0.0, 1.0, 8.0, 9.0]))
    mult = 0.0
    prompt_mean = float(spec.prompt_tokens)
    if spec.kind == "chat":
        rate = rps * 60.0 * _diurnal(minutes, spec.diurnal_amplitude, tz)
    elif spec.kind == "batch":
        rate = _batch_rate(rng, minutes, spec, rps)
    else:
        steps = _uniform(rng, (float(spec.tool_steps[0]), float(spec.tool_steps[1])))
        mult = _log_uniform(rng, spec.reasoning_multiplier)
        # Sessions start at rps/steps per second and run `steps` requests one
        # tool step apart, so the requests of a session spread over minutes.
        starts = rng.poisson(rps / steps * 60.0 * _diurnal(minutes, spec.diurnal_amplitude, tz))
        span = max(1, round(steps * _AGENT_STEP_S / 60.0))
        rate = np.convolve(starts.astype(np.float64), np.full(span, steps / span))[:minutes]
        prompt_mean += spec.context_growth * steps / 2.0
    n = rng.poisson(np.maximum(rate, 0.0)).astype(np.int64)
    prompt = _tokens(rng, n, prompt_mean, 0.5)
    visible = _tokens(rng, n, float(spec.output_tokens), 0.6)
    reasoning = (visible * np.float32(mult)).astype(np.float32)
    tenant = Tenant(f"t{i:03d}-{spec.kind}", spec.kind, spec.model, rps, mult)
    return tenant, (n.astype(np.float32), prompt, visible, reasoning)


def generate_demand(scenario: Scenario, tenants: int, days: float, seed: int) -> Demand:
    """Generate every tenant's per-minute cohorts for ``days`` days."""
    minutes = max(1, round(days * 24)) * 60  # whole hours: the market steps hourly
    rng = np.random.default_rng([seed, 1])
    out: list[Tenant] = []
    arrays: list[tuple[F32, F32, F32, F32]] = []
    for spec, count in zip(scenario.mix, _counts(tenants, scenario.mix), strict=True):
        for _ in range(count):
            t, a = _tenant(rng, spec, len(out), minutes)
            out.append(t)
            arrays.append(a)
    stack = [np.stack([a[k] for a in arrays]) for k in range(4)]
    return Demand(out, stack[0], stack[1], stack[2], stack[3])
