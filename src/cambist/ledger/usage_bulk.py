"""Writing a batch of usage records with their journal entries in bulk.

The flusher's batch (thousands of records) is written with three statements
whatever its size, inside the caller's transaction:

1. the ``usage`` rows, ``ON CONFLICT (request_id) DO NOTHING``, returning the
   request ids actually inserted (the unique key de-duplicates, so a batch
   read again after a crash inserts nothing twice);
2. one ``journal_entries`` row per newly inserted, non-zero-price record
   (kind ``usage``, key ``usage:{request_id}``), ``ON CONFLICT DO NOTHING``,
   returning the new ids;
3. their ``journal_lines``: credit ``platform:revenue:inference`` the price
   rounded once to micro-dollars, and debit it in spend order: the record's
   ``allowance_micros`` to ``platform:grants:allowance``, its ``pool_micros``
   to ``platform:grants:pool``, the rest to ``tenant:{id}`` (zero parts get no
   line, so a prepaid-only charge has the same two lines as ever).

On PostgreSQL the first two send one array per column, expanded with
``unnest`` on the server, and the lines go by binary ``COPY`` (no per-row SQL
compilation in Python). Elsewhere (SQLite) it goes through
SQLAlchemy's multi-row ``INSERT`` and :meth:`Journal.post_in`. Both write the
same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cambist.domain.money import from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger._sql import insert_ignore
from cambist.ledger.accounts import (
    GRANTS_ALLOWANCE,
    GRANTS_POOL,
    REVENUE_INFERENCE,
    tenant_account,
)
from cambist.ledger.journal import Entry, Journal
from cambist.store.schema import usage

__all__ = ["usage_entry", "usage_lines", "usage_row", "write_usage"]

_USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "varchar"), ("tenant_id", "varchar"), ("key_id", "varchar"),
    ("model", "varchar"), ("endpoint_id", "varchar"), ("supplier", "varchar"),
    ("prompt_tokens", "int4"), ("completion_tokens", "int4"), ("reasoning_tokens", "int4"),
    ("price_micros", "int8"), ("compute_cost_micros", "int8"), ("price_version", "int4"),
    ("status", "varchar"), ("created_at", "float8"), ("latency_ms", "float8"),
    ("ttft_ms", "float8"), ("stream", "bool"), ("privacy_tier", "varchar"),
    ("allowance_micros", "int8"), ("pool_micros", "int8"),
)

_ARRAYS = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_USAGE_COLUMNS, 1))
_PG_USAGE = (
    f"INSERT INTO usage ({', '.join(c for c, _ in _USAGE_COLUMNS)}) "
    f"SELECT * FROM unnest({_ARRAYS}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
_PG_ENTRIES = (
    "INSERT INTO journal_entries (idempotency_key, kind, memo, created_at) "
    "SELECT k, 'usage', m, $3 FROM unnest($1::varchar[], $2::text[]) AS t(k, m) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key"
)


def usage_row(record: UsageRecord) -> dict[str, Any]:
    """The ``usage`` table row of a record (money rounded once to micro-dollars)."""
    return {
        "request_id": record.request_id,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "model": record.model,
        "endpoint_id": record.endpoint_id,
        "supplier": record.supplier,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "price_micros": to_micros(record.price),
        "compute_cost_micros": to_micros(record.compute_cost),
        "price_version": record.price_version,
        "status": record.status,
        "created_at": record.created_at,
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
        "stream": record.stream,
        "privacy_tier": record.privacy_tier,
        "allowance_micros": record.allowance_micros,
        "pool_micros": record.pool_micros,
    }


def _memo(record: UsageRecord) -> str:
    return f"{record.model} {record.prompt_tokens}+{record.completion_tokens} tok"


def usage_lines(record: UsageRecord) -> list[tuple[str, int]]:
    """The journal lines charging a record, in micro-dollars: debits in spend
    order (allowance, pool, prepaid; zero parts omitted), the revenue credit.
    Raises ``ValueError`` when the parts do not fit in the price."""
    price = to_micros(record.price)
    a, p = record.allowance_micros, record.pool_micros
    if a < 0 or p < 0 or a + p > price:
        raise ValueError(f"record {record.request_id}: allowance {a} and pool {p} "
                         f"micro-dollars do not fit in its price {price}")
    debits = ((GRANTS_ALLOWANCE, a), (GRANTS_POOL, p),
              (tenant_account(record.tenant_id), price - a - p))
    return [*((acct, m) for acct, m in debits if m), (REVENUE_INFERENCE, -price)]


def usage_entry(record: UsageRecord) -> Entry:
    """The journal entry charging a record (kind ``usage``)."""
    lines = [(acct, from_micros(m)) for acct, m in usage_lines(record)]
    return Entry(f"usage:{record.request_id}", "usage", lines, _memo(record))


def _unique(records: Iterable[UsageRecord]) -> dict[str, UsageRecord]:
    out: dict[str, UsageRecord] = {}
    for r in records:
        out.setdefault(r.request_id, r)
    return out


async def write_usage(conn: AsyncConnection, journal: Journal, records: Iterable[UsageRecord],
                      now: float) -> int:
    """Insert the records' usage rows and journal entries inside ``conn``'s
    transaction; returns how many usage rows were new. ``now`` stamps the
    journal entries."""
    unique = _unique(records)
    if not unique:
        return 0
    if conn.dialect.name == "postgresql":
        return await _write_pg(conn, unique, now)
    stmt = insert_ignore(conn, usage, ["request_id"]).returning(usage.c.request_id)
    rows = [usage_row(r) for r in unique.values()]
    inserted = {rid for (rid,) in (await conn.execute(stmt, rows)).all()}
    entries = [usage_entry(r) for rid, r in unique.items()
               if rid in inserted and to_micros(r.price) != 0]
    if entries:
        await journal.post_in(conn, entries)
    return len(inserted)


async def _write_pg(conn: AsyncConnection, unique: dict[str, UsageRecord], now: float) -> int:
    raw = (await conn.get_raw_connection()).driver_connection  # asyncpg, in our transaction
    assert raw is not None
    rows = [usage_row(r) for r in unique.values()]
    columns = [[row[c] for row in rows] for c, _ in _USAGE_COLUMNS]
    inserted = {rec[0] for rec in await raw.fetch(_PG_USAGE, *columns)}
    charged = [r for rid, r in unique.items() if rid in inserted and to_micros(r.price) != 0]
    if not charged:
        return len(inserted)
    keys = [f"usage:{r.request_id}" for r in charged]
    new_ids = {key: eid for eid, key in
               await raw.fetch(_PG_ENTRIES, keys, [_memo(r) for r in charged], now)}
    entry_ids: list[int] = []
    accounts: list[str] = []
    amounts: list[int] = []
    for key, r in zip(keys, charged, strict=True):
        eid = new_ids.get(key)
        if eid is None:  # posted before (cannot happen without its usage row; be safe)
            continue
        for account, micros in usage_lines(r):
            entry_ids.append(eid)
            accounts.append(account)
            amounts.append(micros)
    if entry_ids:
        # Lines are always new (their entries just were): binary COPY, the fastest path.
        await raw.copy_records_to_table(
            "journal_lines", records=zip(entry_ids, accounts, amounts, strict=True),
            columns=["entry_id", "account", "amount_micros"])
    return len(inserted)
