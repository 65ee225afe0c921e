"""Every supplier adapter in ``cambist.providers`` is in the default registry."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import cambist.providers
from cambist.providers.base import Supplier
from cambist.providers.registry import build_default_registry

PROTOCOL = {"list_offers", "lease", "lease_status", "release", "launch_engine", "stop_engine",
            "step"}


def _adapter_classes() -> set[type]:
    found = set()
    for mod in pkgutil.iter_modules(cambist.providers.__path__):
        module = importlib.import_module(f"cambist.providers.{mod.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls is not Supplier and cls.__module__ == module.__name__ \
                    and set(dir(cls)) >= PROTOCOL:
                found.add(cls)
    return found


def test_every_adapter_is_registered(tmp_path: Path) -> None:
    adapters = _adapter_classes()
    assert adapters, "no adapter classes found"
    registered = {type(s) for s in build_default_registry(tmp_path).all()}
    assert adapters <= registered, adapters - registered
