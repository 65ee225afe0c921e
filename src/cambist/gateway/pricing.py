"""The price a caller pays for a model: the price list, or the declared price.

A model in the price list is priced from it. A model that is not, but that
external or local endpoints serve with declared per-token prices, is priced at
the highest declared price among them x (1 + markup), so it is callable without
publishing a price-list version and never sold below what any of its upstreams
charge. Such a price carries version 0 in usage records. Derived prices are
computed once per routing-table swap, not per request.

Prices are keyed by (model, privacy tier). A tier with no entry of its own in
the price list is charged the model's ``standard`` price (listed, else
declared): publish a (model, tier) entry to charge a tier differently.
"""

from __future__ import annotations

from decimal import Decimal

from cambist.domain.billing import ModelPrice, PriceList
from cambist.domain.endpoint import PrivacyTier
from cambist.gateway.routing import RoutingTable

__all__ = ["DECLARED_PRICE_VERSION", "CallerPrices"]

DECLARED_PRICE_VERSION = 0
"""``price_version`` of usage charged at a declared-price fallback."""


class CallerPrices:
    """Implements :class:`~cambist.domain.billing.PriceList` over a price list
    and the declared prices of the routing table's endpoints."""

    def __init__(self, prices: PriceList, table: RoutingTable, markup: Decimal) -> None:
        self._prices = prices
        self._table = table
        self._factor = 1 + markup
        self._generation = -1
        self._declared: dict[str, ModelPrice] = {}

    def declared(self, model: str, tier: str = "standard") -> ModelPrice | None:
        """The fallback price of ``model`` from its endpoints' declared prices."""
        if self._generation != self._table.generation:
            self._rebuild()
        found = self._declared.get(model)
        return found if found is None or found.tier == tier else None

    def price(self, model: str, tier: PrivacyTier | str = "standard") -> ModelPrice | None:
        """The price in force for ``model`` in ``tier`` (its own list entry, else
        the standard price), or ``None`` if unpriced."""
        listed = self._prices.price(model, tier)
        if listed is None and tier != "standard":
            listed = self._prices.price(model, "standard")
        return listed if listed is not None else self.declared(model)

    def _rebuild(self) -> None:
        generation = self._table.generation
        out: dict[str, ModelPrice] = {}
        for model in self._table.models():
            declared = [p for r in self._table.routes(model) if r.per_token
                        if (p := r.endpoint.declared_prices) is not None]
            if not declared:
                continue
            out[model] = ModelPrice(
                model, "standard", max(p[0] for p in declared) * self._factor,
                max(p[1] for p in declared) * self._factor, DECLARED_PRICE_VERSION)
        self._declared = out
        self._generation = generation
