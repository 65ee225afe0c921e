"""The dashboard: server-rendered pages under ``/ui`` with live-refreshing charts.

``dashboard_routes(control_plane)`` is all the app assembly needs; see
:mod:`cambist.web.pages` for the routes and :mod:`cambist.web.session` for
sign-in.
"""

from cambist.web.pages import dashboard_routes

__all__ = ["dashboard_routes"]
