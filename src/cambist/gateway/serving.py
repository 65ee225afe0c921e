"""The gateway service: one inference request from key to settled usage.

Order of work: authenticate; take one request from the key's and tenant's
per-minute limits; read the body under the size limit; parse and validate it
once (routing policy included); take its token estimate from the per-minute
token limits (corrected when it settles); plan the models that may serve it
(price, ``max_price``, endpoints the policy admits, context length); reserve
credit for the worst case (prompt estimate plus ``max_tokens``, or the
default, at the dearest planned model) before any upstream sees the request;
forward with failover, model after model of the ``models`` list, within the
retry budget; then settle the actual usage at the price of the model that
served it (never more than was reserved) or release the hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from decimal import Decimal

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from cambist.domain.billing import Principal
from cambist.domain.endpoint import PRIVACY_TIERS
from cambist.domain.ids import ordered_id
from cambist.domain.money import quantize_usd
from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import (
    BodyTimeout,
    InvalidApiKey,
    NoHealthyEndpoint,
    PayloadTooLarge,
    TenantKeyRequired,
    UpstreamFailed,
)
from cambist.gateway.limits import Admission, RateLimiter
from cambist.gateway.metering import Meter, usage_of_body
from cambist.gateway.planning import Plan, plan_targets
from cambist.gateway.pricing import CallerPrices
from cambist.gateway.privacy import PRIVACY_HEADER
from cambist.gateway.protocol import Kind, ParsedRequest, parse_request
from cambist.gateway.routing import EndpointRoute
from cambist.gateway.streaming import RelayResponse, StreamRelay
from cambist.gateway.upstream import Attempts, UpstreamResult, close_quietly, forward
from cambist.ledger.budgets import KeyBudgets

__all__ = ["BUDGET_HEADER", "GatewayService", "format_decimal", "tier_counts"]

log = logging.getLogger("cambist.gateway")

BUDGET_HEADER = "x-cambist-key-budget-remaining"
"""What is left of the key's spend budget this period (keys with a budget only)."""


def format_decimal(amount: Decimal) -> str:
    """A Decimal in plain notation (never ``1E-7``), exact."""
    return format(amount, "f")


def tier_counts(routes: Iterable[EndpointRoute]) -> dict[str, int]:
    """How many of ``routes`` offer each privacy tier (tiers none offers left out),
    in the order of :data:`~cambist.domain.endpoint.PRIVACY_TIERS`."""
    counts = dict.fromkeys(PRIVACY_TIERS, 0)
    for route in routes:
        for tier in route.tiers:
            counts[tier] += 1
    return {tier: n for tier, n in counts.items() if n}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes")


