"""Writing a batch of usage records with their journal entries in bulk.

The flusher's batch (thousands of records) is written in three steps
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

On PostgreSQL the three are one statement, one round trip: data-modifying
CTEs fed by one JSON array of the records' outbox lines (each line an array
of :class:`UsageRecord`'s fields, :func:`cambist.ledger.outbox.encode_record`),
parsed once as ``jsonb`` on the server; the lines the gateway wrote travel as
they are, so a record costs the flusher no Python work beyond its checks.
Money is rounded to micro-dollars on the server the way
:func:`~cambist.domain.money.to_micros` rounds (``round`` of a ``numeric``
rounds half away from zero, as ``ROUND_HALF_UP`` does). Each newly inserted
usage row draws its entry's id from the ``journal_entries`` sequence in
``RETURNING``, so the lines are built on the server from the usage rows whose
entries were actually inserted (an integer hash join); duplicates within the
batch are skipped by the primary key as across batches. The price parts are
checked and tenant ids validated in Python before anything is written.
Elsewhere (SQLite) it goes through SQLAlchemy's multi-row ``INSERT`` and
:meth:`Journal.post_in`. Both write the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cambist.domain.money import from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger._sql import insert_ignore
from cambist.ledger.accounts import (
    GRANTS_ALLOWANCE,
    GRANTS_POOL,
    REVENUE_INFERENCE,
    TENANT_PREFIX,
    tenant_account,
)
from cambist.ledger.journal import Entry, Journal
from cambist.ledger.outbox import OutboxBatch, encode_record, record_charges
from cambist.store.schema import usage

__all__ = ["flush_usage_pg", "usage_entry", "usage_lines", "usage_row", "write_usage"]

_USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "varchar"), ("tenant_id", "varchar"), ("key_id", "varchar"),
    ("model", "varchar"), ("endpoint_id", "varchar"), ("supplier", "varchar"),
    ("prompt_tokens", "int4"), ("completion_tokens", "int4"), ("reasoning_tokens", "int4"),
    ("price_micros", "int8"), ("compute_cost_micros", "int8"), ("price_version", "int4"),
    ("status", "varchar"), ("created_at", "float8"), ("latency_ms", "float8"),
    ("ttft_ms", "float8"), ("stream", "bool"), ("privacy_tier", "varchar"),
    ("allowance_micros", "int8"), ("pool_micros", "int8"),
)

_MONEY_FIELDS = (9, 10)  # price, compute_cost: dollars as decimal strings in a line


def _field(i: int, sql_type: str) -> str:
    if i in _MONEY_FIELDS:
        return f"round((r->>{i})::numeric * 1000000)::int8"
    return f"(r->>{i})::{sql_type}"


# The columns line up with UsageRecord's fields (and so with encode_record's
# arrays), except that the two money fields become micro-dollars.
_FIELDS = ", ".join(_field(i, t) for i, (_, t) in enumerate(_USAGE_COLUMNS))


def _pg_write(gated: bool) -> str:
    """One statement, one round trip: the usage rows (duplicates skipped by the
    primary key; each new one draws the id its journal entry will have), one
    entry per new priced row (duplicates skipped by the idempotency key), the
    lines of the entries actually inserted (zero parts omitted; in spend order,
    then the revenue credit); returns the number of new usage rows. ``gated``:
    first compare-and-set the outbox position (``$7`` to ``$8`` from ``$9``) and
    write only if it moved; returns (1 if it moved else 0, new usage rows)."""
    pos = ("pos AS (UPDATE settings SET value = $8 WHERE key = $7 AND value = $9 "
           "RETURNING 1), " if gated else "")
    gate = "WHERE EXISTS (SELECT 1 FROM pos) " if gated else ""
    result = "SELECT (SELECT count(*) FROM pos), count(*) FROM u" if gated else \
        "SELECT count(*) FROM u"
    return (
        f"WITH {pos}u AS (INSERT INTO usage ({', '.join(c for c, _ in _USAGE_COLUMNS)}) "
        f"SELECT {_FIELDS} FROM jsonb_array_elements($1::jsonb) AS r {gate}"
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id, tenant_id, model, "
        "prompt_tokens, completion_tokens, price_micros, allowance_micros, pool_micros, "
        "nextval('journal_entries_id_seq'::regclass) AS eid), "
        "e AS (INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at) "
        "SELECT eid, 'usage:' || request_id, 'usage', "
        "model || ' ' || prompt_tokens || '+' || completion_tokens || ' tok', "
        "$2::float8 FROM u WHERE price_micros <> 0 "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), "
        "l AS (INSERT INTO journal_lines (entry_id, account, amount_micros) "
        "SELECT u.eid, x.account, x.amount FROM u "
        "CROSS JOIN LATERAL (VALUES (1, $3::varchar, u.allowance_micros), "
        "(2, $4::varchar, u.pool_micros), "
        "(3, $5::varchar || u.tenant_id, u.price_micros - u.allowance_micros - u.pool_micros), "
        "(4, $6::varchar, -u.price_micros)) AS x(n, account, amount) "
        f"WHERE x.amount <> 0 AND u.eid IN (SELECT id FROM e) ORDER BY u.eid, x.n) {result}"
    )


_PG_WRITE = _pg_write(gated=False)
_PG_FLUSH = _pg_write(gated=True)


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


async def write_usage(conn: AsyncConnection, journal: Journal, records: Sequence[UsageRecord],
                      now: float, lines: bytes | None = None) -> int:
    """Insert the records' usage rows and journal entries inside ``conn``'s
    transaction; returns how many usage rows were new. ``now`` stamps the
    journal entries; ``lines``, when given, are the records' outbox lines
    (:func:`~cambist.ledger.outbox.encode_record`, one after the other), sent
    as they are."""
    if not records:
        return 0
    if conn.dialect.name == "postgresql":
        return await _write_pg(conn, records, now, lines)
    unique = _unique(records)
    if conn.dialect.name == "sqlite":
        return await _write_sqlite(conn, unique, now)
    stmt = insert_ignore(conn, usage, ["request_id"]).returning(usage.c.request_id)
    rows = [usage_row(r) for r in unique.values()]
    inserted = {rid for (rid,) in (await conn.execute(stmt, rows)).all()}
    entries = [usage_entry(r) for rid, r in unique.items()
               if rid in inserted and to_micros(r.price) != 0]
    if entries:
        await journal.post_in(conn, entries)
    return len(inserted)


_SQLITE_USAGE = (
    f"INSERT OR IGNORE INTO usage ({', '.join(c for c, _ in _USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_USAGE_COLUMNS))})"
)
_SQLITE_ENTRY = ("INSERT OR IGNORE INTO journal_entries (idempotency_key, kind, memo, created_at) "
                 "VALUES (?, 'usage', ?, ?)")
_SQLITE_LINE = "INSERT INTO journal_lines (entry_id, account, amount_micros) VALUES (?, ?, ?)"


def _usage_values(r: UsageRecord) -> tuple[Any, ...]:
    """A record's ``usage`` row in :data:`_USAGE_COLUMNS` order."""
    return (r.request_id, r.tenant_id, r.key_id, r.model, r.endpoint_id, r.supplier,
            r.prompt_tokens, r.completion_tokens, r.reasoning_tokens, to_micros(r.price),
            to_micros(r.compute_cost), r.price_version, r.status, r.created_at, r.latency_ms,
            r.ttft_ms, r.stream, r.privacy_tier, r.allowance_micros, r.pool_micros)


