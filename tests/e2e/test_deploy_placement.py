"""`cambist deploy` places with the solver under the request's constraints, and
`cambist deployments --events` shows what the controller did."""

from __future__ import annotations

import json

from tests.e2e.exchange_process import ExchangeProcess


def test_deploy_with_constraints_and_events(exchange: ExchangeProcess) -> None:
    r = exchange.cli("deploy", "qwen2.5-7b", "--name", "e2e-placed", "--replicas", "2",
                     "--region", "us", "--no-spot", "--max-share", "0.5", "--timeout", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    with exchange.client() as c:
        d = c.get("/v1/deployments/e2e-placed").json()
        assert d["spec"]["regions"] == ["us"] and d["spec"]["spot"] is False
        reps = [x for x in d["replica_details"] if x["state"] == "healthy"]
        assert len(reps) == 2
        assert all(x["region"].startswith("us") for x in reps)
        ev = c.get("/v1/deployments/e2e-placed/events").json()["data"]
        assert len({x["supplier"] for x in reps}) == 2, "\n".join(map(str, ev))
        leases = {x["id"]: x for x in c.get("/v1/leases").json()["data"]}
        assert not any(leases[x["lease_id"]].get("spot") for x in reps
                       if x["lease_id"] in leases)
        ev = c.get("/v1/deployments/e2e-placed/events").json()["data"]
        assert ev[0]["data"]["step"] == "created" and "planned_per_hour" in ev[0]["data"]
    out = exchange.cli("deployments", "--events", "--name", "e2e-placed", "--json")
    assert out.returncode == 0, out.stderr
    assert {e["deployment"] for e in json.loads(out.stdout)["data"]} == {"e2e-placed"}
    table = exchange.cli("deployments", "--events", "--name", "e2e-placed")
    assert "created" in table.stdout and "leased" in table.stdout
    bad = exchange.cli("deploy", "qwen2.5-7b", "--name", "e2e-nowhere", "--region", "mars",
                       "--no-wait")
    assert bad.returncode == 1 and "regions mars" in (bad.stdout + bad.stderr)
    assert exchange.cli("undeploy", "e2e-placed").returncode == 0
