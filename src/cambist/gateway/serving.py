"""The gateway service: one inference request from key to settled usage.

Order of work: authenticate; read the body under the size limit; parse and
validate it once; find the model's routes and price; reserve credit for the
worst case (prompt estimate plus ``max_tokens``, or the default) before any
upstream sees the request; forward with failover; then settle the actual
usage (never more than was reserved) or release the hold.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cambist.domain.billing import Principal
from cambist.domain.ids import new_id
from cambist.domain.money import quantize_usd
from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import (
    InvalidApiKey,
    ModelNotFound,
    ModelNotPriced,
    NoHealthyEndpoint,
    PayloadTooLarge,
    TenantKeyRequired,
)
from cambist.gateway.metering import Meter, usage_of_body
from cambist.gateway.protocol import Kind, ParsedRequest, check_context_length, parse_request
from cambist.gateway.streaming import RelayResponse, StreamRelay
from cambist.gateway.upstream import UpstreamResult, close_quietly, forward

__all__ = ["GatewayService", "format_decimal"]

log = logging.getLogger("cambist.gateway")


def format_decimal(amount: Decimal) -> str:
    """A Decimal in plain notation (never ``1E-7``), exact."""
    return format(amount, "f")


class GatewayService:
    """Serves the OpenAI-compatible endpoints over injected dependencies."""

    def __init__(self, deps: GatewayDeps) -> None:
        self._deps = deps

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
        """The request body, refusing more than ``max_body_bytes`` without reading it all."""
        limit = self._deps.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = PayloadTooLarge(f"the request body is larger than {limit} bytes")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def context_length(self, model: str, tenant: str | None = None) -> int:
        """The model's context length (0 if unknown); raises if nothing can serve it."""
        healthy = self._deps.routes.healthy(model, tenant)
        if healthy:
            return max(r.endpoint.context_length for r in healthy)
        if self._deps.routes.knows(model) or self._deps.prices.price(model) is not None:
            raise NoHealthyEndpoint(f"no healthy endpoint serves {model} right now")
        raise ModelNotFound(f"The model '{model}' does not exist", param="model")

    async def infer(self, request: Request, kind: Kind) -> Response:
        """Serve one chat, completions or embeddings request."""
        deps = self._deps
        started = time.monotonic()
        created_at = deps.clock.now()
        request_id = new_id("req", 12)
        request.state.request_id = request_id
        principal = self.authenticate(request)
        if principal.tenant_id is None:
            raise TenantKeyRequired(
                "inference needs a tenant API key; platform admin keys have no tenant to bill"
            )
        parsed = parse_request(
            await self.read_body(request), kind, max_tokens_cap=deps.settings.max_tokens_cap
        )
        check_context_length(parsed, self.context_length(parsed.model, principal.tenant_id))
        price = deps.prices.price(parsed.model, "standard")
        if price is None:
            raise ModelNotPriced(f"model {parsed.model} is not priced")
        hold = price.charge(
            parsed.prompt_tokens, parsed.reserve_completion_tokens(deps.settings.default_max_tokens)
        )
        reservation = deps.wallet.reserve(principal.tenant_id, hold, request_id)
        meter = Meter(
            deps.wallet, reservation, price, principal, request_id, parsed.model,
            created_at, started, parsed.stream,
        )
        try:
            result = await forward(deps, parsed, request_id, started, principal.tenant_id)
        except BaseException:
            meter.release()
            raise
        try:
            return self._respond(parsed, result, meter)
        except BaseException:
            meter.release()
            if result.events is not None:
                deps.routes.release(result.route)
                await close_quietly(result.response)
            raise

    def _respond(self, parsed: ParsedRequest, result: UpstreamResult, meter: Meter) -> Response:
        headers = {
            "x-request-id": meter.request_id,
            "x-cambist-endpoint": result.route.id,
            "x-cambist-supplier": result.route.supplier,
            "x-cambist-attempts": str(result.attempts),
        }
        if result.passthrough:
            meter.release()
            log.info(
                "upstream %s refused request %s with %s",
                result.route.id, meter.request_id, result.response.status_code,
            )
            media = result.response.headers.get("content-type", "application/json")
            return Response(result.body, result.response.status_code, headers, media_type=media)
        if result.events is not None:
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"
            return RelayResponse(StreamRelay(self._deps, parsed, result, meter), headers)
        usage = usage_of_body(result.parsed or {}, parsed.prompt_tokens)
        charged = meter.settle(result.route, usage, "ok", result.ttfb_ms)
        # What the ledger books: the charge rounded once to whole micro-dollars.
        headers["x-cambist-cost"] = format_decimal(quantize_usd(charged))
        return Response(result.body, 200, headers, media_type="application/json")

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: every priced model with at least one healthy endpoint."""
        principal = self.authenticate(request)
        deps = self._deps
        data = []
        for model in deps.routes.models():
            healthy = deps.routes.healthy(model, principal.tenant_id)
            price = deps.prices.price(model, "standard")
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
            })
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )
