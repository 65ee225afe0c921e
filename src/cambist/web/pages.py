"""The dashboard's routes: landing page, sign-in/out, the five pages, their
JSON under ``/ui/data/<page>`` and the vendored static files.

Who may see what is decided once, in :func:`_scope`: an admin key sees the
platform (tenant ``None``); any other key sees only its own tenant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.web.blocks import clock, filter_select
from cambist.web.data_deployments import deployments_data
from cambist.web.data_market import market_data
from cambist.web.data_money import money_data
from cambist.web.data_overview import exchange_counts, overview_data
from cambist.web.data_traffic import traffic_data
from cambist.web.session import COOKIE, SESSION_TTL_S, SessionAuth
from cambist.web.templates import landing_html, login_html, page_html

__all__ = ["PAGES", "dashboard_routes"]

STATIC_DIR = Path(__file__).parent / "static"
_MAX_FORM_BYTES = 4096
_HEADERS = {
    # Everything is served from here: no inline script, no third-party origin.
    "content-security-policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Loader = Callable[[ControlPlane, str | None, Mapping[str, str]], Awaitable[dict[str, Any]]]


async def _market(cp: ControlPlane, _: str | None, q: Mapping[str, str]) -> dict[str, Any]:
    return await market_data(cp, q)  # market data is public to every key


@dataclass(frozen=True, slots=True)
class Page:
    """One dashboard page: where it lives, its title, its data and refresh period."""

    name: str
    path: str
    title: str
    load: Loader
    refresh_ms: int
    per_tenant: bool = True
    """Whether the page has a per-tenant view (market data has not)."""


PAGES: dict[str, Page] = {p.name: p for p in (
    Page("overview", "/ui", "Overview", overview_data, 5000),
    Page("market", "/ui/market", "Market", _market, 10000, per_tenant=False),
    Page("deployments", "/ui/deployments", "Deployments", deployments_data, 5000),
    Page("traffic", "/ui/traffic", "Traffic", traffic_data, 5000),
    Page("money", "/ui/money", "Money", money_data, 5000),
)}


def _scope(p: Principal, requested: str | None, known: set[str]) -> tuple[bool, str | None]:
    """(allowed, tenant): an admin sees the platform or, on request, one known
    tenant as that tenant would; any other key only its own tenant, whatever
    it asks for."""
    if p.is_admin:
        return True, requested if requested in known else None
    return p.tenant_id is not None, p.tenant_id


def _safe_next(value: str | None) -> str:
    """A local dashboard path to return to after sign-in (never another site)."""
    if not value:
        return "/ui"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui") \
            or value.startswith("//") or "\\" in value:
        return "/ui"
    return value


def _same_origin(request: Request) -> bool:
    """A form post from this site (browsers send ``Origin`` on POST)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.url.netloc


def dashboard_routes(cp: ControlPlane) -> list[BaseRoute]:
    """``/`` (landing page) and the dashboard under ``/ui``."""
    auth = SessionAuth(cp)

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status, headers=_HEADERS)

    async def page_data(page: Page, p: Principal, request: Request) -> dict[str, Any] | None:
        q = dict(request.query_params)
        tenants = await cp.keyring.list_tenants() if p.is_admin and page.per_tenant else []
        allowed, tenant = _scope(p, q.get("tenant"), {t["id"] for t in tenants})
        if not allowed:
            return None
        data = await page.load(cp, tenant, q)
        if tenants:  # an admin may look at the exchange as any one tenant sees it
            data["filters"] = [filter_select(
                "tenant", "Tenant", [("", "all (platform)"),
                                     *((t["id"], f"{t['name']} ({t['id']})") for t in tenants)],
                tenant), *data.get("filters", [])]
        now = cp.clock.now()
        return {**data, "page": page.name, "as_of": now, "as_of_text": clock(now),
                "scope": {"admin": p.is_admin, "tenant": tenant}}

    def view(page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            p = await auth.principal(request)
            if p is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", 303)
            data = await page_data(page, p, request)
            if data is None:
                return html(login_html("this key belongs to no tenant"), 403)
            return html(page_html(page.name, page.title, p, data, page.refresh_ms))
        return handler

    async def data(request: Request) -> Response:
        page = PAGES.get(request.path_params["page"])
        if page is None:
            return JSONResponse({"error": {"message": "no such page", "type": "not_found"}},
                                404)
        p = await auth.principal(request)
        if p is None:
            return JSONResponse({"error": {"message": "sign in at /ui/login",
                                           "type": "authentication_error"}}, 401)
        body = await page_data(page, p, request)
        if body is None:
            return JSONResponse({"error": {"message": "this key belongs to no tenant",
                                           "type": "permission_error"}}, 403)
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def login_form(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        if await auth.principal(request) is not None:
            return RedirectResponse(nxt, 303)
        return html(login_html(next_path=nxt))

    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return html(login_html("sign-in must come from this site's login page"), 403)
        raw = b""
        async for chunk in request.stream():  # a key is short: refuse big bodies early
            raw += chunk
            if len(raw) > _MAX_FORM_BYTES:
                return html(login_html("the sign-in form is too large"), 413)
        form = parse_qs(raw.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        nxt = _safe_next((form.get("next") or [""])[0])
        found = await auth.login(key) if key.strip() else None
        if found is None:
            return html(login_html("that API key is unknown or revoked", nxt), 401)
        resp = RedirectResponse(nxt, 303)
        resp.set_cookie(COOKIE, found[1], max_age=SESSION_TTL_S, path="/ui", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
        return resp

    async def logout(request: Request) -> Response:
        await auth.logout(request)
        resp = RedirectResponse("/ui/login", 303)
        resp.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
        return resp

    async def landing(request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}"
        return html(landing_html(base, await exchange_counts(cp)))

    routes: list[BaseRoute] = [
        Route("/", landing, methods=["GET"]),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/data/{page}", data, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static"),
    ]
    routes += [Route(pg.path, view(pg), methods=["GET"]) for pg in PAGES.values()]
    return routes
