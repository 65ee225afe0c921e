"""The database schema (SQLAlchemy Core). Alembic migrations in ``migrations/``
create and evolve it; this module is their single source of truth.

Money columns are whole micro-dollars (``BigInteger``, suffix ``_micros``);
times are float seconds since the epoch.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "api_keys",
    "deployments",
    "endpoint_attestations",
    "endpoints",
    "events",
    "idempotency",
    "journal_entries",
    "journal_lines",
    "leases",
    "market_bars",
    "market_cursors",
    "metadata",
    "price_versions",
    "prices",
    "replicas",
    "settings",
    "tenants",
    "usage",
]

metadata = MetaData()

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    # Comma-separated privacy tiers its keys may use; NULL: any tier.
    Column("privacy_tiers", String(80), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=True),
    Column("scope", String(32), nullable=False),  # admin | tenant-admin | inference
    Column("name", String(128), nullable=False, default=""),
    Column("prefix", String(32), nullable=False),
    Column("secret_hash", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("privacy_tiers", String(80), nullable=True),  # as tenants.privacy_tiers
    # Spend budget (cambist.ledger.budgets); NULL limit: none. Period: day | month (UTC).
    Column("budget_limit_micros", BigInteger, nullable=True),
    Column("budget_alert_micros", BigInteger, nullable=True),
    Column("budget_period", String(8), nullable=True),
    Column("budget_alerted", String(16), nullable=True),  # the period whose alert was sent
    # The first key of its rotation chain (NULL: itself); budgets count its spend.
    Column("lineage", String(64), nullable=True),
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("memo", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

journal_lines = Table(
    "journal_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("journal_entries.id"), nullable=False, index=True),
    Column("account", String(128), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),  # + debit, - credit
)

price_versions = Table(
    "price_versions",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("effective_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("markup", String(32), nullable=False),
    Column("note", Text, nullable=False, default=""),
)

prices = Table(
    "prices",
    metadata,
    Column("version", Integer, ForeignKey("price_versions.version"), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("tier", String(32), primary_key=True),
    Column("input_micros_per_mtok", BigInteger, nullable=False),
    Column("output_micros_per_mtok", BigInteger, nullable=False),
)

usage = Table(
    "usage",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("key_id", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("endpoint_id", String(64), nullable=True),
    Column("supplier", String(64), nullable=True),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("price_micros", BigInteger, nullable=False),
    Column("compute_cost_micros", BigInteger, nullable=False),
    Column("price_version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("ttft_ms", Float, nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    # The privacy tier the request was served under (metadata, never content);
    # rows from before revision 0008 read "standard".
    Column("privacy_tier", String(32), nullable=False, server_default="standard"),
    # Spend order (revision 0009): micro-dollars of the price paid from the
    # plan's daily allowance and monthly pool; the rest was prepaid credit.
    Column("allowance_micros", BigInteger, nullable=False, server_default="0"),
    Column("pool_micros", BigInteger, nullable=False, server_default="0"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("supplier", String(64), nullable=False),
    Column("supplier_lease_id", String(128), nullable=False),
    Column("offer_id", String(256), nullable=False),
    Column("sku", String(64), nullable=True),
    Column("gpu_name", String(128), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("region", String(128), nullable=False),
    Column("price_per_hour_micros", BigInteger, nullable=False),
    Column("spot", Boolean, nullable=False),
    Column("owner", String(64), nullable=True),  # NULL: platform pool; else tenant id
    Column("state", String(16), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("posted_until", Float, nullable=True),
    Column("billing_increment_s", Integer, nullable=False, default=1),
    Column("billing_minimum_s", Integer, nullable=False, default=60),
    Column("platform_fee_rate", String(16), nullable=False, default="0"),
    Column("client_token", String(128), nullable=True, unique=True),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("replicas", Integer, nullable=False),
    Column("owner", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("max_price_per_mtok_micros", BigInteger, nullable=True),
    Column("client_token", String(128), nullable=True, unique=True),
    # What placement is asked for (deploy.spec.DeploySpec as JSON); NULL: defaults.
    Column("spec_json", Text, nullable=True),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("deployment", String(128), ForeignKey("deployments.name"), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("lease_id", String(64), nullable=True),
    Column("endpoint_id", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(128), nullable=False, index=True),
    Column("url", String(512), nullable=False),
    Column("supplier", String(64), nullable=False),
    Column("owner", String(64), nullable=True),
    Column("healthy", Boolean, nullable=False),
    Column("deployment", String(128), nullable=True),
    Column("lease_id", String(64), nullable=True),
    Column("sku", String(64), nullable=True),
    Column("region", String(128), nullable=False, default=""),
    Column("cost_per_hour_micros", BigInteger, nullable=False, default=0),
    Column("capacity_tok_s", Float, nullable=False, default=0.0),
    Column("max_concurrency", Integer, nullable=False, default=64),
    Column("context_length", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("removed_at", Float, nullable=True),
    # deployment (own, cost from its lease) | external (provider API) | local (any server)
    Column("kind", String(16), nullable=False, server_default="deployment"),
    Column("input_micros_per_mtok", BigInteger, nullable=True),
    Column("output_micros_per_mtok", BigInteger, nullable=True),
    Column("api_key_env", String(128), nullable=True),  # the variable's name, never the key
    Column("quantization", String(16), nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_events_kind_ts", "kind", "ts"),
    Index("ix_events_ts", "ts"),
)

# Price history (cambist.market.history): OHLC + volume per market key and
# interval. region/supplier "*" is the SKU overall; prices per GPU-hour.
market_bars = Table(
    "market_bars",
    metadata,
    Column("interval_s", Integer, primary_key=True, autoincrement=False),  # 60|3600|86400
    Column("sku", String(64), primary_key=True),
    Column("region", String(128), primary_key=True),
    Column("supplier", String(64), primary_key=True),
    Column("start", Float, primary_key=True),
    Column("open_micros", BigInteger, nullable=True),  # NULL: volume but no price seen
    Column("high_micros", BigInteger, nullable=True),
    Column("low_micros", BigInteger, nullable=True),
    Column("close_micros", BigInteger, nullable=True),
    Column("close_at", Float, nullable=True),
    Column("observations", Integer, nullable=False),
    Column("available_gpus", Integer, nullable=False),
    Column("volume_gpu_s", Float, nullable=False),
    Column("trades", Integer, nullable=False),
    Index("ix_market_bars_interval_start", "interval_s", "start"),
)

market_cursors = Table(
    "market_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Float, nullable=False),
)

# Outcomes of idempotent API mutations (cambist.ledger.idempotency): a repeated
# Idempotency-Key returns the stored result instead of acting twice. The
# client's key is stored only as a SHA-256; results never hold a key secret.
idempotency = Table(
    "idempotency",
    metadata,
    Column("scope", String(64), primary_key=True),  # the calling API key's id
    Column("key_hash", String(64), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("result", Text, nullable=False),  # JSON
    Column("created_at", Float, nullable=False, index=True),
)

# Endpoints that claim a trusted execution environment (the confidential tier):
# the evidence format they were registered with and the latest verification.
# An endpoint is confidential only while status is 'verified' and expires_at
# lies ahead; a failed or expired check takes it out of that pool.
endpoint_attestations = Table(
    "endpoint_attestations",
    metadata,
    Column("endpoint_id", String(64), primary_key=True),
    Column("format", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | verified | failed | revoked
    Column("reason", String(200), nullable=True),
    Column("measurement", String(128), nullable=True),
    Column("checked_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),
)
