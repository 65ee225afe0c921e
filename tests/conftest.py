"""The session-scoped exchange shared by the end-to-end and dashboard tests that
allow it (one `cambist up` per test run, however many directories use it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.exchange_process import ExchangeProcess


@pytest.fixture(scope="session")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeProcess]:
    home: Path = tmp_path_factory.mktemp("cambist") / "home"
    ex = ExchangeProcess(home).start()
    yield ex
    code = ex.stop()
    assert code == 0, ex.output()


@pytest.fixture(scope="session")
def llama8b(exchange: ExchangeProcess) -> str:
    """A ready ``llama-3.1-8b`` deployment on the shared exchange."""
    with exchange.client() as c:
        if c.get("/v1/deployments/e2e-8b").status_code == 404:
            r = exchange.cli("deploy", "llama-3.1-8b", "--name", "e2e-8b", "--timeout", "120")
            assert r.returncode == 0, r.stdout + r.stderr
    return "e2e-8b"
