"""Supplier adapters: one small adapter per source of GPU supply, behind the
``Supplier`` protocol, and the explicit registry that lists them."""

from cambist.providers.base import (
    EngineHandle,
    EngineSpec,
    Supplier,
    SupplierLease,
    SupplierRegistry,
)
from cambist.providers.catalog import PriceLevel, jurisdiction_of, load_price_levels
from cambist.providers.engine_process import (
    EngineRecord,
    launch_command_engine,
    launch_reference_engine,
    list_engine_records,
    pid_alive,
    stop_engine_process,
)
from cambist.providers.local import LocalGpu, LocalSupplier
from cambist.providers.registry import DEFAULT_LOCAL_GPUS, SIM_SUPPLIERS, build_default_registry
from cambist.providers.sim import SimSupplier
from cambist.providers.sim_profiles import PROFILES, SupplierProfile

__all__ = [
    "DEFAULT_LOCAL_GPUS",
    "PROFILES",
    "SIM_SUPPLIERS",
    "EngineHandle",
    "EngineRecord",
    "EngineSpec",
    "LocalGpu",
    "LocalSupplier",
    "PriceLevel",
    "SimSupplier",
    "Supplier",
    "SupplierLease",
    "SupplierProfile",
    "SupplierRegistry",
    "build_default_registry",
    "jurisdiction_of",
    "launch_command_engine",
    "launch_reference_engine",
    "list_engine_records",
    "load_price_levels",
    "pid_alive",
    "stop_engine_process",
]
