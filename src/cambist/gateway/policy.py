"""Routing policy: the request's OpenRouter-compatible ``provider`` object,
its ``models`` fallback list and the ``:floor``/``:nitro`` model suffixes.

**The default order.** Among the healthy endpoints of a model that the caller
may use, whose circuit is closed, the router picks the lowest *marginal cost*
in $ per Mtok: for own deployments ``avg x load**2`` (``avg`` is the lease's
cost per Mtok at full batch, ``load`` = in flight / ``max_concurrency``), so
idle leased capacity is nearly free and idle replicas attract load; for
external and local endpoints the output price they declare (what each token
costs us, whatever the load). Every request queued beyond ``max_concurrency``
adds a queueing penalty larger than any real price. Ties go to fewer requests
in flight, then the cheaper average cost, then the endpoint id.

**What each option changes** (names match an endpoint's supplier or its id,
case-insensitively):

- ``only``: the candidate set is the endpoints named; ``ignore``: never these.
- ``order``: endpoints named in ``order`` are tried first, in that order; the
  rest follow in the default order (unless ``allow_fallbacks`` is false).
- ``allow_fallbacks`` (default true): false means one attempt only, on the
  first choice (with ``order``, the first named endpoint available; endpoints
  not named are never used). The ``models`` list still applies.
- ``sort``: ``price`` orders by the endpoint's price per Mtok (declared, or the
  lease's cost at full batch) ignoring load; ``throughput`` by the tokens/s a
  request can expect (capacity shared by those in flight), highest first;
  ``latency`` by the observed time to first token, lowest first (unobserved
  last). Suffixes: ``model:floor`` is ``sort=price``, ``model:nitro`` is
  ``sort=throughput`` (an explicit ``sort`` wins).
- ``max_price`` ``{"prompt", "completion"}`` in $/Mtok: compared against the
  price *the caller pays* for the model; if that is higher the request is
  refused (400 ``max_price_exceeded``), or the next model in ``models`` is tried.
- ``data_collection``: ``deny`` drops external endpoints declared to collect
  data (own deployments and local servers never do). Default ``allow``.
- ``zdr``: true keeps only zero-data-retention endpoints (own deployments,
  local servers, externals declared ``zdr``).
- ``require_parameters``: true keeps only endpoints that honour every
  parameter in the request (each endpoint has a supported-parameter set).
- ``quantizations``: only endpoints with one of these (own deployments have
  their model's precision; an endpoint without one counts as ``unknown``).

``models: [...]``: models to try in order after ``model`` when none of the
previous model's endpoints can serve it or every attempt failed before the
first byte. Unknown fields inside ``provider`` are ignored and logged by name
(except in the content-free tiers, where only their count is logged).

The request's privacy tier (:mod:`.privacy`) travels in the policy: only
endpoints offering it are admitted, for every model of the ``models`` list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from cambist.domain.billing import ModelPrice
from cambist.domain.endpoint import PrivacyTier
from cambist.domain.errors import InvalidRequest
from cambist.gateway.privacy import CONTENT_FREE_TIERS

__all__ = [
    "DEFAULT_POLICY",
    "MaxPriceExceeded",
    "RoutingPolicy",
    "Sort",
    "Target",
    "parse_targets",
]

log = logging.getLogger("cambist.gateway")

Sort = Literal["price", "throughput", "latency"]
_SORTS: tuple[Sort, ...] = ("price", "throughput", "latency")
_SUFFIXES: dict[str, Sort] = {":floor": "price", ":nitro": "throughput"}
_KNOWN = frozenset({
    "order", "only", "ignore", "allow_fallbacks", "sort", "max_price", "data_collection",
    "zdr", "require_parameters", "quantizations",
})
MAX_MODELS = 8


class MaxPriceExceeded(InvalidRequest):
    """The caller's price for the model is above the request's ``max_price``."""

    code = "max_price_exceeded"


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The parsed ``provider`` object (names lower-cased)."""

    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    allow_fallbacks: bool = True
    sort: Sort | None = None
    max_prompt: Decimal | None = None
    max_completion: Decimal | None = None
    data_collection: Literal["allow", "deny"] = "allow"
    zdr: bool = False
    require_parameters: bool = False
    quantizations: frozenset[str] | None = None
    privacy: PrivacyTier = "standard"

    @property
    def filters(self) -> bool:
        """Whether any option narrows the candidate set."""
        return bool(self.only is not None or self.ignore or self.zdr
                    or self.privacy != "standard"
                    or self.data_collection == "deny" or self.require_parameters
                    or self.quantizations is not None
                    or (self.order and not self.allow_fallbacks))

    def check_price(self, price: ModelPrice) -> None:
        """Raise ``MaxPriceExceeded`` if the caller's price is above ``max_price``."""
        for limit, actual, part in ((self.max_prompt, price.input_per_mtok, "prompt"),
                                    (self.max_completion, price.output_per_mtok, "completion")):
            if limit is not None and actual > limit:
                raise MaxPriceExceeded(
                    f"{price.model} costs ${actual:f} per million {part} tokens, above "
                    f"provider.max_price.{part} (${limit:f})",
                    param=f"provider.max_price.{part}")


