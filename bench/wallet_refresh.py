"""Wallet refresh: one reload of tenant balances over a journal of ``--lines`` lines.

The wallets reload tenant balances every 2 s (``WalletRefresh``). Before, each
reload summed every ``tenant:*`` journal line (``Journal.tenant_balances``;
the shared wallet's ``tenant_books.credit_books`` also joined each line to its entry):
linear in history. Now :class:`~cambist.ledger.tenant_books.TenantBooks`
reads only the lines posted since the previous reload (and reconciles with a
full read every ``reconcile_every`` reloads). Measured in the same run, on
the same database of ``--lines`` lines (usage entries over 200 tenants, as
metering writes them, plus one top-up per tenant):

* **full scan**: the old reload's query (``tenant_balances``, and
  ``credit_books`` for the shared wallet);
* **refresh, idle**: an incremental refresh with nothing new;
* **refresh, +N**: an incremental refresh after ``--new`` new usage entries
  (2 lines each: what 2 s of traffic at ``--new``/2 records/s adds);
* **reconcile**: the periodic full read (for the amortized cost).

Each figure is the median of ``--repeat`` runs; the ratio is full scan over
refresh. Run: ``python bench/wallet_refresh.py [--lines 1000000] [--new 2000]
[--repeat 5] [--postgres URL | --no-postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import SystemClock
from cambist.domain.money import to_micros
from cambist.ledger.journal import Journal
from cambist.ledger.tenant_books import TenantBooks, credit_books
from cambist.store.db import migrate, open_engine, sqlite_url

sys.path.insert(0, str(Path(__file__).parent))
from metering import PG_DEFAULT, pg_database

TENANTS = 200

# Entries 1..E are usage entries of tenant (id % 200); lines 2i-1 (tenant
# debit) and 2i (revenue credit) belong to entry i. Top-ups follow.
_FILL_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM n WHERE i < :hi) ",
    "INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at) "
    "SELECT i, 'usage:req-' || i, 'usage', '', 0 FROM n",
    "INSERT INTO journal_lines (id, entry_id, account, amount_micros) "
    "SELECT 2 * i - 1, i, 'tenant:ten_' || (i % 200), 1000 FROM n "
    "UNION ALL SELECT 2 * i, i, 'platform:revenue:inference', -1000 FROM n",
)
_FILL_PG = (
    "INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at) "
    "SELECT i, 'usage:req-' || i, 'usage', '', 0 "
    "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) i",
    "INSERT INTO journal_lines (id, entry_id, account, amount_micros) "
    "SELECT 2 * i - 1 + k, i, CASE k WHEN 0 THEN 'tenant:ten_' || (i % 200) "
    "ELSE 'platform:revenue:inference' END, CASE k WHEN 0 THEN 1000 ELSE -1000 END "
    "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) i, generate_series(0, 1) k",
)


async def fill(engine: AsyncEngine, lo: int, hi: int) -> None:
    """Usage entries ``lo..hi`` with their two lines each, ids as above."""
    async with engine.begin() as conn:
        params = {"lo": lo, "hi": hi}
        if conn.dialect.name == "postgresql":
            for sql in _FILL_PG:
                await conn.execute(text(sql), params)
            for seq, value in (("journal_entries_id_seq", hi), ("journal_lines_id_seq", 2 * hi)):
                await conn.execute(text(f"SELECT setval('{seq}', {value})"))
        else:
            for sql in _FILL_SQLITE[1:]:
                await conn.execute(text(_FILL_SQLITE[0] + sql), params)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("ANALYZE journal_lines"))
            await conn.execute(text("ANALYZE journal_entries"))


async def _timed(work: Awaitable[object]) -> float:
    t0 = time.perf_counter()
    await work
    return (time.perf_counter() - t0) * 1000


async def bench(name: str, url: str, lines: int, new: int, repeat: int) -> None:
    migrate(url)
    engine = open_engine(url)
    journal = Journal(engine, SystemClock())
    try:
        entries = lines // 2
        t0 = time.perf_counter()
        await fill(engine, 1, entries)
        for t in range(TENANTS):  # some credit, so balances look like a live book
            await journal.post(f"topup-{t}", "topup", [("platform:cash", 100),
                                                       (f"tenant:ten_{t}", -100)])
        print(f"{name}: {lines:,} journal lines written in {time.perf_counter() - t0:.1f} s")
        rows: list[tuple[str, list[float]]] = []
        for split in (False, True):
            label = "shared wallet (credit_books)" if split else "wallet (tenant_balances)"
            books = TenantBooks(engine, split_usage=split, reconcile_every=10**9)
            await books.refresh(0.0)
            full: list[float] = []
            idle: list[float] = []
            busy: list[float] = []
            recon: list[float] = []
            old: Callable[[], Awaitable[object]] = (
                (lambda: credit_books(journal.engine)) if split else journal.tenant_balances)
            next_entry = entries + 1_000 + (repeat * new if split else 0)
            for r in range(repeat):
                full.append(await _timed(old()))
                idle.append(await _timed(books.refresh(1.0 + r)))
                lo = next_entry + r * new
                await fill(engine, lo, lo + new // 2 - 1)
                busy.append(await _timed(books.refresh(1.5 + r)))
                recon.append(await _timed(books.reconcile(1.7 + r)))
            # The incremental books must still be exactly the old query's.
            if split:
                assert (books.credit(), books.usage()) == await credit_books(journal.engine)
            else:
                assert books.balances() == {t: to_micros(v) for t, v in
                                            (await journal.tenant_balances()).items()}
            rows.append((label, [statistics.median(v) for v in (full, idle, busy, recon)]))
        print(f"| {name} | full scan (before) ms | refresh, idle ms | refresh, +{new} lines ms "
              "| reconcile ms | ratio idle | ratio +new |")
        for label, (f, i, b, c) in rows:
            print(f"| {label} | {f:.1f} | {i:.2f} | {b:.2f} | {c:.1f} | {f / i:.0f}x "
                  f"| {f / b:.0f}x |")
    finally:
        await engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=2_000, help="new lines before a busy refresh")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--postgres", default=PG_DEFAULT)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench("SQLite", sqlite_url(Path(tmp) / "refresh.db"), args.lines,
                          args.new, args.repeat))
    if not args.no_postgres:
        with pg_database(args.postgres) as url:
            asyncio.run(bench("PostgreSQL", url, args.lines, args.new, args.repeat))


if __name__ == "__main__":
    main()