_SLICE = 64
"""Records converted per turn of the event loop while a batch is written, and
rows per statement sent to SQLite's thread: a batch of a few hundred converted
at once held the loop for milliseconds, which showed in the gateway's tail
latency (``bench/gateway``, concurrency 1)."""
_SLICES = 16
"""At most this many slices per table: a batch larger than ``_SLICE *
_SLICES`` records (the flusher behind) goes in larger slices. Each slice
waits for a turn of the event loop, several milliseconds when the gateway is
saturated: a full batch (~4,300 records) in slices of 64 took 2-2.5 s there,
flushing ~1,800 records a second while 3,500 arrived, so the backlog grew for
as long as the load lasted."""


def _slice(n: int) -> int:
    return max(_SLICE, -(-n // _SLICES))


async def _sqlite_rows(unique: dict[str, UsageRecord]
                       ) -> tuple[list[tuple[Any, ...]], dict[str, list[tuple[str, int]]]]:
    """Each record's ``usage`` row, and the journal lines of those with a price."""
    values: list[tuple[Any, ...]] = []
    lines: dict[str, list[tuple[str, int]]] = {}
    step = _slice(len(unique))
    for i, (rid, r) in enumerate(unique.items()):
        if i and not i % step:
            await asyncio.sleep(0)
        values.append(_usage_values(r))
        if values[-1][9] != 0:  # price_micros
            lines[rid] = usage_lines(r)
    return values, lines


async def _write_sqlite(conn: AsyncConnection, unique: dict[str, UsageRecord], now: float
                        ) -> int:
    """The same rows through the driver's ``executemany`` with plain tuples:
    SQLAlchemy's per-row parameter processing for a multi-row insert cost the
    gateway's event loop about a tenth of its CPU per request
    (``bench/gateway``). New rows are told apart by rowid: the transaction's
    reads and writes see one snapshot, and SQLite refuses the write if another
    writer committed after it (so nothing can slip in between)."""
    values, lines = await _sqlite_rows(unique)
    raw = await _driver(conn)  # aiosqlite, in our transaction

    async def top(table: str) -> int:
        async with raw.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}") as cur:
            row = await cur.fetchone()
        return int(row[0])

    async def write(sql: str, rows: list[tuple[Any, ...]]) -> None:
        # In slices: SQLite's thread shares the gateway's core and its GIL, so
        # one long statement holds the event loop back for its whole run.
        step = _slice(len(rows))
        for at in range(0, len(rows), step):
            await raw.executemany(sql, rows[at:at + step])

    before = await top("usage")
    await write(_SQLITE_USAGE, values)
    async with raw.execute("SELECT request_id FROM usage WHERE rowid > ?", (before,)) as cur:
        inserted = [rid for (rid,) in await cur.fetchall()]
    charged = [rid for rid in inserted if rid in lines]
    if charged:
        first = await top("journal_entries")
        await write(_SQLITE_ENTRY, [(f"usage:{rid}", _memo(unique[rid]), now) for rid in charged])
        async with raw.execute("SELECT id, idempotency_key FROM journal_entries WHERE id > ?",
                               (first,)) as cur:
            new_ids = await cur.fetchall()
        await write(_SQLITE_LINE, [(eid, account, micros) for eid, key in new_ids
                                   for account, micros in lines[key[len("usage:"):]]])
    return len(inserted)


def _pg_payload(charges: Iterable[tuple[str, str, int, int, int, float]],
                lines: bytes | None, records: Callable[[], Sequence[UsageRecord]]) -> str:
    """The records checked (as :func:`usage_lines` checks the priced ones,
    before anything is written; from their ``charges`` as
    :meth:`~cambist.ledger.outbox.OutboxBatch.charges` lists them) and their
    ``lines`` as one JSON array (``records()`` encoded when ``lines`` are not
    theirs, one line each)."""
    tenants: set[str] = set()
    n = 0
    for rid, tenant, price, a, p, _ in charges:
        n += 1
        if not price:  # no entry, so no lines to check (as on SQLite)
            continue
        if (a or p) and (a < 0 or p < 0 or a + p > price):
            raise ValueError(f"record {rid}: allowance {a} and pool {p} "
                             f"micro-dollars do not fit in its price {price}")
        tenants.add(tenant)
    for t in tenants:
        tenant_account(t)  # raises on an invalid tenant id, as usage_lines does
    if lines is None or lines.count(b"\n") != n:
        lines = b"".join([encode_record(r) for r in records()])
    # One JSON array of the lines: a line's only raw newline is its end (JSON
    # escapes those in strings), so newlines become the array's commas.
    return (b"[" + lines[:-1].replace(b"\n", b",") + b"]").decode()


async def _driver(conn: AsyncConnection) -> Any:
    raw = (await conn.get_raw_connection()).driver_connection  # the DBAPI driver's own
    assert raw is not None
    return raw


async def _write_pg(conn: AsyncConnection, records: Sequence[UsageRecord], now: float,
                    lines: bytes | None) -> int:
    raw = await _driver(conn)  # in the caller's transaction
    inserted = await raw.fetchval(_PG_WRITE, _pg_payload(record_charges(records), lines,
                                                          lambda: records), now,
                                  GRANTS_ALLOWANCE, GRANTS_POOL, TENANT_PREFIX, REVENUE_INFERENCE)
    return int(inserted)


async def flush_usage_pg(conn: AsyncConnection, batch: OutboxBatch, now: float,
                         key: str, old: str, new: str) -> int | None:
    """PostgreSQL: move the ``settings`` value under ``key`` from ``old`` to
    ``new`` (an outbox's committed position) and write the records as
    :func:`write_usage` does (``batch``: an outbox's records, sent as its
    lines), in one statement, so atomically without a
    transaction of its own (``conn`` must not be in one): the flusher's batch
    in one round trip where a transaction took four. Returns the new usage
    rows, or ``None`` when the value was not ``old`` (nothing written)."""
    raw = await _driver(conn)
    moved, inserted = await raw.fetchrow(
        _PG_FLUSH, _pg_payload(batch.charges(), batch.lines, lambda: batch.records), now,
        GRANTS_ALLOWANCE, GRANTS_POOL,
        TENANT_PREFIX, REVENUE_INFERENCE, key, new, old)
    return int(inserted) if moved else None
