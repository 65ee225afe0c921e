"""Shared fixtures of the provider tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture
def fake_engine_argv() -> list[str]:
    """argv prefix that runs the fake engine instead of ``python -m cambist.engine``."""
    return [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]
