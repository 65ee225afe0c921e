"""Privacy tiers: which one a request asks for, and what it changes upstream.

A request names its tier in the body field ``privacy`` or the header
``x-cambist-privacy`` (``standard`` when neither is given). Both may be sent
only if they agree; a conflict is refused (400 ``privacy_conflict``) rather
than resolved either way, so a tier is never silently downgraded. Which
endpoints offer which tier is
:attr:`cambist.domain.endpoint.Endpoint.privacy_tiers`; routing admits only
endpoints offering the request's tier (:mod:`.policy`, :mod:`.planning`).

Upstream requests carry an explicit allow-list of headers in every tier
(:func:`upstream_headers`): nothing of the caller's request headers is ever
forwarded, only the content type, a fixed user agent, the upstream's own shared
credential and a request id. In ``anonymous`` that id is fresh and random per
upstream request (not the one the caller sees) and the body loses its
identity fields (:data:`IDENTITY_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from cambist.domain.endpoint import PRIVACY_TIERS, PrivacyTier
from cambist.domain.errors import InvalidRequest, PermissionDenied
from cambist.domain.ids import new_id

__all__ = [
    "CONTENT_FREE_TIERS",
    "IDENTITY_FIELDS",
    "PRIVACY_HEADER",
    "UPSTREAM_HEADERS",
    "InvalidPrivacyTier",
    "PrivacyConflict",
    "PrivacyTierNotAllowed",
    "enforce_allow_list",
    "parse_privacy",
    "strip_identity",
    "upstream_headers",
]

PRIVACY_HEADER = "x-cambist-privacy"
"""The request header that names the privacy tier (same values as the body field)."""

IDENTITY_FIELDS = ("user", "metadata", "safety_identifier", "prompt_cache_key")
"""Body fields that can identify the end user or tenant: removed in ``anonymous``."""

CONTENT_FREE_TIERS: frozenset[PrivacyTier] = frozenset({"zero_retention", "confidential"})
"""Tiers whose requests leave not even field names in the logs."""

UPSTREAM_HEADERS = frozenset({
    "host", "content-type", "content-length", "accept", "accept-encoding", "connection",
    "user-agent", "authorization", "x-request-id",
})
"""The only headers an upstream request may carry (client defaults included)."""

_BASE_HEADERS = {"content-type": "application/json", "user-agent": "cambist-gateway"}
_ALLOWED = ", ".join(PRIVACY_TIERS)


class InvalidPrivacyTier(InvalidRequest):
    """The request names a privacy tier that does not exist."""

    code = "invalid_privacy_tier"


class PrivacyConflict(InvalidRequest):
    """The ``privacy`` field and the ``x-cambist-privacy`` header disagree."""

    code = "privacy_conflict"


def _tier(value: Any, source: str) -> PrivacyTier:
    for tier in PRIVACY_TIERS:
        if value == tier:
            return tier
    raise InvalidPrivacyTier(f"{source} must be one of {_ALLOWED}", param="privacy")


class PrivacyTierNotAllowed(PermissionDenied):
    """The caller's key or tenant may not use the tier the request names."""

    code = "privacy_tier_not_allowed"


def parse_privacy(body_value: Any, header_value: str | None,
                  allowed: frozenset[str] | None = None) -> PrivacyTier:
    """The request's tier from the body field and the header (see the module docstring).

    ``allowed`` is the caller's policy (its key's and tenant's tiers, ``None``
    for any): a request naming no tier gets the first allowed one in the order
    of ``PRIVACY_TIERS`` (e.g. ``zero_retention`` for a key that must never be
    ``standard``); one naming a tier outside it is refused with 403, since
    serving it in another tier would break what either side was promised.
    """
    body = None if body_value is None else _tier(body_value, "privacy")
    header = None if header_value is None else _tier(header_value.strip(), PRIVACY_HEADER)
    if body is not None and header is not None and body != header:
        raise PrivacyConflict(
            f"the privacy field ({body}) and the {PRIVACY_HEADER} header ({header}) disagree; "
            "send one, or the same tier in both", param="privacy")
    tier = body or header
    if allowed is None:
        return tier or "standard"
    if tier is None:
        for candidate in PRIVACY_TIERS:
            if candidate in allowed:
                return candidate
        raise PrivacyTierNotAllowed("this API key may use no privacy tier; ask an admin to "
                                    "set its tiers", param="privacy")
    if tier not in allowed:
        names = ", ".join(t for t in PRIVACY_TIERS if t in allowed)
        raise PrivacyTierNotAllowed(
            f"this API key may not use the {tier} tier; it may use: {names}", param="privacy")
    return tier


def strip_identity(body: dict[str, Any]) -> None:
    """Remove the fields that could identify the caller from a request body."""
    for name in IDENTITY_FIELDS:
        body.pop(name, None)


def upstream_headers(tier: PrivacyTier, request_id: str,
                     credential: Mapping[str, str]) -> dict[str, str]:
    """The headers of one upstream request: the allow-listed base, the upstream's
    shared ``credential`` and a request id (fresh per request in ``anonymous``)."""
    rid = new_id("req", 12) if tier == "anonymous" else request_id
    return {**_BASE_HEADERS, **credential, "x-request-id": rid}


def enforce_allow_list(request: httpx.Request) -> None:
    """Drop any header not in :data:`UPSTREAM_HEADERS` (e.g. defaults of a shared
    client) from a built upstream request."""
    for name in [n for n in request.headers if n.lower() not in UPSTREAM_HEADERS]:
        del request.headers[name]
