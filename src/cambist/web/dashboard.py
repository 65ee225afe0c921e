"""The dashboard placeholder: one server-rendered page with the exchange's state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

__all__ = ["dashboard_routes"]

Snapshot = Callable[[], Awaitable[dict[str, Any]]]

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Cambist</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}}
table{{border-collapse:collapse}}
td,th{{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}}
code{{background:#f4f4f4;padding:.1rem .3rem}}</style></head><body>
<h1>Cambist exchange</h1>
<p>OpenAI-compatible API at <code>{base}/v1</code> &middot; REST docs at
<a href="/docs">/docs</a> &middot; schema at <a href="/openapi.json">/openapi.json</a></p>
<table><tr><th>suppliers</th><td id="suppliers">{suppliers}</td></tr>
<tr><th>offers listed</th><td id="offers">{offers}</td></tr>
<tr><th>active leases</th><td id="leases">{leases}</td></tr>
<tr><th>deployments</th><td id="deployments">{deployments}</td></tr>
<tr><th>healthy endpoints</th><td id="endpoints">{endpoints}</td></tr></table>
<p>The full dashboard (prices, utilization, margins) is on the roadmap.</p></body></html>"""


def dashboard_routes(snapshot: Snapshot) -> list[Route]:
    """``GET /``: a page built from ``snapshot()`` (counts only, no tenant data)."""

    async def page(request: Request) -> HTMLResponse:
        s = await snapshot()
        base = f"{request.url.scheme}://{request.url.netloc}"
        return HTMLResponse(_PAGE.format(base=escape(base), **{k: escape(str(v))
                                                               for k, v in s.items()}))

    return [Route("/", page, methods=["GET"])]
