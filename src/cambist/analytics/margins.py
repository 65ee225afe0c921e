"""Margins, spread and cost per token/query: pure functions over rows.

Definitions (``R`` revenue, window ``W``):

* ``revenue``: the inference charges, sum of usage ``price``.
* ``compute_cost``: the usage records' attributed cost (busy share of the
  lease for own deployments; the declared per-token price for external and
  local endpoints). ``spread = revenue - compute_cost``;
  ``compute_margin = spread / revenue``.
* ``lease_cost``: every platform lease (no owner) accrued per second inside
  ``W``: ``price_per_hour x seconds running in W / 3600``.
* ``idle_cost = lease_cost - compute_cost of pooled usage`` (what leased
  capacity cost while no token was being made; negative if the engines beat
  their nominal capacity). It is allocated to pooled usage rows in proportion
  to completion tokens, so a group's ``effective_cost = compute_cost + its
  idle share`` and ``effective_margin = (revenue - effective_cost) / revenue``.
  Over all groups the effective costs sum to ``lease_cost`` plus the direct
  (non-pooled) compute cost, exactly.
* ``cost_per_mtok = effective_cost x 1e6 / completion_tokens`` (output tokens,
  reasoning included); ``reasoning_cost`` is the part of ``effective_cost``
  falling on reasoning tokens (``reasoning / completion`` of it);
  ``cost_per_query = effective_cost / requests``.

Allocations are kept to 1e-12 dollars (exact sums); round for display only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from cambist.analytics.rows import LeaseRow, UsageRow
from cambist.analytics.window import Window, overlap_seconds, seconds_decimal

__all__ = [
    "GROUPINGS",
    "MarginRow",
    "allocate_idle",
    "group_key",
    "lease_cost",
    "margin_rows",
    "margin_total",
]

_PICO = Decimal("1e-12")
_MTOK = Decimal(1_000_000)
GROUPINGS = ("model", "tenant", "supplier", "endpoint")


@dataclass(frozen=True, slots=True)
class MarginRow:
    """Money and tokens of one group (``None`` ratios: no revenue/tokens)."""

    key: str
    requests: int
    prompt_tokens: int
    visible_tokens: int
    reasoning_tokens: int
    revenue: Decimal
    compute_cost: Decimal
    effective_cost: Decimal
    reasoning_cost: Decimal
    spread: Decimal
    compute_margin: Decimal | None
    effective_margin: Decimal | None
    cost_per_mtok: Decimal | None
    cost_per_query: Decimal | None


def lease_cost(leases: Iterable[LeaseRow], window: Window) -> Decimal:
    """What the platform's leases (owner ``None``) cost inside ``window``,
    accrued per second of running (``started_at`` to ``ended_at`` or still on)."""
    total = Decimal(0)
    for lease in leases:
        if lease.owner is not None:
            continue
        secs = seconds_decimal(overlap_seconds(lease.started_at, lease.ended_at, window))
        total += (lease.price_per_hour * secs / 3600).quantize(_PICO, ROUND_HALF_UP)
    return total


def allocate_idle(usage: Sequence[UsageRow], idle: Decimal) -> list[Decimal]:
    """Each row's share of ``idle`` by completion tokens among pooled rows;
    the shares sum to ``idle`` exactly (all zero when no pooled tokens)."""
    weights = [u.completion_tokens if u.pooled else 0 for u in usage]
    total = sum(weights)
    shares = [Decimal(0)] * len(usage)
    if total <= 0:
        return shares
    last = max(i for i, w in enumerate(weights) if w > 0)
    for i, w in enumerate(weights):
        if w > 0 and i != last:
            shares[i] = (idle * w / total).quantize(_PICO, ROUND_DOWN)
    shares[last] = idle - sum(shares, Decimal(0))
    return shares


def group_key(by: str) -> Callable[[UsageRow], str]:
    """The grouping function for ``by`` (one of ``GROUPINGS``)."""
    keys: dict[str, Callable[[UsageRow], str]] = {
        "model": lambda u: u.model,
        "tenant": lambda u: u.tenant_id,
        "supplier": lambda u: u.supplier or "(none)",
        "endpoint": lambda u: u.endpoint_id or "(none)",
    }
    if by not in keys:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    return keys[by]


def _ratio(num: Decimal, den: Decimal) -> Decimal | None:
    return num / den if den != 0 else None


def _row(key: str, usage: Sequence[UsageRow], shares: Sequence[Decimal],
         extra_cost: Decimal = Decimal(0)) -> MarginRow:
    revenue = sum((u.price for u in usage), Decimal(0))
    compute = sum((u.compute_cost for u in usage), Decimal(0))
    effective = compute + sum(shares, Decimal(0)) + extra_cost
    completion = sum(u.completion_tokens for u in usage)
    reasoning = sum(u.reasoning_tokens for u in usage)
    return MarginRow(
        key=key, requests=len(usage), prompt_tokens=sum(u.prompt_tokens for u in usage),
        visible_tokens=sum(u.visible_tokens for u in usage), reasoning_tokens=reasoning,
        revenue=revenue, compute_cost=compute, effective_cost=effective,
        reasoning_cost=(effective * reasoning / completion).quantize(_PICO, ROUND_HALF_UP)
        if completion else Decimal(0),
        spread=revenue - compute, compute_margin=_ratio(revenue - compute, revenue),
        effective_margin=_ratio(revenue - effective, revenue),
        cost_per_mtok=_ratio(effective * _MTOK, Decimal(completion)),
        cost_per_query=_ratio(effective, Decimal(len(usage))))


def margin_rows(usage: Sequence[UsageRow], shares: Sequence[Decimal],
                key: Callable[[UsageRow], str]) -> list[MarginRow]:
    """One row per group of ``usage`` (with its idle ``shares``), largest revenue first."""
    if len(shares) != len(usage):
        raise ValueError("one idle share per usage row")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(usage):
        groups[key(u)].append(i)
    out = [_row(k, [usage[i] for i in idx], [shares[i] for i in idx])
           for k, idx in groups.items()]
    return sorted(out, key=lambda r: (-r.revenue, r.key))


def margin_total(usage: Sequence[UsageRow], shares: Sequence[Decimal],
                 unallocated: Decimal = Decimal(0)) -> MarginRow:
    """The totals row; ``unallocated`` is idle cost no usage row absorbed
    (leases that ran while no pooled token was served)."""
    return _row("total", usage, shares, unallocated)