class _BodyTimer:
    """Cancels the task reading a request body when the body is late."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class GatewayService:
    """Serves the OpenAI-compatible endpoints over injected dependencies."""

    def __init__(self, deps: GatewayDeps) -> None:
        self._deps = deps
        self.prices = CallerPrices(deps.prices, deps.routes, deps.settings.declared_price_markup)
        self.limiter = deps.limiter or RateLimiter(deps.plans, deps.clock)

    def authenticate(self, request: Request) -> Principal:
        """The principal of the request's bearer key; raises ``InvalidApiKey``."""
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise InvalidApiKey(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        principal = self._deps.authenticator.authenticate(secret)
        if principal is None:
            raise InvalidApiKey("Incorrect API key provided.")
        return principal

    async def read_body(self, request: Request) -> bytes:
        """The request body, refusing more than ``max_body_bytes`` without
        reading it all, and one that does not arrive within ``body_timeout_s``.

        The ASGI messages are read straight from the server under a plain
        timer: Starlette's body stream (an async generator the loop tracks)
        and ``asyncio.timeout`` cost several times the read itself at
        concurrency 1 (bench/gateway)."""
        settings = self._deps.settings
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        task = asyncio.current_task()
        assert task is not None
        timer = _BodyTimer(task)
        handle = asyncio.get_running_loop().call_later(settings.body_timeout_s, timer.expire)
        receive = request.receive
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if timer.expired and task.uncancel() == 0:  # our timer, nobody else's cancel
                raise BodyTimeout(f"the request body did not arrive within "
                                  f"{settings.body_timeout_s:g} s") from None
            raise
        finally:
            handle.cancel()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def infer(self, request: Request, kind: Kind) -> Response:
        """Serve one chat, completions or embeddings request (counted in flight
        until its response is built, or a stream's relay finishes)."""
        metrics = self._deps.metrics
        metrics.started()
        response: Response | None = None
        try:
            response = await self._infer(request, kind)
        finally:
            if not isinstance(response, RelayResponse):
                metrics.finished()
        return response

    async def _infer(self, request: Request, kind: Kind) -> Response:
        deps = self._deps
        started = time.monotonic()
        created_at = deps.clock.now()
        request_id = ordered_id("req", created_at)  # sorts by time: bulk inserts append
        # request.state's own dict, written directly: State's __setattr__ is
        # Python code, and this runs twice per request.
        state = request.scope.setdefault("state", {})
        state["request_id"] = request_id
        principal = self.authenticate(request)
        if principal.tenant_id is None:
            raise TenantKeyRequired(
                "inference needs a tenant API key; platform admin keys have no tenant to bill"
            )
        admission = self.limiter.admit(principal.key_id, principal.tenant_id)
        state["admission"] = admission  # its headers on every response from here
        budgets = deps.budgets
        if budgets is not None and not budgets.covers(principal.key_id):
            budgets = None  # a key without a budget skips the budget's bookkeeping
        if budgets is not None:
            self._budget_header(budgets, principal.key_id, admission.extra)
        cap, owner = deps.settings.max_tokens_cap, "this gateway"
        account = admission.plan  # the tenant's plan may cap max_tokens lower
        if account.max_tokens is not None and account.max_tokens < cap:
            cap, owner = account.max_tokens, f"plan {account.name}"
        parsed = parse_request(
            await self.read_body(request), kind, max_tokens_cap=cap,
            privacy_header=request.headers.get(PRIVACY_HEADER),
            allowed_tiers=principal.privacy_tiers, cap_owner=owner,
        )
        completion = parsed.reserve_completion_tokens(deps.settings.default_max_tokens)
        admission.reserve_tokens(parsed.prompt_tokens + completion)
        try:
            plans, meter = self._reserve(parsed, principal, completion, request_id,
                                         (created_at, started), budgets)
        except BaseException:
            admission.settle(0)
            raise
        meter.on_done = admission.settle
        try:
            result, plan = await self._forward(parsed, plans, request_id, started,
                                               principal.tenant_id, created_at)
        except BaseException:
            meter.release()
            raise
        meter.price, meter.model = plan.price, plan.target.model
        try:
            return self._respond(parsed, result, meter, admission)
        except BaseException:
            meter.release()
            if result.events is not None:
                deps.routes.release(result.route)
                await close_quietly(result.response)
            raise

    def _reserve(
        self, parsed: ParsedRequest, principal: Principal, completion: int, request_id: str,
        times: tuple[float, float], budgets: KeyBudgets | None,
    ) -> tuple[list[Plan], Meter]:
        """Plan the models that may serve the request and hold credit for the
        worst case at the dearest of them. ``times``: (clock time, monotonic
        time) of the request's arrival; ``budgets``: the key's budget book, if
        the key has a budget."""
        deps = self._deps
        tenant = principal.tenant_id
        assert tenant is not None
        plans, primary_error = plan_targets(deps.routes, self.prices, parsed, tenant)
        if not plans:
            assert primary_error is not None
            raise primary_error
        hold = max(p.price.charge_micros(parsed.prompt_tokens, completion) for p in plans)
        if budgets is not None:  # before credit is held: refused, nothing to release
            budgets.check_micros(principal.key_id, hold)
        reservation = deps.wallet.reserve_micros(tenant, hold, request_id)
        meter = Meter(
            deps.wallet, reservation, plans[0].price, principal, request_id, plans[0].target.model,
            times[0], times[1], parsed.stream, parsed.privacy,
        )
        if budgets is not None:
            meter.on_charge = budgets.record
        return plans, meter

    @staticmethod
    def _budget_header(budgets: KeyBudgets, key_id: str, headers: dict[str, str]) -> None:
        """Set ``x-cambist-key-budget-remaining`` (dollars) for a key with a budget."""
        left = budgets.remaining(key_id)
        if left is not None:
            headers[BUDGET_HEADER] = format_decimal(left)

    async def _forward(
        self, parsed: ParsedRequest, plans: list[Plan], request_id: str, started: float,
        tenant: str, created_at: float,
    ) -> tuple[UpstreamResult, Plan]:
        """Try each planned model in turn until one starts answering."""
        attempts = Attempts(deadline=created_at + self._deps.settings.retry_budget_s)
        first: NoHealthyEndpoint | None = None
        for i, plan in enumerate(plans):
            if i:
                log.info("request %s: trying fallback model %s", request_id, plan.target.model)
            try:
                result = await forward(self._deps, parsed, plan.target, attempts, request_id,
                                       started, tenant)
            except NoHealthyEndpoint as exc:
                first = first or exc
                continue
            except UpstreamFailed:
                continue
            return result, plan
        if attempts.failures:
            raise UpstreamFailed(attempts.failures)
        assert first is not None
        raise first

    def _respond(self, parsed: ParsedRequest, result: UpstreamResult, meter: Meter,
                 admission: Admission) -> Response:
        # The rate headers as the buckets stand before the settle corrects the
        # token take, into the head already encoded (six per response).
        rate = admission.raw_headers()
        response = self._response(parsed, result, meter, admission.extra)
        response.raw_headers += rate
        return response

    def _response(self, parsed: ParsedRequest, result: UpstreamResult, meter: Meter,
                  extra: dict[str, str]) -> Response:
        headers = {
            **extra,
            "x-request-id": meter.request_id,
            "x-cambist-model": meter.model,
            "x-cambist-endpoint": result.route.id,
            "x-cambist-supplier": result.route.supplier,
            "x-cambist-attempts": str(result.attempts),
        }
        if result.passthrough:
            meter.release()
            log.info(
                "upstream %s refused request %s with %s",
                result.route.id, meter.request_id, result.response.status,
            )
            media = result.response.headers.get("content-type", "application/json")
            return Response(result.body, result.response.status, headers, media_type=media)
        if result.events is not None:
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"
            return RelayResponse(StreamRelay(self._deps, parsed, result, meter), headers)
        usage = usage_of_body(result.parsed or {}, parsed.prompt_tokens)
        charged = meter.settle(result.route, usage, "ok", result.ttfb_ms)
        budgets = self._deps.budgets
        if meter.on_charge is not None and budgets is not None:  # what is left after this charge
            self._budget_header(budgets, meter.principal.key_id, headers)
        self._deps.metrics.served(meter.model, result.route.id, meter.elapsed_ms(), result.ttfb_ms)
        # What the ledger books: the charge rounded once to whole micro-dollars.
        headers["x-cambist-cost"] = format_decimal(quantize_usd(charged))
        return Response(result.body, 200, headers, media_type="application/json")

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: every priced model with at least one healthy endpoint
        (priced by the price list, else by its endpoints' declared prices), with
        the privacy tiers it is available in and how many endpoints offer each."""
        principal = self.authenticate(request)
        deps = self._deps
        data = []
        for model in deps.routes.models():
            healthy = deps.routes.healthy(model, principal.tenant_id)
            price = self.prices.price(model, "standard")
            if not healthy or price is None:
                continue
            data.append({
                "id": model,
                "object": "model",
                "created": int(min(r.endpoint.created_at for r in healthy)),
                "owned_by": "cambist",
                "pricing": {
                    "prompt": format_decimal(price.input_per_mtok),
                    "completion": format_decimal(price.output_per_mtok),
                },
                "context_length": max(r.endpoint.context_length for r in healthy),
                "endpoints": len(healthy),
                "tiers": tier_counts(healthy),
            })
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )
