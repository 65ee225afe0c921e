"""Placement: choosing offers for workloads by $/Mtok under constraints."""

from cambist.placement.rank import Quote, quote, rank_for_model

__all__ = ["Quote", "quote", "rank_for_model"]
