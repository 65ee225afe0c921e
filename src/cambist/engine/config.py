"""The engine's frozen configuration and what it resolves to."""

from __future__ import annotations

from dataclasses import dataclass

from cambist.domain.errors import InvalidRequest, NotFound
from cambist.domain.models import MODEL_CATALOG, ModelSpec, find_model
from cambist.perf import PerfEstimate, PerfModel

__all__ = ["DEFAULT_MAX_BODY_BYTES", "EngineConfig", "ResolvedEngine", "resolve_engine"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What one reference engine serves and how fast its simulated GPU runs."""

    model: str
    """Catalog name or Hugging Face id (``cambist.domain.models``)."""
    sku: str
    """Canonical GPU SKU, e.g. ``H100-80GB-SXM``."""
    gpu_count: int = 1
    served_name: str | None = None
    """Name clients must send as ``model``; defaults to the catalog name."""
    time_scale: float = 1.0
    """Real sleep = modeled duration x ``time_scale`` (0.05 runs the GPU 20x faster)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    attest_key: str | None = None
    """Ed25519 key file for the attested mode (``cambist.engine.attest``); off when None."""
    attest_ttl_s: float = 60.0
    """How long one attestation document claims to stay valid."""


@dataclass(frozen=True, slots=True)
class ResolvedEngine:
    """A config checked against the catalog and the performance model."""

    config: EngineConfig
    model: ModelSpec
    estimate: PerfEstimate
    perf: PerfModel

    @property
    def served_name(self) -> str:
        """The model name the API answers to."""
        return self.config.served_name or self.model.name


def resolve_engine(config: EngineConfig, perf: PerfModel | None = None) -> ResolvedEngine:
    """Look the model up and estimate it on the GPUs.

    Raises ``NotFound`` for an unknown model, ``UnquotableOffer`` for an SKU
    without datasheet figures, and ``InvalidRequest`` for a bad count, time
    scale or body limit, or a model that does not fit.
    """
    if config.gpu_count < 1:
        raise InvalidRequest("gpu_count must be at least 1", param="gpu_count")
    if config.time_scale < 0:
        raise InvalidRequest("time_scale must not be negative", param="time_scale")
    if config.attest_ttl_s <= 0:
        raise InvalidRequest("attest_ttl_s must be positive", param="attest_ttl_s")
    if config.max_body_bytes < 1:
        raise InvalidRequest("max_body_bytes must be positive", param="max_body_bytes")
    model = find_model(config.model)
    if model is None:
        known = ", ".join(sorted(MODEL_CATALOG))
        raise NotFound(f"unknown model {config.model!r}; known models: {known}", param="model")
    perf = perf or PerfModel()
    est = perf.estimate(model, config.sku, config.gpu_count)
    if not est.fits or est.max_batch < 1:
        raise InvalidRequest(
            est.reason or f"{model.name} does not fit on {config.gpu_count}x {config.sku}",
            param="sku",
        )
    return ResolvedEngine(config=config, model=model, estimate=est, perf=perf)
