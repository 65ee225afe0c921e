"""The placement problem as arrays, built once for both solvers.

Many offers share a (SKU, GPU count), so the performance model is asked once
per (model, SKU, count); each workload then sees its feasible offers as an
index array sorted by $/token, and the per-unit throughput they give it.
Workloads that cannot be placed whatever the others do (nothing fits, not
enough capacity, budget below the cheapest possible cost) are set aside with
a reason before any solver runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.placement.problem import STANDARD_TIER, Policy, WorkloadDemand

__all__ = ["Instance", "build_instance"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Instance:
    """Usable offers and placeable workloads as arrays (see the module docstring)."""

    offers: list[Offer]
    price: FloatArray
    avail: IntArray
    supplier: IntArray
    suppliers: list[str]
    workloads: list[WorkloadDemand]
    cand: list[IntArray]
    """Per workload: indices of feasible offers, cheapest $/token first."""
    tput: list[FloatArray]
    """Per workload: output tokens/s one unit of each candidate serves."""
    by_price: list[IntArray]
    """Per workload: positions into ``cand`` ordered by $/h."""
    current: list[dict[int, int]]
    """Per workload: offer index -> units in force (``Policy.current``)."""
    reasons: dict[str, str]
    """Workloads set aside, with why."""
    group: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per offer: its group of interchangeable offers (same SKU, count, supplier, region
    and privacy tiers), which differ only in price and units; the MILP aggregates them."""

    @property
    def pairs(self) -> int:
        return sum(len(c) for c in self.cand)


@dataclass(slots=True)
class _Quotes:
    """Per model: throughput, prefill speed and lone-sequence decode speed per key."""

    tput: FloatArray
    prefill: FloatArray
    single: FloatArray
    order: IntArray
    """Offer indices by $/token for this model (infeasible keys last)."""


def _model_quotes(model: ModelSpec, keys: list[tuple[str, int]], policy: Policy,
                  price: FloatArray, key_idx: IntArray) -> _Quotes:
    n = len(keys)
    tput, prefill, single = np.zeros(n), np.full(n, 1.0), np.full(n, 1.0)
    for k, (sku, count) in enumerate(keys):
        try:
            est = policy.perf.estimate(model, sku, count)
        except UnquotableOffer:
            continue
        if est.fits and est.throughput_tok_s > 0:
            tput[k] = est.throughput_tok_s
            prefill[k], single[k] = est.prefill_tok_s, est.decode_tok_s_single
    per_offer = tput[key_idx]
    ratio = np.where(per_offer > 0, price / np.maximum(per_offer, 1e-12), np.inf)
    order = np.lexsort((price, ratio)).astype(np.int64)
    return _Quotes(tput, prefill, single, order)


def _region_mask(prefixes: tuple[str, ...], regions: list[str]) -> BoolArray:
    if not prefixes:
        return np.ones(len(regions), dtype=bool)
    return np.array([any(r.startswith(p) for p in prefixes) for r in regions], dtype=bool)


def _index(values: Sequence[str]) -> tuple[list[str], IntArray]:
    names = sorted(set(values))
    pos = {v: i for i, v in enumerate(names)}
    return names, np.array([pos[v] for v in values], dtype=np.int64)


def _why_empty(w: WorkloadDemand, masks: list[tuple[str, BoolArray]]) -> str:
    acc: BoolArray | None = None
    for why, m in masks:
        acc = m if acc is None else acc & m
        if not acc.any():
            return why
    return "no offer satisfies every constraint"


def _precheck(w: WorkloadDemand, price: FloatArray, avail: IntArray, sup: IntArray,
              tput: FloatArray) -> str:
    """Why ``w`` cannot be placed even alone (empty when it may be)."""
    units = int(avail.sum())
    cap = float(avail @ tput)
    if cap + 1e-9 < w.tokens_per_s:
        return (f"needs {w.tokens_per_s:.0f} tok/s; the offers that qualify serve at most "
                f"{cap:.0f} tok/s")
    if units < w.min_replicas:
        return f"needs {w.min_replicas} replicas; the offers that qualify have {units} units"
    if w.max_supplier_share < 1 and not (sup != sup[0]).any():
        return "the supplier share cap needs offers from at least two suppliers"
    if w.budget_per_hour is not None:
        cheapest_rate = float(np.min(price / tput))
        ordp = np.argsort(price)
        by_price = np.repeat(price[ordp], np.minimum(avail[ordp], w.min_replicas))
        floor = max(w.tokens_per_s * cheapest_rate, float(by_price[: w.min_replicas].sum()))
        if floor > float(w.budget_per_hour) * (1 + 1e-9):
            return (f"the cheapest possible placement costs ${floor:.2f}/h, over the "
                    f"${w.budget_per_hour}/h budget")
    return ""


