"""The bulk usage writer: the same rows on every backend, de-duplicated exactly.

On PostgreSQL :func:`write_usage` is one statement of data-modifying CTEs;
on SQLite a multi-row ``INSERT`` plus :meth:`Journal.post_in`. Both must
write one usage row per request id, one entry per new priced record whose
lines are :func:`usage_lines` (spend order, zero parts omitted, revenue
last), and nothing a second time.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from cambist.domain.money import to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import encode_record
from cambist.ledger.usage_bulk import usage_lines, write_usage
from cambist.store.schema import journal_entries, journal_lines, usage


def _rec(i: int, price: str, allowance: int = 0, pool: int = 0,
         tenant: str = "ten_a") -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{i}", tenant_id=tenant, key_id="key_1", model="m-8b",
        endpoint_id="ep", supplier="sim", prompt_tokens=10 + i, completion_tokens=20 + i,
        reasoning_tokens=0, price=Decimal(price), compute_cost=Decimal("0.0000015"),
        price_version=1, status="ok", created_at=1_767_225_600.0 + i, latency_ms=1.5,
        ttft_ms=None if i % 2 else 0.5, stream=bool(i % 2), privacy_tier="standard",
        allowance_micros=allowance, pool_micros=pool)


BATCH = [
    _rec(0, "0.000300"),                          # prepaid only: two lines
    _rec(1, "0.000300", allowance=300),           # allowance covers it all
    _rec(2, "0.000300", allowance=100, pool=150),  # all four lines
    _rec(3, "0.000300", pool=300),                # pool only
    _rec(4, "0"),                                 # free: usage row, no entry
    _rec(5, "0.0000005", tenant="ten_b"),         # rounds half up to 1 micro
]


async def _books(journal: Journal) -> tuple[int, dict[str, tuple[str, list[tuple[str, int]]]]]:
    async with journal.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(usage))).scalar_one()
        rows = (await conn.execute(
            select(journal_entries.c.idempotency_key, journal_entries.c.memo,
                   journal_entries.c.kind, journal_lines.c.account,
                   journal_lines.c.amount_micros)
            .join(journal_lines, journal_lines.c.entry_id == journal_entries.c.id)
            .order_by(journal_lines.c.id))).all()
    out: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    for key, memo, kind, account, micros in rows:
        assert kind == "usage"
        out.setdefault(key, (memo, []))[1].append((account, micros))
    return n, out


async def test_batch_written_once_with_its_lines(journal: Journal) -> None:
    async with journal.engine.begin() as conn:
        # A duplicate inside the batch is written once.
        assert await write_usage(conn, journal, [*BATCH, BATCH[2]], 1.0) == len(BATCH)
    n, books = await _books(journal)
    assert n == len(BATCH)
    priced = [r for r in BATCH if r.price != 0]
    assert set(books) == {f"usage:{r.request_id}" for r in priced}
    for r in priced:
        memo, lines = books[f"usage:{r.request_id}"]
        assert memo == f"m-8b {r.prompt_tokens}+{r.completion_tokens} tok"
        assert lines == usage_lines(r)  # same accounts, amounts and order
        assert sum(m for _, m in lines) == 0
    assert len(books["usage:req-2"][1]) == 4
    async with journal.engine.connect() as conn:
        row = (await conn.execute(select(usage).where(usage.c.request_id == "req-2"))).one()
    assert (row.price_micros, row.compute_cost_micros, row.allowance_micros,
            row.pool_micros, row.ttft_ms, row.stream) == (300, 2, 100, 150, 0.5, False)

    # The batch read again (a crash before the position was committed, or a
    # second flush) and a new record among it: only the new one is booked.
    again = [*BATCH, _rec(6, "0.000200", allowance=50)]
    async with journal.engine.begin() as conn:
        assert await write_usage(conn, journal, again, 2.0) == 1
    n2, books2 = await _books(journal)
    assert n2 == len(BATCH) + 1
    assert {k: v for k, v in books2.items() if k != "usage:req-6"} == books
    assert books2["usage:req-6"][1] == [("platform:grants:allowance", 50),
                                        ("tenant:ten_a", 150),
                                        ("platform:revenue:inference", -200)]
    assert await journal.check() == []


@pytest.mark.parametrize("bad", [
    _rec(9, "0.000100", allowance=80, pool=30),  # parts exceed the price
    _rec(9, "0.000100", pool=-1),
    _rec(9, "0.000100", tenant="bad tenant"),
])
async def test_invalid_record_writes_nothing(journal: Journal, bad: UsageRecord) -> None:
    with pytest.raises(ValueError):
        async with journal.engine.begin() as conn:
            await write_usage(conn, journal, [BATCH[0], bad], 1.0)
    assert await _books(journal) == (0, {})
    async with journal.engine.begin() as conn:  # the batch without it still goes in
        assert await write_usage(conn, journal, [BATCH[0]], 1.0) == 1


# Dollar amounts as the gateway writes them into outbox lines (str of a
# Decimal): any scale, exponent notation included, half-way cases on purpose.
_TRICKY = ["0.0000005", "0.0000015", "0.0000025", "0.00000049999999", "1E-7", "5E-7",
           "1.5E-6", "2.5E-6", "0E-12", "0", "0.000", "123456.7890125", "9.9999995",
           "0.1234565", "1E+1", "7.0000005000", "0.0000004999999999999999999"]


def _amounts(n: int) -> list[Decimal]:
    rng = random.Random(20261206)
    out = [Decimal(a) for a in _TRICKY]
    for _ in range(n):
        places = rng.randint(0, 14)
        out.append(Decimal(rng.randint(0, 10 ** rng.randint(1, 12))).scaleb(-places))
        out.append(Decimal(rng.randint(0, 10 ** 6)).scaleb(-7) + Decimal("5E-7"))  # half-way
    return out


@pytest.mark.parametrize("with_lines", [True, False])
async def test_money_rounds_as_to_micros(journal: Journal, with_lines: bool) -> None:
    """The database rounds a line's dollars to micro-dollars exactly as
    :func:`to_micros` does (on PostgreSQL the rounding happens on the server,
    from the decimal strings of the outbox lines), whether the lines are
    passed as the outbox holds them or encoded from the records."""
    amounts = _amounts(150)
    records = [_rec(i, "0") for i in range(len(amounts))]
    records = [r._replace(price=a, compute_cost=amounts[-1 - i])
               for i, (r, a) in enumerate(zip(records, amounts, strict=True))]
    lines = b"".join(encode_record(r) for r in records) if with_lines else None
    async with journal.engine.begin() as conn:
        assert await write_usage(conn, journal, records, 1.0, lines) == len(records)
    async with journal.engine.connect() as conn:
        got = (await conn.execute(select(usage.c.request_id, usage.c.price_micros,
                                         usage.c.compute_cost_micros))).all()
    rows = {rid: (price, cost) for rid, price, cost in got}
    for r in records:
        assert rows[r.request_id] == (to_micros(r.price), to_micros(r.compute_cost)), r.price
    assert await journal.check() == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL: one statement
@pytest.mark.parametrize("n", [200, 3_000])
async def test_sqlite_batches_go_in_slices(journal: Journal, n: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's rows go to its thread in slices of 64 (each a turn of the event
    loop), and a batch too large for 16 of them (a flusher fallen behind) in
    16 larger ones, so it catches up in a bounded number of turns."""
    assert journal.engine.dialect.name == "sqlite"
    import aiosqlite

    sent: dict[str, list[int]] = {}
    executemany = aiosqlite.Connection.executemany

    def counting(self: aiosqlite.Connection, sql: str, rows: list[tuple[object, ...]]
                 ) -> object:
        sent.setdefault(sql.split(" INTO ")[1].split()[0], []).append(len(rows))
        return executemany(self, sql, rows)

    monkeypatch.setattr(aiosqlite.Connection, "executemany", counting)
    records = [_rec(i, "0.000300") for i in range(n)]
    async with journal.engine.begin() as conn:
        assert await write_usage(conn, journal, records, 1.0) == n
    assert set(sent) == {"usage", "journal_entries", "journal_lines"}
    for rows in sent.values():
        assert sum(rows) in (n, 2 * n)  # usage rows and entries; two lines per entry
        assert len(rows) == (-(-sum(rows) // 64) if sum(rows) <= 64 * 16 else 16)
    assert await journal.check() == []
