"""What one offer unit can serve for each simulated model, from the perf model.

Throughput depends on the request shape, so each model gets a
:class:`~cambist.perf.model.PerfModel` whose reference workload is the
token-weighted mean shape of the traffic calling it (agents' long contexts
and reasoning outputs make their model's units serve fewer tokens each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf.model import PerfModel, Workload
from cambist.sim.demand import Demand

__all__ = ["ModelShape", "UnitCapacity", "model_shapes"]


@dataclass(frozen=True, slots=True)
class UnitCapacity:
    """One offer unit serving one model."""

    tokens_per_s: float
    """Output tokens/s at full batch on the model's traffic shape."""
    max_batch: int
    ttft0_s: float
    """Time to first token of a mean-size prompt on an idle engine."""


@dataclass(slots=True)
class ModelShape:
    """A model's mean request shape and the perf model built on it."""

    model: str
    prompt_tokens: int
    output_tokens: int
    perf: PerfModel
    _cache: dict[tuple[str, int], UnitCapacity | None] = field(default_factory=dict)
    _ttft: dict[tuple[str, float], float] = field(default_factory=dict)
    ttft0_s: float = 0.2
    """A typical idle TTFT: the mean over the units quoted so far (0.2 s before any)."""

    def unit(self, offer: Offer) -> UnitCapacity | None:
        """Capacity of one unit of ``offer`` (``None``: the model does not fit or the
        GPU cannot be quoted)."""
        if offer.sku is None:
            return None
        key = (offer.sku, offer.gpu_count)
        if key not in self._cache:
            try:
                est = self.perf.estimate(MODEL_CATALOG[self.model], offer.sku, offer.gpu_count)
            except UnquotableOffer:
                est = None
            self._cache[key] = None if est is None or not est.fits or \
                est.throughput_tok_s <= 0 else UnitCapacity(
                    est.throughput_tok_s, max(1, est.max_batch), est.ttft_s(self.prompt_tokens))
            got = self._cache[key]
            if got is not None:
                self._ttft[(offer.sku, round(got.tokens_per_s, 6))] = got.ttft0_s
                self.ttft0_s = sum(self._ttft.values()) / len(self._ttft)
        return self._cache[key]

    def ttft_for(self, sku: str | None, tokens_per_s: float) -> float:
        """Idle TTFT of the unit of ``sku`` with this throughput (from the cache)."""
        return self._ttft.get((sku or "", round(tokens_per_s, 6)), self.ttft0_s)


def model_shapes(demand: Demand) -> dict[str, ModelShape]:
    """Model -> its traffic's mean shape (per request) and perf model."""
    out: dict[str, ModelShape] = {}
    for model, idx in demand.by_model().items():
        n = float(demand.requests[idx].sum())
        prompt = float(demand.prompt[idx].sum()) / n if n else 1000.0
        output = float(demand.output[idx].sum()) / n if n else 500.0
        p, o = max(1, round(prompt)), max(1, round(output))
        out[model] = ModelShape(model, p, o, PerfModel(Workload(p, o)))
    return out
