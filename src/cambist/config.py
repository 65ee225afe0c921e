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

from cambist.domain.endpoint import (
    Endpoint,
    external_endpoint_id,
    is_env_var_name,
    normalize_upstream_url,
)
from cambist.domain.errors import InvalidRequest
from cambist.ledger.plans import (
    DEFAULT_PLAN,
    DEFAULT_PLANS,
    Plan,
    PlanBook,
    merge_plans,
    plan_from_table,
)

__all__ = [
    "ConfigError",
    "LocalGpuConfig",
    "Settings",
    "UpstreamConfig",
    "UpstreamModel",
    "load_settings",
]


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the setting."""


@dataclass(frozen=True, slots=True)
class LocalGpuConfig:
    """A GPU group on this machine offered by the ``local`` supplier."""

    sku: str
    count: int
    price_per_gpu_hour: Decimal


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    """One model an external upstream serves, with what it charges per Mtok."""

    name: str
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    quantization: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """An external OpenAI-compatible provider (a ``[[upstreams]]`` table).

    ``api_key_env`` names the environment variable that holds its key; the key
    itself never appears in configuration, the database, logs or responses.
    """

    name: str
    base_url: str
    models: tuple[UpstreamModel, ...]
    api_key_env: str | None = None
    zdr: bool = False
    data_collection: str = "deny"
    supported_parameters: frozenset[str] | None = None
    max_concurrency: int = 64
    context_length: int = 0
    stream_idle_timeout_s: float | None = None
    """Longest gap between two reads of a stream from this upstream (None: the
    gateway's ``stream_idle_timeout_s``)."""

    def endpoints(self, now: float) -> list[Endpoint]:
        """One ``external`` endpoint per model, with stable ids (name + model)."""
        return [
            Endpoint(
                id=external_endpoint_id(self.name, m.name), model=m.name, url=self.base_url,
                supplier=self.name, owner=None, healthy=True, region="",
                max_concurrency=self.max_concurrency, context_length=self.context_length,
                created_at=now, kind="external", input_price_per_mtok=m.input_price_per_mtok,
                output_price_per_mtok=m.output_price_per_mtok, api_key_env=self.api_key_env,
                quantization=m.quantization, zdr=self.zdr,
                data_collection="allow" if self.data_collection == "allow" else "deny",
                supported_parameters=self.supported_parameters,
            )
            for m in self.models
        ]


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
    upstreams: tuple[UpstreamConfig, ...] = ()
    """External OpenAI-compatible providers, upserted as ``external`` endpoints."""
    retry_budget_s: float = 30.0
    """The gateway starts no new upstream attempt this long after a request arrived."""
    plans: tuple[Plan, ...] = DEFAULT_PLANS
    """Rate-limit plans: the shipped ones plus ``[[plans]]`` tables (same name replaces)."""
    tenant_plans: tuple[tuple[str, str], ...] = ()
    """(tenant id, plan name) pairs, from the ``tenant_plans`` table."""
    default_plan: str = DEFAULT_PLAN
    """The plan of every tenant ``tenant_plans`` does not name."""
    allowance_reset_hour: int = 0
    """Hour of the day (0-23, UTC) when plans' daily allowances reset."""
    redis_url: str = ""
    """``redis://...``: rate-limit counters and credit reservations shared by every
    gateway process through Redis (``docs/SCALE.md``); empty keeps them per process."""
    redis_prefix: str = "cambist"
    """Prefix of every Redis key, so several exchanges can share one Redis."""
    limit_slack_fraction: float = 0.02
    """Shared limits: the part of a per-minute limit one process may take before
    Redis confirms it (at least one request); see the bound in ``docs/SCALE.md``."""
    credit_slack: Decimal = Decimal("0.50")
    """Shared credit: dollars one process may reserve per tenant before Redis
    confirms them (one reservation at least); see the bound in ``docs/SCALE.md``."""
    leader_retry_s: float = 1.0
    """On PostgreSQL, how often a follower tries to become the leader."""
    stream_idle_timeout_s: float = 300.0
    """Longest gap between two reads of an upstream stream (reasoning models can
    think for minutes); a ``[[upstreams]]`` entry may set its own."""
    ttft_slo_ms: float = 0.0
    """With a positive value, endpoints whose TTFT p90 misses it rank after every
    endpoint that meets it; 0 turns the SLO off."""

    def plan_book(self) -> PlanBook:
        """Which plan each tenant is on."""
        return PlanBook(self.plans, dict(self.tenant_plans), self.default_plan)

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
    "CAMBIST_RETRY_BUDGET_S": "retry_budget_s",
    "CAMBIST_REDIS_URL": "redis_url",
    "CAMBIST_REDIS_PREFIX": "redis_prefix",
    "CAMBIST_LIMIT_SLACK_FRACTION": "limit_slack_fraction",
    "CAMBIST_CREDIT_SLACK": "credit_slack",
    "CAMBIST_LEADER_RETRY_S": "leader_retry_s",
    "CAMBIST_STREAM_IDLE_TIMEOUT_S": "stream_idle_timeout_s",
    "CAMBIST_TTFT_SLO_MS": "ttft_slo_ms",
    "CAMBIST_ALLOWANCE_RESET_HOUR": "allowance_reset_hour",
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


def _price(item: Any, key: str, default: Any, where: str) -> Decimal:
    raw = item.get(key, default)
    if raw is None:
        raise ConfigError(f"setting 'upstreams': {where} needs {key}")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ConfigError(f"setting 'upstreams': {where}.{key} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"setting 'upstreams': {where}.{key} must be a non-negative amount")
    return value


def _upstream_models(raw: Mapping[str, Any], where: str) -> tuple[UpstreamModel, ...]:
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"setting 'upstreams': {where} needs a non-empty models list")
    out = []
    for m in models:
        item: Mapping[str, Any] = {"name": m} if isinstance(m, str) else m
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(f"setting 'upstreams': each of {where}.models is a name or "
                              "a table with a name")
        at = f"{where}.models.{item['name']}"
        quant = item.get("quantization", raw.get("quantization"))
        out.append(UpstreamModel(
            item["name"],
            _price(item, "input_price_per_mtok", raw.get("input_price_per_mtok"), at),
            _price(item, "output_price_per_mtok", raw.get("output_price_per_mtok"), at),
            str(quant) if quant is not None else None))
    return tuple(out)


def _positive_or_none(raw: Any, where: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        raise ConfigError(f"setting 'upstreams': {where}.stream_idle_timeout_s must be a "
                          "positive number of seconds")
    return float(raw)


def _upstreams(raw: Any) -> tuple[UpstreamConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("setting 'upstreams': use [[upstreams]] tables")
    out = []
    for i, item in enumerate(raw):
        where = f"upstreams[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("base_url"), str):
            raise ConfigError(f"setting 'upstreams': {where} needs name and base_url")
        key_env = item.get("api_key_env")
        if key_env is not None and not (isinstance(key_env, str) and is_env_var_name(key_env)):
            raise ConfigError(f"setting 'upstreams': {where}.api_key_env must name an "
                              "environment variable (the key itself never goes in config)")
        params = item.get("supported_parameters")
        policy = item.get("data_collection", "deny")
        if policy not in ("allow", "deny"):
            raise ConfigError(f"setting 'upstreams': {where}.data_collection is allow or deny")
        models = _upstream_models(item, where)
        try:
            base_url = normalize_upstream_url(item["base_url"])
        except InvalidRequest as exc:
            raise ConfigError(f"setting 'upstreams': {where}.base_url: {exc.message}") from None
        try:
            out.append(UpstreamConfig(
                name=item["name"], base_url=base_url,
                models=models, api_key_env=key_env,
                zdr=bool(item.get("zdr", False)), data_collection=policy,
                supported_parameters=frozenset(map(str, params)) if params is not None else None,
                max_concurrency=int(item.get("max_concurrency", 64)),
                context_length=int(item.get("context_length", 0)),
                stream_idle_timeout_s=_positive_or_none(item.get("stream_idle_timeout_s"),
                                                        where)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting 'upstreams': {where} ({exc})") from None
    names = [u.name for u in out]
    if len(set(names)) != len(names):
        raise ConfigError("setting 'upstreams': names must be unique")
    return tuple(out)


def _plans(raw: Any) -> tuple[Plan, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise ConfigError("setting 'plans': use [[plans]] tables")
    try:
        return merge_plans(plan_from_table(t) for t in raw)
    except ValueError as exc:
        raise ConfigError(f"setting 'plans': {exc}") from None


def _tenant_plans(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError('setting \'tenant_plans\': use a table, tenant_plans = '
                          '{ten_acme = "max"}')
    return tuple((str(k), v) for k, v in raw.items())


def _check_scale(s: Settings) -> None:
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("setting 'redis_url': use redis://HOST:PORT/DB (or rediss://, unix://)")
    if not 0 < s.limit_slack_fraction <= 1:
        raise ConfigError("setting 'limit_slack_fraction': a fraction in (0, 1]")
    if not s.credit_slack.is_finite() or s.credit_slack < 0:
        raise ConfigError("setting 'credit_slack': a non-negative amount of dollars")
    if not s.leader_retry_s > 0:
        raise ConfigError("setting 'leader_retry_s': a positive number of seconds")
    if not s.stream_idle_timeout_s > 0:
        raise ConfigError("setting 'stream_idle_timeout_s': a positive number of seconds")
    if s.ttft_slo_ms < 0:
        raise ConfigError("setting 'ttft_slo_ms': milliseconds, 0 to turn it off")
    if not 0 <= s.allowance_reset_hour <= 23:
        raise ConfigError("setting 'allowance_reset_hour': an hour of the day, 0-23 (UTC)")
    if not s.redis_prefix or any(c.isspace() for c in s.redis_prefix):
        raise ConfigError("setting 'redis_prefix': a non-empty word")


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
        elif name == "upstreams":
            changes[name] = _upstreams(value)
        elif name == "plans":
            changes[name] = _plans(value)
        elif name == "tenant_plans":
            changes[name] = _tenant_plans(value)
        else:
            changes[name] = _coerce(name, value, getattr(s, name))
    out = replace(s, **changes)
    _check_scale(out)
    try:
        out.plan_book()
    except ValueError as exc:
        raise ConfigError(f"setting 'tenant_plans'/'default_plan': {exc}") from None
    return out
