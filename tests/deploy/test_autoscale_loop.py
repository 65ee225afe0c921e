"""The autoscaling loop drives the controller: replicas follow a load source."""

from __future__ import annotations

from cambist.deploy.autoscale import Autoscaling, LoadSample, ScalePolicy, replica_ages
from cambist.deploy.spec import DeploySpec
from cambist.domain.deployment import ReplicaState
from cambist.domain.events import EventKind
from tests.deploy.conftest import Stack, offer


class Load:
    """A settable demand in output tokens/s."""

    def __init__(self) -> None:
        self.tok_s = 100.0

    async def sample(self, deployment: str, now: float) -> LoadSample | None:
        return LoadSample(now, self.tok_s)


async def test_loop_scales_up_then_down_after_the_billing_minimum(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a", "alpha", "2.00", available=10)]
    await st.publish()
    await st.controller.create("llama-3.1-8b", replicas=1, name="auto",
                               spec=DeploySpec(min_replicas=1, max_replicas=4))
    await st.run(600, dt=10)  # the first replica is 10 minutes old when load rises
    load = Load()
    loop = Autoscaling(st.controller, load, ScalePolicy(
        spin_up_s=60, billing_minimum_s=600, scale_down_delay_s=120, use_forecast=False))
    _, cap = await replica_ages(st.records, "auto", st.clock.now())
    load.tok_s = 2.5 * cap * 0.7  # needs 3 replicas at 70% utilization
    await loop.step(st.clock.now())
    await st.run(5)
    healthy = [r for r in await st.records.replicas("auto") if r.state == ReplicaState.HEALTHY]
    assert len(healthy) == 3
    load.tok_s = 10.0
    for _ in range(10):  # 5 minutes: the new replicas are inside their 10-minute minimum
        await st.run(30, dt=5)
        await loop.step(st.clock.now())
    dep = await st.records.deployment("auto")
    assert dep is not None and dep.replicas == 2  # only the first, older one could go
    for _ in range(12):
        await st.run(30, dt=5)
        await loop.step(st.clock.now())
    await st.run(5)
    live = [r for r in await st.records.replicas("auto") if r.state == ReplicaState.HEALTHY]
    assert len(live) == 1
    scaled = [e["data"] for e in await st.events_of(EventKind.DEPLOY_SCALED)]
    assert [(e["from"], e["to"]) for e in scaled] == [(1, 3), (3, 2), (2, 1)]
    assert all(str(x.state) == "released" for x in await st.records.leases()
               if x.id not in {r.lease_id for r in live})
