"""The one configuration object: parsed once (file, then environment), frozen,
passed in. Only the app assembly and the CLI read it.

Sources, later wins: defaults, ``$CAMBIST_HOME/config.toml``, ``CAMBIST_*``
environment variables, explicit overrides (CLI flags).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "LocalGpuConfig", "Settings", "load_settings"]


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the setting."""


@dataclass(frozen=True, slots=True)
class LocalGpuConfig:
    """A GPU group on this machine offered by the ``local`` supplier."""

    sku: str
    count: int
    price_per_gpu_hour: Decimal


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with defaults for the embedded mode."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = ""
    seed: int = 7
    markup: Decimal = Decimal("0.30")
    """Price list = expected compute cost per Mtok x (1 + markup)."""
    platform_fee_rate: Decimal = Decimal("0.05")
    """Charged on top of a lease's price when a tenant rents capacity."""
    demo_credit: Decimal = Decimal("25")
    engine_time_scale: float = 1.0
    provision_delay_s: float = 2.0
    spot_preemption_per_hour: float = 0.02
    lease_period_s: float = 3600.0
    """Lease cost is posted at state changes and at every period close."""
    market_interval_s: float = 5.0
    health_interval_s: float = 1.0
    reconcile_interval_s: float = 0.5
    local_gpus: tuple[LocalGpuConfig, ...] = field(
        default=(LocalGpuConfig("RTX4090-24GB", 1, Decimal("0.35")),)
    )
    local_engine_command: str | None = None
    log_level: str = "info"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'cambist.db'}"

    @property
    def connection_file(self) -> Path:
        return self.home / "connection.json"


_ENV_KEYS = {
    "CAMBIST_HOST": "host",
    "CAMBIST_PORT": "port",
    "CAMBIST_DATABASE_URL": "database_url",
    "CAMBIST_SEED": "seed",
    "CAMBIST_MARKUP": "markup",
    "CAMBIST_PLATFORM_FEE_RATE": "platform_fee_rate",
    "CAMBIST_DEMO_CREDIT": "demo_credit",
    "CAMBIST_ENGINE_TIME_SCALE": "engine_time_scale",
    "CAMBIST_PROVISION_DELAY_S": "provision_delay_s",
    "CAMBIST_SPOT_PREEMPTION_PER_HOUR": "spot_preemption_per_hour",
    "CAMBIST_LEASE_PERIOD_S": "lease_period_s",
    "CAMBIST_MARKET_INTERVAL_S": "market_interval_s",
    "CAMBIST_HEALTH_INTERVAL_S": "health_interval_s",
    "CAMBIST_LOCAL_ENGINE_COMMAND": "local_engine_command",
    "CAMBIST_LOG_LEVEL": "log_level",
}


def _coerce(name: str, value: Any, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            return str(value).lower() in ("1", "true", "yes")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, Decimal):
            return Decimal(str(value))
    except (ValueError, InvalidOperation) as exc:
        raise ConfigError(f"setting {name!r}: cannot read {value!r} ({exc})") from None
    return value if value is None else str(value)


def _local_gpus(raw: Any) -> tuple[LocalGpuConfig, ...]:
    out = []
    for item in raw:
        try:
            out.append(LocalGpuConfig(str(item["sku"]), int(item.get("count", 1)),
                                      Decimal(str(item.get("price_per_gpu_hour", "0")))))
        except (KeyError, ValueError, InvalidOperation, TypeError) as exc:
            raise ConfigError(
                f"setting 'local_gpus': each entry needs sku, count and price_per_gpu_hour ({exc})"
            ) from None
    return tuple(out)


def load_settings(
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the frozen settings from defaults, config file, environment, overrides."""
    env = os.environ if environ is None else environ
    home = home or Path(env.get("CAMBIST_HOME") or Path.home() / ".cambist")
    s = Settings(home=Path(home).expanduser().resolve())
    values: dict[str, Any] = {}
    cfg = s.home / "config.toml"
    if cfg.exists():
        try:
            values.update(tomllib.loads(cfg.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg}: not valid TOML ({exc})") from None
    for key, attr in _ENV_KEYS.items():
        if key in env:
            values[attr] = env[key]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known or name == "home":
            raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
        if name == "local_gpus":
            changes[name] = _local_gpus(value)
        else:
            changes[name] = _coerce(name, value, getattr(s, name))
    return replace(s, **changes)
