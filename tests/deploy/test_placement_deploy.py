"""Deploy chooses offers with the placement solver, under the request's constraints."""

from __future__ import annotations

import pytest

from cambist.deploy.spec import DeploySpec
from cambist.domain.deployment import ReplicaState
from cambist.domain.errors import NoCapacity
from cambist.domain.models import MODEL_CATALOG
from tests.deploy.conftest import Stack, offer


async def _placed(st: Stack, name: str) -> list[tuple[str, str]]:
    """(supplier, offer id) of every healthy replica's lease."""
    out = []
    for r in await st.records.replicas(name):
        if r.state == ReplicaState.HEALTHY and r.lease_id:
            lease = await st.records.lease(r.lease_id)
            assert lease is not None
            out.append((lease.supplier, lease.offer_id))
    return sorted(out)


async def test_region_spot_and_share_constraints_choose_the_offers(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a-us", "alpha", "2.00")]
    st.suppliers["beta"].offers = [offer("b-eu", "beta", "1.00", region="eu-west-1"),
                                   offer("b-us", "beta", "2.50")]
    st.suppliers["gamma"].offers = [offer("g-spot", "gamma", "0.50", spot=True)]
    await st.publish()
    spec = DeploySpec(regions=("us",), spot=False, max_supplier_share=0.5)
    await st.controller.create("llama-3.1-8b", replicas=2, name="d", spec=spec)
    await st.run(5)
    dep = await st.records.deployment("d")
    assert dep is not None and str(dep.state) == "ready"
    # Cheapest would be spot (excluded) or eu (excluded); the share cap of 0.5
    # puts the two replicas on two suppliers.
    assert await _placed(st, "d") == [("alpha", "a-us"), ("beta", "b-us")]


async def test_tokens_per_second_sizes_the_deployment(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a", "alpha", "2.00", available=10)]
    await st.publish()
    dep = await st.controller.create("llama-3.1-8b", name="t",
                                     spec=DeploySpec(tokens_per_s=10_000))
    one = st.controller.perf.estimate(MODEL_CATALOG["llama-3.1-8b"], "H100-80GB-SXM", 1)
    assert (dep.replicas - 1) * one.throughput_tok_s < 10_000 <= dep.replicas * \
        one.throughput_tok_s
    await st.run(5)
    assert len(await _placed(st, "t")) == dep.replicas


async def test_infeasible_request_is_refused_with_the_solvers_reason(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a", "alpha", "2.00")]
    await st.publish()
    with pytest.raises(NoCapacity, match="regions eu"):
        await st.controller.create("llama-3.1-8b", name="x",
                                   spec=DeploySpec(regions=("eu",)))
    with pytest.raises(NoCapacity, match="two suppliers"):
        await st.controller.create("llama-3.1-8b", name="y",
                                   spec=DeploySpec(max_supplier_share=0.5))
