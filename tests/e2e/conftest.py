"""Session-scoped exchange shared by the end-to-end tests that allow it."""

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
