"""A short run with the market-maker book: P&L adds up, journal balances, report."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from cambist.ledger.accounts import BOOK_COST, BOOK_INVENTORY, BOOK_RESALE
from cambist.sim.book_figures import book_figures, book_lines, price_path
from cambist.sim.run import RunOptions, simulate
from cambist.sim.scenario import load_scenario

HERE = Path(__file__).parent


async def test_a_run_with_the_book_adds_up() -> None:
    sc = load_scenario(str(HERE / "book.yaml"))
    assert sc.book.enabled and sc.book.max_term_s == 7 * 86400
    # Two warm-up days: the surge detector needs a history before it forecasts.
    run = await simulate(sc, RunOptions(days=0.25, tenants=sc.tenants, seed=sc.seed,
                                        baselines=False, warmup_hours=48))
    b = run.book
    assert b is not None and b.reservations >= 1 and b.served, "the book never traded"
    assert b.own_use_hours > 0
    # Every reserved hour inside the run is used or idle; the rest is inventory.
    assert b.own_use_at_cost + b.idle_cost == pytest.approx(b.cost_in_run, abs=1e-6)
    assert b.cost_in_run + b.inventory_left == pytest.approx(b.reservation_cost, abs=1e-6)
    assert b.net == pytest.approx(b.resale_revenue + b.own_use_at_market - b.cost_in_run)
    assert b.resold_hours <= b.idle_hours + 1e-9
    # The journal: balanced, invariants clean, the book's accounts as settled.
    assert run.books.problems == []
    bal = run.books.balances
    assert bal[BOOK_INVENTORY] == pytest.approx(Decimal(repr(b.inventory_left)),
                                                abs=Decimal("0.00001"))
    assert bal[BOOK_COST] == pytest.approx(Decimal(repr(b.idle_cost)), abs=Decimal("0.000002"))
    assert -bal[BOOK_RESALE] == pytest.approx(Decimal(repr(b.resale_revenue)),
                                              abs=Decimal("0.000002"))
    # The deployments' cost in the journal is what the run reports (book units at cost).
    assert float(run.books.compute_cost) == pytest.approx(run.outcomes["cambist"].cost,
                                                          abs=0.01)
    fig = book_figures(run)
    assert fig["pnl"]["net"] and fig["smoothing"]["with_book"]["std_log_change"] is not None
    text = "\n".join(book_lines({"book": fig}))
    assert "## Market-maker book" in text and "with the book" in text


def test_price_path_measures_a_spike() -> None:
    flat = price_path(np.array([2.0, 2.0, 2.0, 2.0]))
    assert flat["std_log_change"] == 0 and flat["max_run_up"] == 0
    spiky = price_path(np.array([2.0, 2.0, 4.0, 2.0, np.nan, 2.0]))
    assert spiky["peak_ratio"] == 2.0 and spiky["max_run_up"] == 1.0
    assert spiky["std_log_change"] == pytest.approx(np.log(2) / np.sqrt(2), abs=1e-4)
