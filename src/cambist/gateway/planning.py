"""Which models a request may be served by, at what price, before any upstream
sees it: one :class:`Plan` per target model that has a price, passes the
caller's ``max_price``, has endpoints the routing policy admits and fits the
request in its context; the reason the others cannot serve it is kept so the
primary model's error is what the caller sees when nothing can. A model whose
healthy endpoints do not offer the request's privacy tier cannot serve it
(400 ``privacy_tier_unavailable`` naming the tier and the model): the request
is never served in a lower tier. Prices are looked up for the request's tier
(falling back to the standard price, :mod:`.pricing`)."""

from __future__ import annotations

from dataclasses import dataclass

from cambist.domain.billing import ModelPrice, PriceList
from cambist.domain.errors import CambistError
from cambist.gateway.errors import (
    ModelNotFound,
    ModelNotPriced,
    NoEndpointMatchesPolicy,
    NoHealthyEndpoint,
    PrivacyTierUnavailable,
)
from cambist.gateway.policy import DEFAULT_POLICY, Target
from cambist.gateway.protocol import ParsedRequest, check_context_length
from cambist.gateway.routing import RoutingTable

__all__ = ["Plan", "plan_targets"]


@dataclass(frozen=True, slots=True)
class Plan:
    """A model that can be tried, and what the caller pays for it."""

    target: Target
    price: ModelPrice


def _plan(table: RoutingTable, prices: PriceList, request: ParsedRequest, target: Target,
          tenant: str | None) -> Plan:
    model, policy = target.model, target.policy
    price = prices.price(model, policy.privacy)
    visible = table.visible(model, tenant)
    healthy = [r for r in visible if r.endpoint.healthy and r.usable]
    if not healthy:
        if table.knows(model) or price is not None:
            raise NoHealthyEndpoint(f"no healthy endpoint serves {model} right now")
        raise ModelNotFound(f"The model '{model}' does not exist", param="model")
    if not any(policy.privacy in r.tiers for r in healthy):
        raise PrivacyTierUnavailable(model, policy.privacy)
    if price is None:
        raise ModelNotPriced(f"model {model} is not priced")
    policy.check_price(price)
    admitted = [r for r in visible if r.admitted_by(policy, request.parameters)]
    if policy.order and not policy.allow_fallbacks:
        admitted = [r for r in admitted if r.order_rank(policy) < len(policy.order)]
    if not admitted:
        raise NoEndpointMatchesPolicy(
            f"no endpoint of {model} matches the request's provider options", param="provider")
    candidates = table.candidates(model, tenant, policy, request.parameters)
    if not candidates:
        raise NoHealthyEndpoint(
            f"no healthy endpoint of {model} that matches the provider options right now")
    check_context_length(request, max(r.endpoint.context_length for r in candidates))
    return Plan(target, price)


def plan_targets(table: RoutingTable, prices: PriceList, request: ParsedRequest,
                 tenant: str | None) -> tuple[list[Plan], CambistError | None]:
    """Plans for the request's target models, in order, and the primary model's
    error (``None`` when it can be tried)."""
    plans: list[Plan] = []
    primary: CambistError | None = None
    targets = request.targets or (Target(request.model, DEFAULT_POLICY),)
    for i, target in enumerate(targets):
        try:
            plans.append(_plan(table, prices, request, target, tenant))
        except CambistError as exc:
            if i == 0:
                primary = exc
    return plans, primary
