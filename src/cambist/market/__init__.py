"""The market: the offer book (normalized, queryable) and its change events."""

from cambist.market.book import OfferBook, offer_event_data

__all__ = ["OfferBook", "offer_event_data"]
