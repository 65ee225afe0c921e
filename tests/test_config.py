"""Settings: file, environment and overrides, and clear errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cambist.config import ConfigError, load_settings


def test_layers_of_configuration(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('markup = "0.5"\nport = 9000\n'
                                          '[[local_gpus]]\nsku = "L4-24GB"\ncount = 2\n'
                                          'price_per_gpu_hour = "0.2"\n')
    s = load_settings(home=tmp_path, environ={"CAMBIST_PORT": "9100"},
                      overrides={"seed": 3})
    assert s.markup == Decimal("0.5") and s.port == 9100 and s.seed == 3
    assert s.local_gpus[0].count == 2
    assert s.db_url.endswith("cambist.db")


def test_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(home=tmp_path, environ={"CAMBIST_PORT": "eighty"})
    (tmp_path / "config.toml").write_text("markupp = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'markupp'"):
        load_settings(home=tmp_path, environ={})
