"""The explicit registry of supplier adapters an exchange starts with."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from cambist.providers.base import SupplierRegistry
from cambist.providers.local import LocalGpu, LocalSupplier
from cambist.providers.sim import SimSupplier

__all__ = ["DEFAULT_LOCAL_GPUS", "SIM_SUPPLIERS", "build_default_registry"]

SIM_SUPPLIERS: tuple[str, ...] = (
    "aws", "gcp", "lambda", "nebius", "runpod", "vast", "verda", "shadeform", "hyperbolic",
)
"""Every supplier of the shipped price catalog, each simulated by a ``SimSupplier``."""

DEFAULT_LOCAL_GPUS: tuple[LocalGpu, ...] = (
    # One consumer card at the owner's amortized cost: about $1,800 of hardware
    # written off over one year (~$0.21/h) plus ~450 W for card and host at
    # $0.30/kWh (~$0.14/h).
    LocalGpu("RTX4090-24GB", 1, Decimal("0.35")),
)


def build_default_registry(
    state_dir: Path,
    *,
    seed: int = 7,
    provision_delay_s: float = 2.0,
    spot_preemption_per_hour: float = 0.02,
    time_scale: float = 1.0,
    local_gpus: list[LocalGpu] | None = None,
    local_engine_command: str | None = None,
    reference_engine_argv: Sequence[str] | None = None,
) -> SupplierRegistry:
    """Every simulated supplier plus the local one, sharing ``state_dir``.

    ``local_gpus`` defaults to :data:`DEFAULT_LOCAL_GPUS`; ``time_scale`` is
    the reference engines' time scale unless an ``EngineSpec`` sets its own;
    ``reference_engine_argv`` replaces ``python -m cambist.engine`` (tests).
    """
    registry = SupplierRegistry()
    for name in SIM_SUPPLIERS:
        registry.register(
            SimSupplier(
                name,
                state_dir,
                seed=seed,
                provision_delay_s=provision_delay_s,
                spot_preemption_per_hour=spot_preemption_per_hour,
                time_scale=time_scale,
                reference_engine_argv=reference_engine_argv,
            )
        )
    registry.register(
        LocalSupplier(
            list(local_gpus) if local_gpus is not None else list(DEFAULT_LOCAL_GPUS),
            state_dir,
            local_engine_command,
            time_scale=time_scale,
            reference_engine_argv=reference_engine_argv,
        )
    )
    return registry
