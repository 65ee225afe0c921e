"""``/v1/endpoints`` over the REST API, the external-upstream configuration and
its upsert into the store, and probes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cambist.config import ConfigError, load_settings
from cambist.domain.endpoint import external_endpoint_id
from cambist.gateway import RoutingRefresh, RoutingTable
from cambist.gateway.registry import list_endpoints, upsert_external_endpoints
from cambist.store.schema import metadata

from .conftest import MODEL, TENANT, Harness, free_port
from .upstream_app import FakeUpstream

BODY = {"model": MODEL, "input_price_per_mtok": "0.05", "output_price_per_mtok": "0.10"}


def auth(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def test_admin_registers_lists_and_removes(gw_local: Harness) -> None:
    api = await gw_local.start_api()
    r = await api.post("/v1/endpoints", json={**BODY, "url": "http://127.0.0.1:9/v1/",
                                               "api_key_env": "MY_LLAMA_KEY",
                                               "quantization": "Q4_K_M"})
    assert r.status_code == 201, r.text
    ep = r.json()
    assert (ep["kind"], ep["url"], ep["supplier"], ep["owner"]) == (
        "local", "http://127.0.0.1:9/v1", "local", None)
    assert (ep["input_price_per_mtok"], ep["quantization"], ep["api_key_env"]) == (
        "0.05", "q4_k_m", "MY_LLAMA_KEY")
    again = await api.post("/v1/endpoints", json={**BODY, "url": "http://127.0.0.1:9/v1"})
    assert again.status_code == 409
    mine = await api.post("/v1/endpoints", json={**BODY, "url": "http://10.0.0.2",
                                                 "tenant": TENANT})
    other = await api.post("/v1/endpoints", json={**BODY, "url": "http://10.0.0.3",
                                                  "tenant": "ten_other"})
    listed = (await api.get("/v1/endpoints")).json()["data"]
    assert len(listed) == 3
    as_tenant = (await api.get("/v1/endpoints", headers=auth(gw_local.secret))).json()["data"]
    assert {e["id"] for e in as_tenant} == {ep["id"], mine.json()["id"]}
    assert all("api_key_env" not in e for e in as_tenant)
    r = await api.get(f"/v1/endpoints/{other.json()['id']}", headers=auth(gw_local.secret))
    assert r.status_code == 403
    assert (await api.delete(f"/v1/endpoints/{ep['id']}")).json()["removed"] is True
    assert (await api.delete(f"/v1/endpoints/{ep['id']}")).status_code == 404
    listed = (await api.get("/v1/endpoints")).json()["data"]
    assert ep["id"] not in {e["id"] for e in listed}


async def test_tenant_keys_cannot_register_remove_or_probe(gw_local: Harness) -> None:
    api = await gw_local.start_api()
    created = (await api.post("/v1/endpoints", json={**BODY, "url": "http://h:1"})).json()
    tenant_admin, _ = gw_local.auth.issue(TENANT, scope="tenant-admin")
    for secret in (gw_local.secret, tenant_admin):
        r = await api.post("/v1/endpoints", json={**BODY, "url": "http://h:2"},
                           headers=auth(secret))
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert (await api.delete(f"/v1/endpoints/{created['id']}",
                                 headers=auth(secret))).status_code == 403
        assert (await api.post(f"/v1/endpoints/{created['id']}/probe",
                               headers=auth(secret))).status_code == 403
    assert (await api.get("/v1/endpoints", headers={"authorization": ""})).status_code == 401


@pytest.mark.parametrize(("change", "param"), [
    ({"url": "ftp://h/v1"}, "url"),
    ({"url": "http://user:pass@h:8000"}, "url"),
    ({"url": "http://:8000"}, "url"),
    ({"url": "http://h:8000/api/generate"}, "url"),
    ({"url": "http://h:8000/v1?key=1"}, "url"),
    ({"url": "h:8000"}, "url"),
    ({"api_key_env": "not a name"}, "api_key_env"),
    ({"api_key_env": "CAMBIST_DATABASE_URL"}, "api_key_env"),
    ({"input_price_per_mtok": "-1"}, "input_price_per_mtok"),
    ({"output_price_per_mtok": "lots"}, "output_price_per_mtok"),
    ({"model": ""}, "model"),
])
async def test_bad_registrations_are_400(gw_local: Harness, change: dict[str, Any],
                                         param: str) -> None:
    api = await gw_local.start_api()
    r = await api.post("/v1/endpoints", json={**BODY, "url": "http://h:8000", **change})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_probe_reports_latency_and_models(gw: Harness) -> None:
    api = await gw.start_api()
    fake = FakeUpstream("p", served=(MODEL, "other"))
    url = await gw.servers.start(fake.app)
    created = (await api.post("/v1/endpoints", json={**BODY, "url": url})).json()
    r = await api.post(f"/v1/endpoints/{created['id']}/probe")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["ok"] and got["serves_model"] and got["models"] == [MODEL, "other"]
    assert got["latency_ms"] >= 0 and got["health_status"] == 200
    dead = (await api.post("/v1/endpoints", json={
        **BODY, "url": f"http://127.0.0.1:{free_port()}"})).json()
    got = (await api.post(f"/v1/endpoints/{dead['id']}/probe")).json()
    assert (got["ok"], got["error"], got["models"]) == (False, "connect", [])
    assert (await api.post("/v1/endpoints/ep_nope/probe")).status_code == 404


CONFIG = """
[[upstreams]]
name = "acme-ai"
base_url = "https://api.acme.example/v1/"
api_key_env = "ACME_API_KEY"
input_price_per_mtok = "0.10"
output_price_per_mtok = "0.30"
zdr = true
supported_parameters = ["temperature"]
models = [
    "llama-3.1-8b",
    { name = "qwen2.5-7b", output_price_per_mtok = "0.50", quantization = "fp8" },
]
"""


def test_upstreams_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CONFIG)
    s = load_settings(home=tmp_path, environ={"CAMBIST_RETRY_BUDGET_S": "12"})
    assert s.retry_budget_s == 12.0
    [up] = s.upstreams
    assert (up.name, up.base_url, up.api_key_env, up.zdr) == (
        "acme-ai", "https://api.acme.example/v1", "ACME_API_KEY", True)
    a, b = up.endpoints(5.0)
    assert a.id == external_endpoint_id("acme-ai", "llama-3.1-8b") != b.id
    assert (a.kind, a.supplier, a.input_price_per_mtok, a.output_price_per_mtok) == (
        "external", "acme-ai", Decimal("0.10"), Decimal("0.30"))
    assert (b.output_price_per_mtok, b.quantization) == (Decimal("0.50"), "fp8")
    assert a.retains_nothing and a.parameters == frozenset({"temperature"})


@pytest.mark.parametrize(("text", "match"), [
    ('[[upstreams]]\nname = "x"\nbase_url = "ftp://h"\nmodels = ["m"]\n'
     'input_price_per_mtok = 1\noutput_price_per_mtok = 1\n', "http or https"),
    ('[[upstreams]]\nname = "x"\nbase_url = "http://h"\nmodels = ["m"]\n', "needs input"),
    ('[[upstreams]]\nname = "x"\nbase_url = "http://h"\nmodels = []\n', "models"),
    ('[[upstreams]]\nname = "x"\nbase_url = "http://h"\nmodels = ["m"]\n'
     'input_price_per_mtok = 1\noutput_price_per_mtok = 1\napi_key_env = "sk-live 123"\n',
     "api_key_env"),
])
def test_upstreams_config_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(home=tmp_path, environ={})


async def test_upsert_is_stable_and_retires_what_left_the_config(
    tmp_path: Path, gw_local: Harness
) -> None:
    (tmp_path / "config.toml").write_text(CONFIG)
    [up] = load_settings(home=tmp_path, environ={}).upstreams
    declared = up.endpoints(1.0)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await upsert_external_endpoints(engine, declared, 1.0, retire_others=True)
        await upsert_external_endpoints(engine, declared, 2.0, retire_others=True)
        rows = await list_endpoints(engine)
        assert sorted(e.id for e in rows) == sorted(e.id for e in declared)
        assert {e.created_at for e in rows} == {1.0}
        assert all(e.api_key_env == "ACME_API_KEY" for e in rows)
        table = RoutingTable(gw_local.clock, credentials={"ACME_API_KEY": "sk-acme"}.get)
        await RoutingRefresh(engine, table, gw_local.clock, declared=declared).step(3.0)
        [route] = table.routes("llama-3.1-8b")
        assert route.endpoint.zdr is True and route.usable
        assert "sk-acme" not in repr(route)
        await upsert_external_endpoints(engine, declared[:1], 4.0, retire_others=True)
        assert [e.id for e in await list_endpoints(engine)] == [declared[0].id]
    finally:
        await engine.dispose()
