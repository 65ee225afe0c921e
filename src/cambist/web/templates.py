"""HTML for the dashboard: string templates, every value escaped.

Pages are rendered from the page-data dict of :mod:`cambist.web.blocks`; the
same dict is embedded as JSON (made safe for a ``<script>`` element) so the
browser draws the charts without a second request.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from cambist.domain.billing import Principal

__all__ = ["NAV", "STATIC", "landing_html", "login_html", "page_html", "script_json"]

STATIC = "/ui/static"
NAV = (("overview", "/ui", "Overview"), ("market", "/ui/market", "Market"),
       ("deployments", "/ui/deployments", "Deployments"), ("traffic", "/ui/traffic", "Traffic"),
       ("money", "/ui/money", "Money"))

_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title} · Cambist</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/vendor/uplot/uPlot.min.css">
<link rel="stylesheet" href="{static}/dashboard.css"></head>"""


def script_json(data: Any) -> str:
    """``data`` as JSON that cannot end a ``<script>`` element or open a comment."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _who(p: Principal) -> str:
    if p.is_admin:
        return "admin · all tenants"
    return f"tenant {p.tenant_id} · {p.scope}"


def _nav(active: str, p: Principal) -> str:
    current = ' class="active" aria-current="page"'
    links = "".join(f'<a href="{href}"{current if key == active else ""}>{escape(label)}</a>'
                    for key, href, label in NAV)
    return (f'<header><nav><span class="brand">Cambist</span>{links}</nav>'
            f'<div class="who"><span id="who">{escape(_who(p))}</span>'
            '<form method="post" action="/ui/logout"><button type="submit" id="logout">'
            "Sign out</button></form></div></header>")


def _filters(filters: list[dict[str, Any]]) -> str:
    if not filters:
        return ""
    out = []
    for f in filters:
        name, label = escape(f["name"]), escape(f["label"])
        if f["kind"] == "select":
            opts = "".join(
                f'<option value="{escape(v)}"{" selected" if v == f["value"] else ""}>'
                f"{escape(t)}</option>" for v, t in f["options"])
            ctl = f'<select name="{name}" id="f-{name}">{opts}</select>'
        else:
            ctl = (f'<input name="{name}" id="f-{name}" value="{escape(f["value"])}" '
                   f'placeholder="{escape(f.get("placeholder", ""))}" size="8">')
        out.append(f"<label>{label} {ctl}</label>")
    return (f'<form class="filters" method="get" id="filters">{"".join(out)}'
            '<button type="submit" id="apply">Apply</button></form>')


def _stats(stats: list[dict[str, str]]) -> str:
    cells = "".join(
        f'<div class="stat"><span class="label">{escape(s["label"])}</span>'
        f'<span class="value" data-stat="{escape(s["id"])}">{escape(s["value"])}</span></div>'
        for s in stats)
    return f'<section class="stats">{cells}</section>'


def _charts(charts: dict[str, dict[str, Any]]) -> str:
    cards = "".join(
        f'<figure class="card"><figcaption>{escape(c["title"])}</figcaption>'
        f'<div class="chart" id="chart-{escape(k)}" data-chart="{escape(k)}"></div>'
        f'<p class="note" data-chart-note="{escape(k)}">{escape(c.get("note", ""))}</p></figure>'
        for k, c in charts.items())
    return f'<section class="charts">{cards}</section>' if cards else ""


def table_body(t: dict[str, Any]) -> str:
    """The ``<tbody>`` rows of a table block (an empty table says so)."""
    if not t["rows"]:
        return f'<tr class="empty"><td colspan="{len(t["columns"])}">no data</td></tr>'
    return "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>"
                   for r in t["rows"])


def _tables(tables: dict[str, dict[str, Any]]) -> str:
    cards = []
    for k, t in tables.items():
        head = "".join(f"<th>{escape(c)}</th>" for c in t["columns"])
        cards.append(
            f'<div class="card"><h2>{escape(t["title"])}</h2>'
            f'<p class="note" data-table-note="{escape(k)}">{escape(t.get("note", ""))}</p>'
            f'<table id="table-{escape(k)}" data-table="{escape(k)}"><thead><tr>{head}</tr>'
            f"</thead><tbody>{table_body(t)}</tbody></table></div>")
    return f'<section class="tables">{"".join(cards)}</section>'


def page_html(page: str, title: str, p: Principal, data: dict[str, Any],
              refresh_ms: int) -> str:
    """A full dashboard page for ``data`` (see :mod:`cambist.web.blocks`)."""
    body = (_filters(data.get("filters", [])) + _stats(data.get("stats", []))
            + _charts(data.get("charts", {})) + _tables(data.get("tables", {})))
    return (_HEAD.format(title=escape(title), static=STATIC) + "<body>" + _nav(page, p)
            + f'<main data-page="{escape(page)}" data-refresh-ms="{refresh_ms}">'
            + f'<h1>{escape(title)}</h1><p class="status" id="status">as of '
            + f'{escape(str(data.get("as_of_text", "")))} UTC</p>{body}</main>'
            + f'<script type="application/json" id="page-data">{script_json(data)}</script>'
            + f'<script src="{STATIC}/vendor/uplot/uPlot.iife.min.js"></script>'
            + f'<script src="{STATIC}/dashboard.js"></script></body></html>')


def login_html(error: str = "", next_path: str = "/ui") -> str:
    """The sign-in page: one API-key field."""
    err = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    return (_HEAD.format(title="Sign in", static=STATIC)
            + '<body class="login"><main><h1>Cambist</h1><p>Sign in with an API key '
            + "(admin keys see the whole exchange; tenant keys see their own tenant). "
            + "Keys are in <code>$CAMBIST_HOME/connection.json</code>.</p>" + err
            + '<form method="post" action="/ui/login" id="login-form">'
            + f'<input type="hidden" name="next" value="{escape(next_path)}">'
            # Browsers expect a (possibly hidden) user name beside a password field.
            + '<input type="text" name="username" value="api-key" autocomplete="username" '
            + 'hidden>'
            + '<label>API key <input type="password" name="key" id="key" '
            + 'autocomplete="current-password" required></label>'
            + '<button type="submit" id="sign-in">Sign in</button></form></main></body></html>')


def landing_html(base: str, counts: dict[str, Any]) -> str:
    """``/``: what this exchange is, where its APIs are, and a link to the dashboard."""
    rows = "".join(f'<tr><th>{escape(k)}</th><td id="{escape(k.replace(" ", "-"))}">'
                   f"{escape(str(v))}</td></tr>" for k, v in counts.items())
    return (_HEAD.format(title="Exchange", static=STATIC)
            + '<body class="login"><main><h1>Cambist exchange</h1>'
            + f"<p>OpenAI-compatible API at <code>{escape(base)}/v1</code> · REST docs at "
            + '<a href="/docs">/docs</a> · schema at <a href="/openapi.json">/openapi.json</a>'
            + '</p><p><a href="/ui" id="open-dashboard">Open the dashboard</a></p>'
            + f"<table>{rows}</table></main></body></html>")
