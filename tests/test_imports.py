"""What each entry point loads: the gateway process and the CLI stay free of the
solver, plotting and simulation stacks (memory and start-up time; bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

SOLVER_AND_PLOTS = ("numpy", "highspy", "matplotlib", "cambist.placement", "cambist.deploy",
                    "cambist.sim.run", "cambist.sim.figures", "cambist.analytics")


def _loaded(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return set(json.loads(out.splitlines()[-1]))


def _among(mods: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == p or m.startswith(p + ".") for p in packages))


def test_gateway_process_does_not_load_the_control_plane() -> None:
    mods = _loaded("import cambist.app.run, cambist.app.workers, cambist.app.exchange")
    assert _among(mods, (*SOLVER_AND_PLOTS, "cambist.web", "cambist.providers")) == []


def test_cli_starts_without_the_server_stack() -> None:
    mods = _loaded("import cambist.cli.main")
    assert _among(mods, (*SOLVER_AND_PLOTS, "sqlalchemy", "alembic", "cambist.gateway")) == []
