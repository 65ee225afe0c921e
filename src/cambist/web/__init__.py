"""The dashboard."""

from cambist.web.dashboard import dashboard_routes

__all__ = ["dashboard_routes"]
