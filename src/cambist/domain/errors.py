"""Typed errors raised inside Cambist.

Each subclasses the built-in it resembles and carries what a caller needs to
decide (``retryable``, the supplier, the attempts). The API edge maps them to
HTTP once (``cambist.api.errors`` and ``cambist.gateway.errors``).
"""

from __future__ import annotations

__all__ = [
    "CambistError",
    "Conflict",
    "InsufficientCredit",
    "InvalidRequest",
    "KeyBudgetExceeded",
    "NoCapacity",
    "NotFound",
    "OfferUnavailable",
    "PermissionDenied",
    "SupplierError",
    "Unauthenticated",
    "UnquotableOffer",
]


class CambistError(Exception):
    """Base of every Cambist error."""

    status = 500
    code = "internal_error"
    type = "server_error"
    retryable = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(CambistError, ValueError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class NotFound(CambistError, LookupError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class Conflict(CambistError):
    status = 409
    code = "conflict"
    type = "invalid_request_error"


class Unauthenticated(CambistError, PermissionError):
    status = 401
    code = "invalid_api_key"
    type = "authentication_error"


class PermissionDenied(CambistError, PermissionError):
    status = 403
    code = "permission_denied"
    type = "permission_error"


class InsufficientCredit(CambistError):
    status = 402
    code = "insufficient_quota"
    type = "insufficient_quota"


class KeyBudgetExceeded(CambistError):
    """An API key spent its budget for the period; refused before forwarding."""

    status = 402
    code = "key_budget_exceeded"
    type = "insufficient_quota"


class OfferUnavailable(CambistError, LookupError):
    """The offer expired, vanished or has no free capacity left."""

    status = 409
    code = "offer_unavailable"
    type = "invalid_request_error"


class NoCapacity(CambistError):
    """No offer satisfies the constraints."""

    status = 409
    code = "no_capacity"
    type = "invalid_request_error"


class UnquotableOffer(CambistError, ValueError):
    """The performance model has no figures for this GPU and will not guess."""

    status = 422
    code = "unquotable_offer"
    type = "invalid_request_error"


class SupplierError(CambistError):
    """A supplier adapter failed."""

    status = 502
    code = "supplier_error"
    type = "server_error"

    def __init__(self, message: str, *, supplier: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.supplier = supplier
        self.retryable = retryable
