"""The layer direction of DESIGN.md, enforced on every import in src/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cambist"

# layer -> the cambist layers it may import (besides itself). Mirrors the
# "talks to" column of DESIGN.md; deploy also persists its own state in store.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "store": set(),
    "providers": {"domain"},
    "perf": {"domain"},
    "market": {"domain", "store"},
    "placement": {"domain", "perf", "market"},
    "engine": {"domain", "perf"},
    "ledger": {"domain", "store"},
    "gateway": {"domain", "ledger", "market", "store"},
    "analytics": {"domain", "store"},
    "deploy": {"domain", "providers", "placement", "market", "ledger", "store", "perf"},
    "testing": {"domain"},
}
TOP = {"sim", "cli", "web", "api", "app", "config"}  # may import anything below them
NOBODY_IMPORTS = {"cli", "web", "app"}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m == "cambist" or m.startswith("cambist.")]


FILES = sorted(p for p in SRC.rglob("*.py") if _layer(p) not in ("__init__", "__main__"))


def test_every_layer_is_classified() -> None:
    layers = {_layer(p) for p in FILES}
    assert layers <= set(ALLOWED) | TOP, layers - set(ALLOWED) - TOP


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_layer_direction(path: Path) -> None:
    layer = _layer(path)
    bad = []
    for mod in _imports(path):
        parts = mod.split(".")
        if len(parts) < 2:
            continue
        target = parts[1]
        if target == layer:
            continue
        if target in NOBODY_IMPORTS and layer not in ("app", "cli"):
            bad.append(mod)
        elif layer in TOP:
            continue
        elif target not in ALLOWED.get(layer, set()):
            bad.append(mod)
    assert not bad, f"{layer} may not import {bad} (see DESIGN.md layers)"
