"""Invariant checks over the journal and the usage table.

Each problem is reported as one sentence; an empty list means the books are
healthy: every entry balances and has at least two lines, no line lacks its
entry, all lines sum to zero, and every charged usage row has exactly the
journal entry its price says (and every usage entry has its row): its
tenant is debited the prepaid part (``price − allowance − pool``), and
``platform:grants:allowance`` / ``platform:grants:pool`` the row's
``allowance_micros`` / ``pool_micros``.
"""

from __future__ import annotations

from sqlalchemy import and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cambist.ledger.accounts import GRANTS_ALLOWANCE, GRANTS_POOL
from cambist.store.schema import journal_entries, journal_lines, usage

__all__ = ["journal_problems"]

_E = journal_entries.c
_L = journal_lines.c
_U = usage.c


async def _entry_problems(conn: AsyncConnection) -> list[str]:
    sums = (
        select(
            _E.id,
            _E.idempotency_key,
            func.coalesce(func.sum(_L.amount_micros), 0),
            func.count(_L.id),
        )
        .select_from(journal_entries.outerjoin(journal_lines, _L.entry_id == _E.id))
        .group_by(_E.id, _E.idempotency_key)
        .having((func.coalesce(func.sum(_L.amount_micros), 0) != 0) | (func.count(_L.id) < 2))
        .order_by(_E.id)
    )
    out: list[str] = []
    for eid, key, total, count in (await conn.execute(sums)).all():
        if total != 0:
            out.append(
                f"Journal entry {eid} ({key}) is not balanced: "
                f"its lines sum to {total} micro-dollars."
            )
        if count < 2:
            out.append(f"Journal entry {eid} ({key}) has {count} line(s), fewer than two.")
    orphans = (
        select(_L.id, _L.entry_id)
        .select_from(journal_lines.outerjoin(journal_entries, _L.entry_id == _E.id))
        .where(_E.id.is_(None))
        .order_by(_L.id)
    )
    for lid, eid in (await conn.execute(orphans)).all():
        out.append(f"Journal line {lid} points to entry {eid}, which does not exist.")
    total = (await conn.execute(select(func.coalesce(func.sum(_L.amount_micros), 0)))).scalar()
    if int(total or 0) != 0:
        out.append(f"All journal lines sum to {total} micro-dollars instead of zero.")
    return out


async def _usage_problems(conn: AsyncConnection) -> list[str]:
    usage_key = literal("usage:") + _U.request_id
    out: list[str] = []
    missing = (
        select(_U.request_id, _U.price_micros)
        .select_from(usage.outerjoin(journal_entries, _E.idempotency_key == usage_key))
        .where(and_(_E.id.is_(None), _U.price_micros != 0))
        .order_by(_U.request_id)
    )
    for rid, price in (await conn.execute(missing)).all():
        out.append(f"Usage row {rid} charges {price} micro-dollars but has no journal entry.")
    unmatched = (
        select(_E.id, _E.idempotency_key)
        .select_from(journal_entries.outerjoin(usage, _E.idempotency_key == usage_key))
        .where(and_(_E.kind == "usage", _U.request_id.is_(None)))
        .order_by(_E.id)
    )
    for eid, key in (await conn.execute(unmatched)).all():
        out.append(f"Usage journal entry {eid} ({key}) has no usage row.")
    charged = func.coalesce(func.sum(_L.amount_micros), 0)
    prepaid = _U.price_micros - _U.allowance_micros - _U.pool_micros
    mismatched = (
        select(_U.request_id, _U.price_micros, prepaid, _E.id, charged)
        .select_from(
            usage.join(journal_entries, _E.idempotency_key == usage_key).outerjoin(
                journal_lines,
                and_(_L.entry_id == _E.id, _L.account == literal("tenant:") + _U.tenant_id),
            )
        )
        .group_by(_U.request_id, _U.price_micros, _U.allowance_micros, _U.pool_micros, _E.id)
        .having(charged != prepaid)
        .order_by(_U.request_id)
    )
    for rid, price, due, eid, got in (await conn.execute(mismatched)).all():
        paid = "" if due == price else f" ({due} of it prepaid)"
        out.append(
            f"Usage row {rid} has price {price} micro-dollars{paid} but journal entry {eid} "
            f"charges its tenant {got}."
        )
    for account, column, what in ((GRANTS_ALLOWANCE, _U.allowance_micros, "allowance"),
                                  (GRANTS_POOL, _U.pool_micros, "pool")):
        granted = (
            select(_U.request_id, column, _E.id, charged)
            .select_from(
                usage.join(journal_entries, _E.idempotency_key == usage_key).outerjoin(
                    journal_lines, and_(_L.entry_id == _E.id, _L.account == account)))
            .group_by(_U.request_id, column, _E.id)
            .having(charged != column)
            .order_by(_U.request_id)
        )
        for rid, want, eid, got in (await conn.execute(granted)).all():
            out.append(f"Usage row {rid} paid {want} micro-dollars from the {what} but "
                       f"journal entry {eid} debits {account} {got}.")
        # A row whose entry is missing (price 0 skips the entry) must not claim grants.
        orphan = (
            select(_U.request_id, column)
            .select_from(usage.outerjoin(journal_entries, _E.idempotency_key == usage_key))
            .where(and_(_E.id.is_(None), column != 0))
            .order_by(_U.request_id)
        )
        for rid, want in (await conn.execute(orphan)).all():
            out.append(f"Usage row {rid} paid {want} micro-dollars from the {what} "
                       "but has no journal entry.")
    return out


async def journal_problems(conn: AsyncConnection) -> list[str]:
    """Every invariant violation found through ``conn``, one sentence each."""
    return await _entry_problems(conn) + await _usage_problems(conn)
