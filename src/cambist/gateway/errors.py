"""Gateway errors and the one place they become OpenAI-shaped HTTP responses.

Code inside the gateway raises typed errors (``cambist.domain.errors`` and the
subclasses below). :func:`guarded` wraps every gateway route so that, wherever
the routes are mounted, an error becomes
``{"error": {"message", "type", "param", "code"}}`` with the error's status;
anything unexpected becomes a 500 of the same shape, logged with the request
id but never echoed (no traceback in the body). Logs are content-free: an
unexpected error is logged by its type and stack frames only, never its
message, which may quote a request or an upstream's answer. :func:`exception_handlers`
gives a standalone app the same shape for Starlette's own 404/405.
"""

from __future__ import annotations

import functools
import logging
import math
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cambist.domain.errors import (
    CambistError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

__all__ = [
    "AttemptFailure",
    "InvalidApiKey",
    "InvalidJson",
    "ModelNotFound",
    "ModelNotPriced",
    "NoEndpointMatchesPolicy",
    "NoHealthyEndpoint",
    "PayloadTooLarge",
    "PrivacyTierUnavailable",
    "RateLimited",
    "TenantKeyRequired",
    "UpstreamFailed",
    "error_body",
    "error_response",
    "exception_handlers",
    "guarded",
    "log_unexpected",
]

log = logging.getLogger("cambist.gateway")

Endpoint = Callable[[Request], Awaitable[Response]]


class InvalidApiKey(Unauthenticated):
    """Missing, unknown or revoked API key (OpenAI reports these as request errors)."""

    type = "invalid_request_error"


class TenantKeyRequired(PermissionDenied):
    """A platform admin key (no tenant) tried to run inference."""


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class BodyTimeout(InvalidRequest):
    """The client did not finish sending its body in time (a slow or stuck client)."""

    status = 408
    code = "request_timeout"


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class ModelNotFound(NotFound):
    code = "model_not_found"


class NoHealthyEndpoint(CambistError):
    """The model is known but nothing healthy serves it right now."""

    status = 503
    code = "no_healthy_endpoint"
    type = "server_error"
    retryable = True


class ModelNotPriced(CambistError):
    """The model has endpoints but no price in force, so it cannot be billed."""

    status = 503
    code = "model_not_priced"
    type = "server_error"


class NoEndpointMatchesPolicy(InvalidRequest):
    """The model has endpoints, but the request's ``provider`` options exclude all."""

    code = "no_endpoint_matches_policy"


class PrivacyTierUnavailable(InvalidRequest):
    """The model has healthy endpoints, but none offers the request's privacy tier
    (400: the request asks for something this model cannot give it; it is not
    served in a lower tier)."""

    code = "privacy_tier_unavailable"

    def __init__(self, model: str, tier: str) -> None:
        super().__init__(f"no healthy endpoint of {model} offers the {tier} tier",
                         param="privacy")


class RateLimited(CambistError):
    """Over a plan's requests or tokens per minute (OpenAI's 429 shape: ``type`` is
    ``"requests"`` or ``"tokens"``). ``headers`` are the caller's rate headers."""

    status = 429
    code = "rate_limit_exceeded"
    retryable = True

    def __init__(self, kind: str, message: str, retry_after_s: float,
                 headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.type = kind
        self.retry_after_s = retry_after_s
        self.headers = dict(headers)
        self.headers["retry-after"] = str(max(1, math.ceil(retry_after_s)))
        # Whole seconds overstate short waits (50 ms while another process's
        # takes are confirmed); OpenAI's SDKs read this one first.
        self.headers["retry-after-ms"] = str(max(1, math.ceil(retry_after_s * 1000)))


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """Why one upstream attempt failed before the first byte."""

    endpoint_id: str
    supplier: str
    reason: str  # "connect", "timeout", "status_<code>", "read", "empty", "bad_json"
    retryable: bool
    opens_circuit: bool
    retry_after_s: float | None = None


class UpstreamFailed(CambistError):
    """Every attempt failed before the first byte reached the client."""

    status = 502
    code = "upstream_error"
    type = "server_error"
    retryable = True

    def __init__(self, failures: list[AttemptFailure]) -> None:
        reasons = ", ".join(f"{f.endpoint_id}: {f.reason}" for f in failures)
        n = len(failures)
        super().__init__(
            f"the upstream failed on all {n} attempt{'s' if n != 1 else ''} ({reasons})"
        )
        self.failures = list(failures)

    @property
    def attempts(self) -> int:
        return len(self.failures)


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: Exception, headers: Mapping[str, str] | None = None) -> Response:
    """Map any exception to its OpenAI-shaped response (the only mapping in the gateway)."""
    out = dict(headers or {})
    if isinstance(exc, CambistError):
        status, body = exc.status, error_body(exc.message, exc.type, exc.code, exc.param)
        if isinstance(exc, UpstreamFailed):
            out["x-cambist-attempts"] = str(exc.attempts)
        elif isinstance(exc, RateLimited):
            out.update(exc.headers)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = "not_found" if status == 404 else f"http_{status}"
        body = error_body(str(exc.detail), "invalid_request_error", code)
    else:
        status = 500
        body = error_body("internal server error", "server_error", "internal_error")
    return Response(orjson.dumps(body), status, out, media_type="application/json")


def log_unexpected(logger: logging.Logger, exc: BaseException, what: str) -> None:
    """Log an unexpected error content-free: its type and where it was raised
    (stack frames: code, not data), never its message or arguments."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("%s: %s\nTraceback (message omitted):\n%s", what, type(exc).__name__,
                 frames.rstrip())


def guarded(endpoint: Endpoint) -> Endpoint:
    """Wrap a route endpoint so every error it raises becomes an OpenAI-shaped response."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (CambistError, HTTPException) as exc:
            return error_response(exc, _request_headers(request))
        except Exception as exc:
            rid = getattr(request.state, "request_id", "-")
            log_unexpected(log, exc, f"unexpected error serving {request.url.path} "
                                     f"(request {rid})")
            return error_response(exc, _request_headers(request))

    return wrapper


def _request_headers(request: Request) -> dict[str, str]:
    """The request id and the caller's rate headers, once known."""
    rid = getattr(request.state, "request_id", None)
    admission = getattr(request.state, "admission", None)  # gateway.limits.Admission
    out = admission.headers if admission is not None else {}
    if rid:
        out["x-request-id"] = rid
    return out


async def _handle(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException | CambistError):
        log_unexpected(log, exc, f"unexpected error serving {request.url.path}")
    return error_response(exc, _request_headers(request))


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Handlers for a standalone gateway app (Starlette's own 404/405 and a catch-all)."""
    return {HTTPException: _handle, CambistError: _handle, Exception: _handle}