DEFAULT_POLICY = RoutingPolicy()


@dataclass(frozen=True, slots=True)
class Target:
    """One model to try, with the policy that applies to it."""

    model: str
    policy: RoutingPolicy


def _names(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"{param} must be an array of non-empty strings", param=param)
    return tuple(v.lower() for v in value)


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{param} must be a boolean", param=param)
    return value


def _money(value: Any, param: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"{param} must be a number ($ per million tokens)", param=param)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"{param} must be a number ($ per million tokens)",
                             param=param) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(f"{param} must be a non-negative number", param=param)
    return amount


def _log_ignored(what: str, names: list[str], quiet: bool) -> None:
    if names:
        log.info("ignoring %s: %s", what, f"{len(names)} field(s)" if quiet else ", ".join(names))


def _max_price(value: Any, quiet: bool) -> tuple[Decimal | None, Decimal | None]:
    if not isinstance(value, Mapping):
        raise InvalidRequest("provider.max_price must be an object", param="provider.max_price")
    _log_ignored("provider.max_price fields",
                 sorted(str(k) for k in value if k not in ("prompt", "completion")), quiet)
    return (_money(value.get("prompt"), "provider.max_price.prompt"),
            _money(value.get("completion"), "provider.max_price.completion"))


def _policy(provider: Any, privacy: PrivacyTier) -> RoutingPolicy:
    if provider is None:
        return DEFAULT_POLICY if privacy == "standard" else RoutingPolicy(privacy=privacy)
    if not isinstance(provider, Mapping):
        raise InvalidRequest("provider must be an object", param="provider")
    quiet = privacy in CONTENT_FREE_TIERS
    _log_ignored("unknown provider fields",
                 sorted(str(k) for k in provider if k not in _KNOWN), quiet)
    p: dict[str, Any] = {}
    for name in ("order", "only", "ignore", "quantizations"):
        if provider.get(name) is not None:
            p[name] = _names(provider[name], f"provider.{name}")
    for name in ("allow_fallbacks", "zdr", "require_parameters"):
        if provider.get(name) is not None:
            p[name] = _bool(provider[name], f"provider.{name}")
    sort = provider.get("sort")
    if sort is not None and sort not in _SORTS:
        raise InvalidRequest("provider.sort must be one of price, throughput, latency",
                             param="provider.sort")
    collection = provider.get("data_collection")
    if collection is not None and collection not in ("allow", "deny"):
        raise InvalidRequest("provider.data_collection must be allow or deny",
                             param="provider.data_collection")
    prompt, completion = (_max_price(provider["max_price"], quiet)
                          if provider.get("max_price") is not None else (None, None))
    return RoutingPolicy(
        order=p.get("order", ()),
        only=frozenset(p["only"]) if "only" in p else None,
        ignore=frozenset(p.get("ignore", ())),
        allow_fallbacks=p.get("allow_fallbacks", True),
        sort=cast(Sort | None, sort),
        max_prompt=prompt, max_completion=completion,
        data_collection=collection or "allow",
        zdr=p.get("zdr", False), require_parameters=p.get("require_parameters", False),
        quantizations=frozenset(p["quantizations"]) if "quantizations" in p else None,
        privacy=privacy,
    )


def _split_suffix(model: str) -> tuple[str, Sort | None]:
    for suffix, sort in _SUFFIXES.items():
        if model.endswith(suffix) and len(model) > len(suffix):
            return model[: -len(suffix)], sort
    return model, None


def parse_targets(body: Mapping[str, Any], model: str,
                  privacy: PrivacyTier = "standard") -> tuple[Target, ...]:
    """The models to try, in order, each with its policy (carrying the request's
    ``privacy`` tier): ``model`` then the ``models`` fallback list (duplicates
    dropped), suffixes applied."""
    policy = _policy(body.get("provider"), privacy)
    names = [model]
    fallbacks = body.get("models")
    if fallbacks is not None:
        if not isinstance(fallbacks, list) or not fallbacks:
            raise InvalidRequest("models must be a non-empty array of model names",
                                 param="models")
        if len(fallbacks) > MAX_MODELS:
            raise InvalidRequest(f"models takes at most {MAX_MODELS} names", param="models")
        for i, name in enumerate(fallbacks):
            if not isinstance(name, str) or not name.strip():
                raise InvalidRequest(f"models[{i}] must be a non-empty string",
                                     param=f"models[{i}]")
            names.append(name)
    out: list[Target] = []
    seen: set[str] = set()
    for raw in names:
        name, sort = _split_suffix(raw)
        if name in seen:
            continue
        seen.add(name)
        own = policy if policy.sort is not None or sort is None else replace(policy, sort=sort)
        out.append(Target(name, own))
    return tuple(out)
