"""Every ``cambist`` command the README shows runs against a real exchange.

Commands are taken from the README's ``bash`` blocks. Placeholders (``<...>``)
are filled with real ids of the shared exchange; commands that change what
other tests rely on (deploying more replicas, undeploying, releasing) run on
resources created here for the purpose.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    """The ``cambist ...`` lines of the README's bash blocks, comments removed."""
    out, in_bash = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        text = line.split("  #")[0].strip()
        if in_bash and text.startswith("cambist ") and not text.startswith("cambist up"):
            out.append(text)
    return out


def test_readme_lists_commands() -> None:
    cmds = readme_commands()
    assert len(cmds) >= 15
    assert any(c.startswith("cambist deploy") for c in cmds)


def test_every_readme_command_runs(exchange: ExchangeProcess, llama8b: str) -> None:
    conn = exchange.connection
    values = {"demo tenant id": conn["demo_tenant"], "tenant id": conn["demo_tenant"],
              "id": conn["demo_tenant"]}
    failures = []
    for cmd in readme_commands():
        if "<key id>" in cmd:
            made = exchange.cli("keys", "create", "--tenant", conn["demo_tenant"], "--json")
            assert made.returncode == 0, made.stderr
            values["key id"] = json.loads(made.stdout)["id"]
        if "<lease>" in cmd:
            leases = json.loads(exchange.cli("leases", "--json", "--active").stdout)["data"]
            tenant_leases = [x for x in leases if x["owner"] == conn["demo_tenant"]]
            if not tenant_leases:
                continue  # the rent line above found no capacity; nothing to release
            values["lease"] = tenant_leases[0]["id"]
        if "<name>" in cmd:
            values["name"] = "readme-8b"
        if cmd.split()[1] == "deploy":
            cmd += " --name readme-8b"
        args = shlex.split(re.sub(r"<([^>]+)>", lambda m: values[m.group(1)], cmd))[1:]
        r = exchange.cli(*args, timeout=180)
        if r.returncode != 0 or "Traceback" in r.stderr:
            failures.append(f"{cmd}: {r.stderr.strip()[-300:]}")
    assert not failures, "\n".join(failures)
