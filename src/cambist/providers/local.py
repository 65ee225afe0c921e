"""The local supplier: the GPUs of this machine, rented to the exchange itself.

The owner declares the GPU groups (:class:`LocalGpu`) and what each GPU-hour
costs them (power plus amortized hardware). Each group is one offer whose
unit is the whole group; a lease is running at once. Engines are the
reference engine, or a real one (vLLM, SGLang, llama.cpp) from a command
template; both are tracked as processes under ``state_dir``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from cambist.domain.errors import InvalidRequest, OfferUnavailable
from cambist.domain.offer import Offer
from cambist.domain.sku import gpu_specs, normalize_gpu
from cambist.providers.base import EngineHandle, EngineSpec, SupplierLease
from cambist.providers.engine_process import (
    TEMPLATE_FIELDS,
    effective_time_scale,
    launch_command_engine,
    launch_reference_engine,
    render_command,
    stop_engine_process,
)
from cambist.providers.lease_store import LeaseRecord, LeaseStore, lease_id_for

__all__ = ["LocalGpu", "LocalSupplier"]


@dataclass(frozen=True, slots=True)
class LocalGpu:
    """A group of identical GPUs in this machine.

    ``sku`` is a canonical SKU name (``RTX4090-24GB``); ``price_per_gpu_hour``
    is what the owner says one GPU-hour costs them.
    """

    sku: str
    count: int
    price_per_gpu_hour: Decimal


def _memory_gib(sku: str) -> float:
    spec = gpu_specs().get(sku)
    if spec is not None:
        return float(spec.memory_gib)
    m = re.search(r"(\d+)GB", sku, re.I)
    if m is None:
        raise InvalidRequest(
            f"cannot tell the memory of local GPU {sku!r}; use a canonical SKU name such as "
            "'RTX4090-24GB'",
            param="sku",
        )
    return float(m.group(1))


class LocalSupplier:
    """This machine's GPUs, implementing the ``Supplier`` protocol."""

    def __init__(
        self,
        gpus: list[LocalGpu],
        state_dir: Path,
        engine_command: str | None = None,
        jurisdiction: str = "local",
        *,
        name: str = "local",
        offer_ttl_s: float = 60.0,
        health_timeout_s: float = 600.0,
        time_scale: float = 1.0,
        reference_engine_argv: Sequence[str] | None = None,
    ) -> None:
        """``engine_command`` is a template with ``{model} {hf_id} {host} {port}
        {sku} {gpu_count}``; ``None`` runs the reference engine."""
        if not gpus:
            raise InvalidRequest("declare at least one local GPU group", param="gpus")
        if engine_command is not None:
            render_command(engine_command, dict.fromkeys(TEMPLATE_FIELDS, "x"))
        self.name = name
        self.state_dir = Path(state_dir)
        self.engine_command = engine_command
        self.jurisdiction = jurisdiction
        self.offer_ttl_s = offer_ttl_s
        self.health_timeout_s = health_timeout_s
        self.time_scale = time_scale
        self._engine_argv = reference_engine_argv
        self._templates = {o.id: o for o in (self._offer(i, g) for i, g in enumerate(gpus))}
        self._leases = LeaseStore(self.state_dir / "suppliers" / f"{name}.json", name)
        self.unsupported: dict[str, str] = {
            "spot": "local GPUs are the owner's own: nobody preempts them, so there is no spot",
            "term_pricing": "local GPUs have no committed-term prices; the owner sets one price",
        }

    def _offer(self, index: int, gpu: LocalGpu) -> Offer:
        if gpu.count < 1:
            raise InvalidRequest(f"local GPU group {gpu.sku}: count must be >= 1", param="count")
        if isinstance(gpu.price_per_gpu_hour, float):
            raise InvalidRequest(
                f"local GPU group {gpu.sku}: give the price as a Decimal or a string, not a "
                f"float ({gpu.price_per_gpu_hour!r})",
                param="price",
            )
        price = Decimal(gpu.price_per_gpu_hour)
        if price < 0:
            raise InvalidRequest(f"local GPU group {gpu.sku}: price must be >= 0", param="price")
        memory = _memory_gib(gpu.sku)
        sku: str | None
        if gpu.sku in gpu_specs():
            sku, note = gpu.sku, ""
        else:
            match = normalize_gpu(gpu.sku, memory)
            sku, note = match.sku, match.reason
        slug = re.sub(r"[^a-z0-9]+", "-", gpu.sku.lower()).strip("-")
        return Offer(
            id=f"{self.name}:{slug}-{index}",
            supplier=self.name,
            gpu_name=gpu.sku,
            sku=sku,
            gpu_count=gpu.count,
            vram_gib=memory,
            region="local",
            jurisdiction=self.jurisdiction,
            price_per_gpu_hour=price,
            spot=False,
            available=1,
            expires_at=0.0,
            billing_increment_s=1,
            billing_minimum_s=0,
            interconnect="pcie",
            async_provisioning=False,
            sku_note=note,
        )

    async def list_offers(self, now: float) -> list[Offer]:
        """One offer per declared GPU group; ``available`` is 0 while it is leased."""
        held = self._leases.units_held(now)
        return [
            replace(o, available=max(0, 1 - held.get(o.id, 0)), expires_at=now + self.offer_ttl_s)
            for o in self._templates.values()
        ]

    async def lease(self, offer: Offer, now: float, client_token: str) -> SupplierLease:
        """Take a whole GPU group; running at once. Idempotent on ``client_token``."""
        existing = self._leases.by_token(client_token, offer.id)
        if existing is not None:
            return existing.view(now)
        if offer.id not in self._templates:
            raise OfferUnavailable(f"offer {offer.id} does not exist at {self.name}")
        if offer.expires_at <= now:
            raise OfferUnavailable(
                f"offer {offer.id} expired at {offer.expires_at:.3f} (now {now:.3f}); "
                "list offers again for a fresh quote"
            )
        if self._leases.units_held(now).get(offer.id, 0) >= 1:
            raise OfferUnavailable(f"offer {offer.id} at {self.name} is already leased")
        rec = LeaseRecord(
            supplier_lease_id=lease_id_for(self.name, client_token),
            offer_id=offer.id,
            client_token=client_token,
            created_at=now,
            ready_at=now,
        )
        self._leases.add(rec)
        return rec.view(now)

    async def lease_status(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """State of a lease at ``now``; ``NotFound`` if unknown."""
        return self._leases.get(supplier_lease_id).view(now)

    async def release(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """End a lease and free its GPUs; a no-op on an ended lease."""
        return self._leases.release(supplier_lease_id, now).view(now)

    async def launch_engine(self, spec: EngineSpec) -> EngineHandle:
        """Start the configured engine on this machine and return once it serves."""
        if self.engine_command is None:
            scaled = replace(spec, time_scale=effective_time_scale(spec, self.time_scale))
            return await launch_reference_engine(
                scaled, self.state_dir, engine_argv=self._engine_argv, supplier=self.name
            )
        return await launch_command_engine(
            spec, self.engine_command, self.state_dir,
            health_timeout_s=self.health_timeout_s, supplier=self.name,
        )

    async def stop_engine(self, handle: EngineHandle) -> None:
        """Stop an engine (no error if already gone)."""
        await stop_engine_process(handle, self.state_dir)

    async def step(self, now: float) -> None:
        """Nothing moves on its own here: prices are the owner's and capacity
        changes only by leasing, so a step has no dynamics to advance."""
        return None

