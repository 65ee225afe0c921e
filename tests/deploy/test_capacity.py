"""Autoscaling in capacity through the real controller: a deficit is leased at the
cheapest $/Mtok (not the cheapest hour, not a count of units of any size), a
surplus goes dearest $/Mtok first, and steady demand over mixed unit sizes
does not make the deployment oscillate."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from cambist.deploy.autoscale import Autoscaling, LoadSample, ScalePolicy
from cambist.deploy.spec import DeploySpec
from cambist.domain.deployment import ReplicaState
from cambist.domain.events import EventKind
from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from tests.deploy.conftest import Stack, offer

MODEL = "llama-3.1-8b"
H100 = "H100-80GB-SXM"


class Load:
    """A settable demand in output tokens/s, with optional +-``noise``."""

    def __init__(self, tok_s: float = 100.0, noise: float = 0.0, seed: int = 1) -> None:
        self.tok_s, self.noise = tok_s, noise
        self.rng = random.Random(seed)

    async def sample(self, deployment: str, now: float) -> LoadSample | None:
        return LoadSample(now, self.tok_s * self.rng.uniform(1 - self.noise, 1 + self.noise))


def eight(oid: str, supplier: str, price: str, available: int = 10) -> Offer:
    """An eight-H100 offer at ``price`` $/GPU-h."""
    return replace(offer(oid, supplier, price, available=available), gpu_count=8, vram_gib=640)


async def _serving_offers(st: Stack, name: str) -> list[str]:
    out = []
    for r in await st.records.replicas(name):
        if r.state == ReplicaState.HEALTHY and r.lease_id:
            lease = await st.records.lease(r.lease_id)
            assert lease is not None
            out.append(lease.offer_id)
    return sorted(out)


async def _step(st: Stack, loop: Autoscaling, seconds: float, dt: float) -> None:
    await loop.step(st.clock.now())
    await st.run(seconds, dt=dt)


async def test_a_deficit_is_leased_at_the_cheapest_cost_per_token(stack: Stack) -> None:
    st = stack
    # Per token (llama-3.1-8b): one H100 at $2.00/h is $0.13/Mtok; an L40S at
    # $0.90/h is cheaper per hour but $0.20/Mtok; eight H100s at $12/h serve
    # 3.2x one H100 for 6x its price ($0.24/Mtok).
    st.suppliers["alpha"].offers = [offer("l40s", "alpha", "0.90", sku="L40S-48GB",
                                          available=20)]
    st.suppliers["beta"].offers = [offer("h100", "beta", "2.00", available=20)]
    st.suppliers["gamma"].offers = [eight("h100x8", "gamma", "1.50")]
    await st.publish()
    await st.controller.create(MODEL, replicas=1, name="auto",
                               spec=DeploySpec(min_replicas=1, max_replicas=20))
    await st.run(60, dt=10)
    assert await _serving_offers(st, "auto") == ["h100"]
    cap = st.controller.placer.unit_tok_s(MODEL_CATALOG[MODEL], H100, 1)
    load = Load(3.9 * cap * 0.7)  # 3.9 H100s of capacity at 70% utilization
    loop = Autoscaling(st.controller, load, ScalePolicy(
        spin_up_s=60, billing_minimum_s=600, scale_down_delay_s=300, use_forecast=False))
    await _step(st, loop, 10, dt=5)
    # Three more H100 units ($6/h for 2.9 units' deficit), none of the cheaper-
    # per-hour L40S (two H100s and four L40S: $7.60/h) or bigger units.
    assert await _serving_offers(st, "auto") == ["h100"] * 4
    scaled = [e["data"] for e in await st.events_of(EventKind.DEPLOY_SCALED)]
    assert [(e["from"], e["to"]) for e in scaled] == [(1, 4)]
    assert scaled[0]["need_tok_s"] == round(3.9 * cap, 1)


async def test_a_surplus_goes_dearest_per_token_first(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a", "alpha", "2.00", available=20)]
    st.suppliers["beta"].offers = [offer("b", "beta", "3.00", available=20)]
    await st.publish()
    await st.controller.create(MODEL, replicas=1, name="auto",
                               spec=DeploySpec(min_replicas=1, max_replicas=20))
    await st.run(60, dt=10)
    cap = st.controller.placer.unit_tok_s(MODEL_CATALOG[MODEL], H100, 1)
    load = Load(3 * cap * 0.7)
    loop = Autoscaling(st.controller, load, ScalePolicy(
        spin_up_s=60, billing_minimum_s=1800, scale_down_delay_s=300, use_forecast=False))
    await _step(st, loop, 60, dt=10)
    assert await _serving_offers(st, "auto") == ["a"] * 3
    # "a" is dearer now; the next units come from "b" (leases keep their price).
    st.reprice("a", "4.00")
    await st.publish()
    load.tok_s = 5 * cap * 0.7
    await _step(st, loop, 60, dt=10)
    assert await _serving_offers(st, "auto") == ["a"] * 3 + ["b"] * 2
    for _ in range(35):  # every unit passes its 30-minute billing minimum
        await _step(st, loop, 60, dt=30)
    assert await _serving_offers(st, "auto") == ["a"] * 3 + ["b"] * 2
    load.tok_s = 2.5 * cap * 0.7
    for _ in range(10):  # past the 5-minute scale-down delay
        await _step(st, loop, 60, dt=30)
    # 2.5 units' worth must stay: the two dearer "b" units go, the three "a" stay.
    assert await _serving_offers(st, "auto") == ["a"] * 3
    down = [e["data"] for e in await st.events_of(EventKind.DEPLOY_SCALED)][-1]
    assert (down["from"], down["to"]) == (5, 3)


async def test_steady_demand_over_mixed_units_does_not_oscillate(stack: Stack) -> None:
    """A simulated day at a steady 20,000 tok/s (+-5% noise each sample) with
    one-, eight-GPU and L40S units listed: the old replica-count autoscaler swung
    between a few and dozens of replicas here; sized in capacity, leases come
    once and stay."""
    st = stack
    st.suppliers["alpha"].offers = [offer("l40s", "alpha", "0.80", sku="L40S-48GB",
                                          available=50)]
    st.suppliers["beta"].offers = [offer("h100", "beta", "2.00", available=50)]
    st.suppliers["gamma"].offers = [eight("h100x8", "gamma", "1.10", available=10)]
    await st.publish()
    await st.controller.create(MODEL, replicas=1, name="auto",
                               spec=DeploySpec(min_replicas=1, max_replicas=64))
    await st.run(60, dt=30)
    load = Load(20_000, noise=0.05)
    loop = Autoscaling(st.controller, load, ScalePolicy(
        target_utilization=0.7, spin_up_s=120, billing_minimum_s=600, scale_down_delay_s=900,
        shrink_band=0.25, use_forecast=False))
    counts = []
    for _ in range(144):  # a day of ten-minute steps
        await _step(st, loop, 600, dt=600)
        dep = await st.records.deployment("auto")
        assert dep is not None
        counts.append(dep.replicas)
    scaled = await st.events_of(EventKind.DEPLOY_SCALED)
    leases = await st.records.leases()
    # One scale-up to the need, then at most a couple of noise-driven top-ups.
    assert len(scaled) <= 3, [e["data"] for e in scaled]
    assert len(leases) <= max(counts) + 3
    assert max(counts[6:]) - min(counts[6:]) <= 1
    held = Counter(await _serving_offers(st, "auto"))
    cap = sum(st.controller.placer.unit_tok_s(MODEL_CATALOG[MODEL], H100, 8 if o == "h100x8"
                                              else 1) for o in held.elements())
    assert 20_000 / 0.7 <= cap <= 21_000 / 0.7 * 1.25