class _Builder:
    """Caches per model, tier, region list and candidate filter while building."""

    def __init__(self, usable: list[Offer], policy: Policy) -> None:
        self.usable, self.policy = usable, policy
        self.price = np.array([float(o.price_per_hour) for o in usable], dtype=np.float64)
        self.regions, self.reg = _index([o.region for o in usable])
        keys_sorted, self.key_idx = _index([f"{o.sku}\x00{o.gpu_count}" for o in usable])
        self.keys = [(k.split("\x00")[0], int(k.split("\x00")[1])) for k in keys_sorted]
        self.quotes: dict[str, _Quotes] = {}
        self.tiers: dict[str, BoolArray] = {}
        self.region_masks: dict[tuple[str, ...], BoolArray] = {}
        self.found: dict[tuple[object, ...], tuple[IntArray, FloatArray, IntArray, str]] = {}

    def _masks(self, w: WorkloadDemand, q: _Quotes) -> list[tuple[str, BoolArray]]:
        if w.privacy not in self.tiers:
            self.tiers[w.privacy] = np.array(
                [w.privacy == STANDARD_TIER or w.privacy in self.policy.tiers(o.id, o.supplier)
                 for o in self.usable], dtype=bool)
        if w.regions not in self.region_masks:
            self.region_masks[w.regions] = _region_mask(w.regions, self.regions)[self.reg]
        key_ok = q.tput > 0
        ttft_ok = key_ok.copy()
        if w.ttft_ms is not None:
            ttft_ok &= (w.prompt_tokens / q.prefill + 1.0 / q.single) * 1000.0 <= w.ttft_ms
        budget = math.inf if w.budget_per_hour is None else float(w.budget_per_hour)
        return [
            (f"{w.model.name} fits on no offered GPU", key_ok[self.key_idx]),
            (f"no offer meets the {w.ttft_ms} ms TTFT SLO", ttft_ok[self.key_idx]),
            (f"no offer in regions {', '.join(w.regions)}", self.region_masks[w.regions]),
            (f"no offer supports privacy tier {w.privacy!r}", self.tiers[w.privacy]),
            ("every qualifying unit costs more than the budget",
             self.price <= budget * (1 + 1e-12)),
        ]

    def candidates(self, w: WorkloadDemand) -> tuple[IntArray, FloatArray, IntArray, str]:
        """Feasible offers by $/token, their throughput, positions by price, or why none."""
        key = (w.model.name, w.ttft_ms, w.prompt_tokens, w.regions, w.privacy,
               w.budget_per_hour)
        hit = self.found.get(key)
        if hit is not None:
            return hit
        q = self.quotes.get(w.model.name)
        if q is None:
            q = self.quotes[w.model.name] = _model_quotes(w.model, self.keys, self.policy,
                                                          self.price, self.key_idx)
        masks = self._masks(w, q)
        mask = masks[1][1] & masks[2][1] & masks[3][1] & masks[4][1]
        cand = q.order[mask[q.order]]
        tput = q.tput[self.key_idx[cand]]
        by_price = np.argsort(self.price[cand], kind="stable").astype(np.int64)
        why = _why_empty(w, masks) if len(cand) == 0 else ""
        self.found[key] = (cand, tput, by_price, why)
        return self.found[key]


def build_instance(demand: Sequence[WorkloadDemand], offers: Sequence[Offer],
                   policy: Policy) -> Instance:
    """Arrays for ``demand`` over the usable ``offers`` (resolved SKU, units available)."""
    usable = [o for o in offers if o.sku is not None and o.available > 0]
    b = _Builder(usable, policy)
    avail = np.array([o.available for o in usable], dtype=np.int64)
    suppliers, sup = _index([o.supplier for o in usable])
    by_id = {o.id: i for i, o in enumerate(usable)}
    tiers = [",".join(sorted(policy.tiers(o.id, o.supplier))) for o in usable]
    _, group = _index([f"{o.sku}\x00{o.gpu_count}\x00{o.supplier}\x00{o.region}\x00{t}"
                       for o, t in zip(usable, tiers, strict=True)])
    inst = Instance(usable, b.price, avail, sup, suppliers, [], [], [], [], [], {}, group)
    seen: set[str] = set()
    for w in demand:
        if w.name in seen:
            raise ValueError(f"workload name {w.name!r} appears twice")
        seen.add(w.name)
        cand, tput, by_price, why = b.candidates(w)
        if w.tokens_per_s <= 0 and w.min_replicas == 0:
            why = ""
        elif not why:
            why = _precheck(w, b.price[cand], avail[cand], sup[cand], tput)
        if why:
            inst.reasons[w.name] = why
            continue
        inst.workloads.append(w)
        inst.cand.append(cand)
        inst.tput.append(tput)
        inst.by_price.append(by_price)
        cur = policy.current.get(w.name, {})
        inst.current.append({by_id[o]: u for o, u in cur.items() if o in by_id and u > 0})
    return inst
