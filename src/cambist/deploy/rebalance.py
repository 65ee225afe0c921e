"""When a cheaper placement pays for moving to it: a pure decision with hysteresis.

A move is make-before-break: new units run (and are paid for) for the spin-up
time while the old ones still serve, then the old ones drain and are
released. Its cost is therefore the spin-up time at both prices, plus a risk
premium per moved unit (a new lease may fail or be preempted; engines take
a while to warm). Its benefit is the $/h saved over a horizon. A move is made
only when the saving over the horizon exceeds the move's cost by the
hysteresis margin, and never within ``min_dwell_s`` of the previous move: a
price that oscillates around the current one then does not make the
deployment flap between offers for savings that never pay back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from cambist.deploy.spec import HELD_PREFIX
from cambist.placement import Plan

__all__ = ["MoveDecision", "MovePolicy", "decide_move"]

_HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class MovePolicy:
    """Re-placement settings (construct with other values to tune)."""

    horizon_s: float = 6 * 3600.0
    """Savings are counted over this long (how long the new prices are trusted)."""
    spin_up_s: float = 300.0
    """Lease-to-routable time: both old and new units are paid for meanwhile."""
    risk_premium: Decimal = Decimal("0.25")
    """$ charged per moved unit for the risk a move carries."""
    hysteresis: float = 0.5
    """The net saving must exceed the move cost by this fraction of it."""
    min_dwell_s: float = 1800.0
    """No move within this long of the deployment's previous one."""
    replan_interval_s: float = 300.0
    """Re-plan at least this often."""
    market_check_s: float = 10.0
    """Re-plan sooner when the offer book changed, but at most this often."""


@dataclass(frozen=True, slots=True)
class MoveDecision:
    """Whether to move, and the numbers behind it (all $ exact)."""

    move: bool
    reason: str
    saving_per_hour: Decimal = Decimal(0)
    move_cost: Decimal = Decimal(0)
    expected_saving: Decimal = Decimal(0)
    """Saving over the horizon less the move cost."""
    add: tuple[str, ...] = ()
    """Market offer ids to lease, one per new unit."""
    drop: tuple[str, ...] = field(default=())
    """Lease ids to drain and release once the new units serve."""


def decide_move(plan: Plan, name: str, held: Mapping[str, Decimal], policy: MovePolicy,
                now: float, last_move_at: float | None) -> MoveDecision:
    """Compare ``plan`` (solved on held units plus the market) with the held units
    (lease id -> $/h) and decide; see the module docstring."""
    wp = plan.workloads.get(name)
    if wp is None or not wp.feasible:
        return MoveDecision(False, "no feasible placement")
    add, keep = [], set()
    for a in wp.assignments:
        if a.offer_id.startswith(HELD_PREFIX):
            keep.add(a.offer_id[len(HELD_PREFIX):])
        else:
            add += [a.offer_id] * a.units
    drop = tuple(sorted(set(held) - keep))
    if not add and not drop:
        return MoveDecision(False, "already placed best")
    now_cost = sum(held.values(), Decimal(0))
    saving = now_cost - wp.cost_per_hour
    new_cost = sum((a.cost_per_hour for a in wp.assignments
                    if not a.offer_id.startswith(HELD_PREFIX)), Decimal(0))
    old_cost = sum((held[d] for d in drop), Decimal(0))
    spin_h = Decimal(repr(policy.spin_up_s)) / _HOUR
    move_cost = spin_h * (new_cost + old_cost) + policy.risk_premium * (len(add) + len(drop))
    net = saving * Decimal(repr(policy.horizon_s)) / _HOUR - move_cost
    if saving <= 0:
        move, why = False, "the new placement is not cheaper"
    elif last_move_at is not None and now - last_move_at < policy.min_dwell_s:
        move, why = False, "moved recently (dwell time)"
    elif net <= move_cost * Decimal(repr(policy.hysteresis)):
        move, why = False, "saving does not pay back the move with margin"
    else:
        move, why = True, "saving pays back the move"
    return MoveDecision(move, why, saving, move_cost, net, tuple(add), drop)
