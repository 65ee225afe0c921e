"""The versioned price list callers pay from.

Each published version is a complete list of ``(model, tier) → $/Mtok in/out``
with the time it takes effect; the price in force at ``now`` comes from the
highest-numbered version whose ``effective_at ≤ now``. Lookups are synchronous
and in memory; :class:`PriceBookRefresh` reloads when another process publishes.
"""

from __future__ import annotations

import bisect
import math
from decimal import Decimal

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.billing import ModelPrice
from cambist.domain.clock import Clock
from cambist.domain.money import from_micros, to_micros
from cambist.store.schema import price_versions, prices

__all__ = ["PriceBook", "PriceBookRefresh"]

_PriceMap = dict[tuple[str, str], ModelPrice]
_PUBLISH_ATTEMPTS = 5


class PriceBook:
    """Implements :class:`cambist.domain.billing.PriceList` from the database."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._times: list[float] = []  # effective_at, ascending
        self._best: list[int] = []  # highest version effective at or before _times[i]
        self._maps: dict[int, _PriceMap] = {}
        self._latest = 0

    async def load(self) -> None:
        """Read every version into memory (swapped in atomically)."""
        async with self._engine.connect() as conn:
            vrows = (await conn.execute(select(price_versions))).all()
            prows = (await conn.execute(select(prices))).all()
        maps: dict[int, _PriceMap] = {v.version: {} for v in vrows}
        for p in prows:
            maps.setdefault(p.version, {})[(p.model, p.tier)] = ModelPrice(
                p.model,
                p.tier,
                from_micros(p.input_micros_per_mtok),
                from_micros(p.output_micros_per_mtok),
                p.version,
            )
        order = sorted(vrows, key=lambda v: (v.effective_at, v.version))
        times: list[float] = []
        best: list[int] = []
        running = 0
        for v in order:
            running = max(running, v.version)
            times.append(v.effective_at)
            best.append(running)
        self._times, self._best, self._maps = times, best, maps
        self._latest = max(maps, default=0)

    def _version_at(self, now: float) -> int | None:
        i = bisect.bisect_right(self._times, now)
        return self._best[i - 1] if i else None

    @property
    def current_version(self) -> int | None:
        """The version in force now, or ``None`` before any takes effect."""
        return self._version_at(self._clock.now())

    def price(self, model: str, tier: str = "standard") -> ModelPrice | None:
        """The price of ``model`` in ``tier`` in force now, or ``None`` if unpriced."""
        version = self._version_at(self._clock.now())
        if version is None:
            return None
        return self._maps[version].get((model, tier))

    def list_prices(self, tier: str | None = None) -> list[ModelPrice]:
        """Every price in force now (optionally of one tier), by model and tier."""
        version = self._version_at(self._clock.now())
        if version is None:
            return []
        found = self._maps[version].values()
        return sorted(
            (p for p in found if tier is None or p.tier == tier),
            key=lambda p: (p.model, p.tier),
        )

    async def publish(
        self,
        entries: dict[tuple[str, str], tuple[Decimal, Decimal]],
        markup: Decimal,
        effective_at: float,
        note: str = "",
    ) -> int:
        """Publish a complete new version and return its number.

        ``entries`` maps ``(model, tier)`` to the caller prices in dollars per
        million input and output tokens (stored rounded to whole micro-dollars
        per Mtok); ``markup`` is recorded with the version as the margin over
        cost those prices embody (it is not applied again)."""
        rows = _price_rows(entries)
        if not math.isfinite(effective_at):
            raise ValueError("effective_at must be a finite time")
        if not Decimal(markup).is_finite():
            raise ValueError("markup must be a finite Decimal")
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                version = await self._insert_version(rows, markup, effective_at, note)
            except IntegrityError:
                continue  # another process took the number; take the next one
            await self.load()
            return version
        raise RuntimeError("could not allocate a price version number; try again")

    async def _insert_version(
        self, rows: list[dict], markup: Decimal, effective_at: float, note: str
    ) -> int:
        async with self._engine.begin() as conn:
            top = (await conn.execute(select(func.max(price_versions.c.version)))).scalar()
            version = int(top or 0) + 1
            await conn.execute(
                insert(price_versions),
                {
                    "version": version,
                    "effective_at": float(effective_at),
                    "created_at": self._clock.now(),
                    "markup": str(markup),
                    "note": note,
                },
            )
            await conn.execute(insert(prices), [{**r, "version": version} for r in rows])
        return version

    async def versions(self) -> list[dict]:
        """Every version, newest first, with its number of prices."""
        v = price_versions.c
        q = (
            select(
                v.version,
                v.effective_at,
                v.created_at,
                v.markup,
                v.note,
                func.count(prices.c.model).label("prices"),
            )
            .select_from(price_versions.outerjoin(prices, prices.c.version == v.version))
            .group_by(v.version, v.effective_at, v.created_at, v.markup, v.note)
            .order_by(v.version.desc())
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        current = self.current_version
        return [
            {**r._mapping, "markup": Decimal(r.markup), "current": r.version == current}
            for r in rows
        ]

    async def refresh(self) -> None:
        """Reload only if a version was published since the last load."""
        async with self._engine.connect() as conn:
            top = (await conn.execute(select(func.max(price_versions.c.version)))).scalar()
        if int(top or 0) != self._latest:
            await self.load()


def _price_rows(entries: dict[tuple[str, str], tuple[Decimal, Decimal]]) -> list[dict]:
    if not entries:
        raise ValueError("a price version needs at least one price")
    rows = []
    for (model, tier), (price_in, price_out) in sorted(entries.items()):
        if not model or not tier or len(model) > 128 or len(tier) > 32:
            raise ValueError(f"invalid model or tier {(model, tier)!r}")
        for value in (price_in, price_out):
            if not isinstance(value, Decimal | int) or not Decimal(value).is_finite():
                raise ValueError(f"prices must be Decimal dollars per Mtok: {model} {tier}")
            if value < 0:
                raise ValueError(f"prices must not be negative: {model} {tier}")
        rows.append(
            {
                "model": model,
                "tier": tier,
                "input_micros_per_mtok": to_micros(Decimal(price_in)),
                "output_micros_per_mtok": to_micros(Decimal(price_out)),
            }
        )
    return rows


class PriceBookRefresh:
    """Control loop: pick up versions published by other processes."""

    name = "pricebook-refresh"

    def __init__(self, book: PriceBook, interval_s: float = 2.0) -> None:
        self.book = book
        self.interval_s = interval_s

    async def step(self, now: float) -> None:
        """Reload the price book if a new version exists."""
        await self.book.refresh()
