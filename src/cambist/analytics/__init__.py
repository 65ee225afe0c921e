"""cambist.analytics: utilization, margins, spread and cost per token/query,
computed live from the store. Pure functions over rows (``utilization``,
``margins``, ``report``) apart from the queries that read them (``queries``)."""

from cambist.analytics.queries import load_snapshot, margins, summary, utilization
from cambist.analytics.window import Window, parse_duration, resolve_window

__all__ = ["Window", "load_snapshot", "margins", "parse_duration", "resolve_window", "summary",
           "utilization"]
