"""The run's money in the real double-entry journal.

After a run, Cambist's measured window is posted to a fresh SQLite store
through :class:`cambist.ledger.journal.Journal` (the store's schema, balanced
entries, idempotency keys, one rounding to micro-dollars): each tenant's
prepaid credit, its metered charges per day (a *cohort* entry per tenant and
day, at the scenario's price list, reasoning tokens billed as output), and
every lease's cost through the ledger's own ``lease_entries``. The report's
revenue and compute cost are then read back as journal balances, and the
journal's invariant checks must come back empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from cambist.domain.clock import ManualClock
from cambist.ledger.accounts import CASH, COMPUTE_COST, REVENUE_INFERENCE, tenant_account
from cambist.ledger.journal import Entry, Journal, lease_entries
from cambist.sim.demand import Demand
from cambist.sim.fleet import Unit
from cambist.sim.scenario import Scenario
from cambist.store.db import open_engine, sqlite_url
from cambist.store.schema import metadata

__all__ = ["Books", "post_books", "unit_costs"]

_MTOK = Decimal(1_000_000)
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Books:
    """Balances read back from the journal."""

    revenue: Decimal
    compute_cost: Decimal
    tenant_credit: Decimal
    """Credit left across tenants after their charges."""
    entries: int
    problems: list[str]
    balances: dict[str, Decimal] = field(default_factory=dict)
    """Balances of the extra accounts asked for (the market-maker book's)."""


def _charges(scenario: Scenario, demand: Demand) -> list[Entry]:
    entries = []
    days = demand.minutes // 1440 or 1
    span = demand.minutes // days
    for i, t in enumerate(demand.tenants):
        p_in, p_out = scenario.prices[t.model]
        total = Decimal(0)
        for day in range(days):
            lo, hi = day * span, (day + 1) * span
            prompt = round(float(demand.prompt[i, lo:hi].astype(np.float64).sum()))
            output = round(float(demand.output[i, lo:hi].astype(np.float64).sum()))
            charge = (p_in * prompt + p_out * output) / _MTOK
            if charge <= 0:
                continue
            total += charge
            entries.append(Entry(f"cohort:{t.id}:{day}", "usage_cohort",
                                 [(tenant_account(t.id), charge), (REVENUE_INFERENCE, -charge)],
                                 f"{t.id} day {day}: {prompt} prompt, {output} output tokens"))
        if total > 0:  # prepaid: every tenant tops up what it will spend, rounded up
            credit = Decimal(int(total) + 1)
            entries.append(Entry(f"topup:{t.id}", "topup",
                                 [(CASH, credit), (tenant_account(t.id), -credit)]))
    return entries


def unit_costs(units: list[Unit], column: Callable[[str], int], prices: np.ndarray,
               start: float, hour0: int, hours: int) -> tuple[list[float], np.ndarray]:
    """Each unit's cost inside the measured window (realized hourly prices,
    lease to release but at least the billing minimum), and the window's cost
    per hour; ``column`` maps an offer id to its column in ``prices``."""
    lo, hi = hour0 * 3600.0, (hour0 + hours) * 3600.0
    hourly = np.zeros(hours)
    costs = []
    for u in units:
        a, b = u.start - start, u.billed_end() - start
        col = column(u.offer.id)
        cost = 0.0
        for h in range(max(int(a // 3600), hour0), min(int(np.ceil(b / 3600)), hour0 + hours)):
            overlap = min(b, (h + 1) * 3600.0, hi) - max(a, h * 3600.0, lo)
            if overlap > 0:
                c = float(prices[h, col]) * overlap / 3600.0
                hourly[h - hour0] += c
                cost += c
        costs.append(cost)
    return costs, hourly


async def post_books(scenario: Scenario, demand: Demand, units: list[Unit], costs: list[float],
                     start: float, state: Path, extra: Sequence[Entry] = (),
                     accounts: Sequence[str] = ()) -> Books:
    """Post the measured window (``costs``: each unit's, from :func:`unit_costs`)
    and the ``extra`` entries to a journal in ``state`` and read the balances
    back (those of ``accounts`` too)."""
    engine = open_engine(sqlite_url(state / "books.db"))
    try:
        # A throw-away store: the tables straight from the schema, no migrations.
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        journal = Journal(engine, ManualClock(start))
        entries = _charges(scenario, demand) + [
            e for u, c in zip(units, costs, strict=True) if c > 0
            for e in lease_entries(u.lease_id, u.offer.supplier, None, Decimal(repr(c)),
                                   Decimal(0), u.billed_end())] + list(extra)
        for i in range(0, len(entries), _BATCH):
            await journal.post_many(entries[i:i + _BATCH])
        revenue = -(await journal.balance(REVENUE_INFERENCE))
        cost = await journal.balance(COMPUTE_COST)
        credit = sum((await journal.tenant_balances()).values(), Decimal(0))
        balances = {a: await journal.balance(a) for a in accounts}
        return Books(revenue, cost, credit, len(entries), await journal.check(), balances)
    finally:
        await engine.dispose()
