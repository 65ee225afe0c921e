"""Plans: what a tenant may spend per minute, what it is granted, and which
plan each tenant is on.

A plan caps requests per minute and tokens per minute, once per API key and
once per tenant (all its keys together). It may also grant dollars of
inference: a *daily allowance* (resets every day at ``allowance_reset_hour``,
UTC) and a *monthly pool* (resets at the start of each UTC calendar month),
spent before the tenant's prepaid balance (:mod:`cambist.ledger.grants`).
Plans are declared in configuration (``[[plans]]``, which add to or replace
the shipped :data:`DEFAULT_PLANS` by name); ``tenant_plans`` maps tenant ids
to plan names, and every other tenant is on the default plan. The gateway
enforces the limits (``cambist.gateway.limits``); the wallet spends the grants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from cambist.domain.money import to_micros

__all__ = ["DEFAULT_PLAN", "DEFAULT_PLANS", "Plan", "PlanBook", "merge_plans", "plan_from_table"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Per-minute limits of one plan (every limit a positive integer)."""

    name: str
    requests_per_minute: int
    """Per API key."""
    tokens_per_minute: int
    """Per API key: prompt plus completion tokens."""
    tenant_requests_per_minute: int
    """All the tenant's keys together."""
    tenant_tokens_per_minute: int
    """All the tenant's keys together."""
    daily_allowance: Decimal = Decimal(0)
    """Dollars of inference granted per day (spent first)."""
    monthly_pool: Decimal = Decimal(0)
    """Dollars of inference granted per calendar month (spent after the allowance)."""
    max_tokens: int | None = None
    """Most completion tokens one request may ask for (``None``: the gateway's cap)."""
    grant_micros: tuple[int, int] = field(init=False, repr=False, compare=False)
    """The daily allowance and monthly pool in whole micro-dollars (worked out
    once: the wallet asks for them on every request)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a plan needs a name")
        for attr in ("requests_per_minute", "tokens_per_minute",
                     "tenant_requests_per_minute", "tenant_tokens_per_minute"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"plan {self.name!r}: {attr} must be a positive integer")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(
                self.max_tokens, int) or self.max_tokens < 1):
            raise ValueError(f"plan {self.name!r}: max_tokens must be a positive integer")
        for attr in ("daily_allowance", "monthly_pool"):
            value = getattr(self, attr)
            if (isinstance(value, bool) or not isinstance(value, Decimal | int)
                    or not Decimal(value).is_finite() or value < 0):
                raise ValueError(f"plan {self.name!r}: {attr} must be a non-negative "
                                 "amount of dollars")
            object.__setattr__(self, attr, Decimal(value))
        object.__setattr__(self, "grant_micros",
                           (to_micros(self.daily_allowance), to_micros(self.monthly_pool)))

    @property
    def grants(self) -> bool:
        """Whether the plan grants any allowance or pool."""
        return self.daily_allowance > 0 or self.monthly_pool > 0


DEFAULT_PLANS: tuple[Plan, ...] = (
    Plan("free", 20, 40_000, 40, 100_000, daily_allowance=Decimal("0.05"), max_tokens=4096),
    Plan("pro", 3_000, 2_000_000, 10_000, 10_000_000, monthly_pool=Decimal(20)),
    Plan("pro_plus", 10_000, 10_000_000, 30_000, 30_000_000,
         daily_allowance=Decimal(1), monthly_pool=Decimal(60)),
    Plan("max", 30_000, 50_000_000, 100_000, 150_000_000,
         daily_allowance=Decimal(5), monthly_pool=Decimal(200)),
    Plan("payg", 3_000, 2_000_000, 10_000, 10_000_000),
)
"""The shipped plans, shaped like Free / Pro / Pro+ / Max, and pay-as-you-go
(Pro's limits, no allowance, no pool: every charge is prepaid credit)."""

DEFAULT_PLAN = "payg"
"""The plan of a tenant ``tenant_plans`` does not name: generous enough that
the demo and ordinary use never meet it, and granting nothing."""

_FIELDS = ("requests_per_minute", "tokens_per_minute",
           "tenant_requests_per_minute", "tenant_tokens_per_minute")
_GRANTS = ("daily_allowance", "monthly_pool")
_OPTIONAL = ("max_tokens",)


def _dollars(name: str, attr: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"plan {name!r}: {attr} must be dollars, e.g. \"0.05\"")
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"plan {name!r}: {attr} must be dollars, not {value!r}") from None
    if not out.is_finite() or out < 0:
        raise ValueError(f"plan {name!r}: {attr} must be a non-negative amount of dollars")
    return out


def plan_from_table(raw: Mapping[str, Any]) -> Plan:
    """A plan from a ``[[plans]]`` table. ``tenant_*`` limits default to the
    per-key ones; unknown keys are refused. Raises ``ValueError`` naming the fix."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("each [[plans]] table needs a name")
    unknown = set(raw) - {"name", *_FIELDS, *_GRANTS, *_OPTIONAL}
    if unknown:
        raise ValueError(f"plan {name!r}: unknown keys {sorted(unknown)}; known: "
                         f"name, {', '.join(_FIELDS + _GRANTS + _OPTIONAL)}")
    for required in _FIELDS[:2]:
        if required not in raw:
            raise ValueError(f"plan {name!r} needs {required}")
    return Plan(
        name=name,
        requests_per_minute=raw["requests_per_minute"],
        tokens_per_minute=raw["tokens_per_minute"],
        tenant_requests_per_minute=raw.get("tenant_requests_per_minute",
                                           raw["requests_per_minute"]),
        tenant_tokens_per_minute=raw.get("tenant_tokens_per_minute", raw["tokens_per_minute"]),
        daily_allowance=_dollars(name, "daily_allowance", raw.get("daily_allowance", 0)),
        monthly_pool=_dollars(name, "monthly_pool", raw.get("monthly_pool", 0)),
        max_tokens=raw.get("max_tokens"),
    )


def merge_plans(declared: Iterable[Plan], base: Iterable[Plan] = DEFAULT_PLANS
                ) -> tuple[Plan, ...]:
    """``base`` with ``declared`` added, a declared plan replacing one of the same
    name. Raises ``ValueError`` when ``declared`` names a plan twice."""
    out = {p.name: p for p in base}
    seen: set[str] = set()
    for plan in declared:
        if plan.name in seen:
            raise ValueError(f"plan {plan.name!r} is declared twice")
        seen.add(plan.name)
        out[plan.name] = plan
    return tuple(out.values())


class PlanBook:
    """Which plan each tenant is on (read-only once built; O(1) lookups)."""

    def __init__(self, plans: Iterable[Plan] = DEFAULT_PLANS,
                 tenant_plans: Mapping[str, str] | None = None,
                 default: str = DEFAULT_PLAN) -> None:
        self._plans = {p.name: p for p in plans}
        known = ", ".join(sorted(self._plans))
        if default not in self._plans:
            raise ValueError(f"default plan {default!r} is not a plan; known: {known}")
        self._default = self._plans[default]
        self._tenants: dict[str, Plan] = {}
        for tenant, name in (tenant_plans or {}).items():
            if name not in self._plans:
                raise ValueError(f"tenant {tenant!r} is on plan {name!r}, which is not a "
                                 f"plan; known: {known}")
            self._tenants[tenant] = self._plans[name]

    @property
    def default(self) -> Plan:
        """The plan of tenants not mapped to another."""
        return self._default

    def plans(self) -> list[Plan]:
        """Every plan, in declaration order."""
        return list(self._plans.values())

    def plan_of(self, tenant_id: str) -> Plan:
        """The plan ``tenant_id`` is on."""
        return self._tenants.get(tenant_id, self._default)

    def grants_in_use(self) -> bool:
        """Whether any tenant is on a plan with an allowance or a pool (the
        default plan, or one ``tenant_plans`` maps a tenant to)."""
        return self._default.grants or any(p.grants for p in self._tenants.values())
