"""Keys and tenants through a real exchange: the key lifecycle, idempotent
mutations, the CLI, revocation reaching another process within a second, and
cross-tenant isolation on every REST route of the control plane.

The isolation tests enumerate ``/openapi.json``, so routes added later are
covered without editing this file: for each route, tenant B's keys are aimed
at tenant A's resources (A's ids in path parameters, ``tenant=A`` in the query
or body) and must be refused (403/404, a validation error at worst) without
ever returning A's data; inference keys must be refused every mutation and
every admin-only read; afterwards A's keys, lease and balance are unchanged.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.exchange_process import ExchangeProcess, _env, free_port

pytestmark = pytest.mark.e2e

# Not control-plane resources: the model API (authorized in the gateway) and
# public market data, which every key may read.
_SKIP_PREFIXES = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/models",
                  "/v1/responses", "/v1/audio", "/v1/images")
_PUBLIC_READ_PREFIXES = ("/v1/market/", "/v1/catalog/", "/v1/history", "/v1/prices")
_TENANT_FIELDS = ("tenant", "tenant_id", "owner")
_REFUSED = {403, 404}
_REJECTED = {400, 403, 404, 405, 409, 422}  # refused, or invalid before acting


@dataclass(frozen=True)
class Tenant:
    id: str
    admin_key: str
    admin_key_id: str
    inference_key: str
    inference_key_id: str


def _new_tenant(ex: ExchangeProcess, name: str) -> Tenant:
    with ex.client() as admin:
        t = admin.post("/v1/tenants", json={"name": name}).json()
    with ex.client(t["key"]) as own:
        r = own.post("/v1/keys", json={"scope": "inference", "name": "app"})
        assert r.status_code == 201, r.text
    return Tenant(t["id"], t["key"], t["key_id"], r.json()["key"], r.json()["id"])


@pytest.fixture(scope="module")
def tenants(exchange: ExchangeProcess) -> Iterator[tuple[Tenant, Tenant]]:
    suffix = uuid.uuid4().hex[:6]
    a, b = _new_tenant(exchange, f"iso-a-{suffix}"), _new_tenant(exchange, f"iso-b-{suffix}")
    with exchange.client() as admin:
        r = admin.post("/v1/credits", json={"tenant": a.id, "amount": "5",
                                            "idempotency_key": f"iso-{suffix}"})
        assert r.status_code == 201, r.text
    yield a, b


@pytest.fixture(scope="module")
def a_lease(exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant]) -> Iterator[str]:
    a, _ = tenants
    with exchange.client(a.admin_key) as c:
        r = c.post("/v1/leases", json={"gpu": "RTX4090"})
        assert r.status_code == 201, r.text
        lease = r.json()["id"]
        deadline = time.monotonic() + 30  # settle first: starting posts its cost
        while c.get(f"/v1/leases/{lease}").json()["state"] != "running":
            assert time.monotonic() < deadline, "lease never started"
            time.sleep(0.2)
        yield lease
        c.post(f"/v1/leases/{lease}/release")


def test_key_lifecycle(exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    with exchange.client(a.admin_key) as c:
        made = c.post("/v1/keys", json={"scope": "tenant-admin", "name": "ci"})
        assert made.status_code == 201, made.text
        k = made.json()
        assert k["key"].startswith(k["prefix"]) and k["tenant_id"] == a.id
        listed = c.get("/v1/keys").json()["data"]
        assert {x["tenant_id"] for x in listed} == {a.id}
        assert k["id"] in {x["id"] for x in listed}
        text = json.dumps(listed)
        assert "key" not in listed[0] and "secret_hash" not in text and k["key"] not in text
        rotated = c.post(f"/v1/keys/{k['id']}/rotate")
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert (new["scope"], new["name"], new["rotated_from"]) == ("tenant-admin", "ci", k["id"])
    with exchange.client(k["key"]) as old:
        assert old.get("/v1/keys").status_code == 401
    with exchange.client(new["key"]) as fresh:
        assert fresh.get("/v1/keys").status_code == 200
        assert fresh.post(f"/v1/keys/{k['id']}/rotate").status_code == 409  # revoked
        assert fresh.post(f"/v1/keys/{new['id']}/revoke").json()["revoked_at"]
        assert fresh.get("/v1/keys").status_code == 401  # revoked itself
    with exchange.client(a.admin_key) as c:
        active = {x["id"] for x in c.get("/v1/keys", params={"active": True}).json()["data"]}
        assert new["id"] not in active and a.admin_key_id in active


def test_mutations_are_idempotent(exchange: ExchangeProcess,
                                  tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    with exchange.client(a.admin_key) as c:
        before = len(c.get("/v1/keys").json()["data"])
        hdr = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
        first = c.post("/v1/keys", json={"name": "idem"}, headers=hdr)
        again = c.post("/v1/keys", json={"name": "idem"}, headers=hdr)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
        assert len(c.get("/v1/keys").json()["data"]) == before + 1
        other = c.post("/v1/keys", json={"name": "else"}, headers=hdr)
        assert other.status_code == 409
        kid = first.json()["id"]
        body = {"idempotency_key": f"rot-{uuid.uuid4()}"}
        r1, r2 = (c.post(f"/v1/keys/{kid}/rotate", json=body) for _ in range(2))
        assert r1.status_code == r2.status_code == 201 and r1.json() == r2.json()
        new_id = r1.json()["id"]
        body = {"idempotency_key": f"rev-{uuid.uuid4()}"}
        v1, v2 = (c.post(f"/v1/keys/{new_id}/revoke", json=body) for _ in range(2))
        assert v1.status_code == v2.status_code == 200 and v1.json() == v2.json()
        assert len(c.get("/v1/keys").json()["data"]) == before + 2
    with exchange.client() as admin:
        hdr = {"Idempotency-Key": f"tenant-{uuid.uuid4()}"}
        name = f"idem-{uuid.uuid4().hex[:8]}"
        t1, t2 = (admin.post("/v1/tenants", json={"name": name}, headers=hdr) for _ in range(2))
        assert t1.status_code == t2.status_code == 201 and t1.json() == t2.json()
        assert admin.post("/v1/tenants", json={"name": name}).status_code == 409
    with exchange.client(t1.json()["key"]) as replayed_secret:
        assert replayed_secret.get("/v1/keys").status_code == 200


def test_tenant_admin_limits(exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    with exchange.client(a.admin_key) as c:
        assert c.post("/v1/keys", json={"scope": "admin"}).status_code == 403
        assert c.post("/v1/keys", json={"tenant": b.id}).status_code == 403
        assert c.get("/v1/keys", params={"tenant": b.id}).status_code == 403
        for action in ("revoke", "rotate"):
            assert c.post(f"/v1/keys/{b.inference_key_id}/{action}").status_code in _REFUSED
            assert c.post(f"/v1/keys/key_nope/{action}").status_code == 404
    with exchange.client() as admin:  # an admin manages anyone's keys and admin keys
        r = admin.post("/v1/keys", json={"scope": "admin", "name": "ops"})
        assert r.status_code == 201 and r.json()["tenant_id"] is None
        assert admin.post(f"/v1/keys/{r.json()['id']}/revoke").status_code == 200
        assert admin.post("/v1/keys", json={"scope": "inference"}).status_code == 400
    with exchange.client(a.inference_key) as c:
        assert c.post("/v1/keys", json={}).status_code == 403
        assert c.get("/v1/keys").status_code == 403


def test_cli_keys_and_tenants(exchange: ExchangeProcess) -> None:
    def run(*args: str) -> Any:
        r = exchange.cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout) if "--json" in args else r.stdout

    name = f"cli-{uuid.uuid4().hex[:8]}"
    t = run("tenants", "create", name, "--json")
    assert name in run("tenants") and name in run("tenants", "list")
    k = run("keys", "create", "--tenant", t["id"], "--scope", "inference", "--name", "nb",
            "--json")
    assert k["key"].startswith("cb-") and k["scope"] == "inference"
    shown = run("keys", "create", "--tenant", t["id"], "--name", "shown")
    assert re.search(r"secret \(shown once.*\): cb-\S+", shown)
    listed = run("keys", "list", "--tenant", t["id"], "--json")["data"]
    assert {x["id"] for x in listed} >= {t["key_id"], k["id"]}
    new = run("keys", "rotate", k["id"], "--json")
    assert new["rotated_from"] == k["id"] and new["name"] == "nb"
    assert "Revoked" in run("keys", "revoke", new["id"])
    active = {x["id"] for x in run("keys", "list", "--tenant", t["id"], "--active",
                                   "--json")["data"]}
    assert k["id"] not in active and new["id"] not in active
    bad = exchange.cli("keys", "create", "--scope", "root")
    assert bad.returncode != 0


def _start_gateway(ex: ExchangeProcess) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cambist.cli", "gateway", "--port", str(port)],
                            env=_env(ex.home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "cambist gateway exited"
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("cambist gateway did not start")


def test_revocation_reaches_another_process_within_a_second(
    exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with exchange.client(a.admin_key) as c:
        k = c.post("/v1/keys", json={"name": "revoke-timing"}).json()
    proc, base = _start_gateway(exchange)
    try:
        auth = {"authorization": f"Bearer {k['key']}"}
        with httpx.Client(base_url=base, headers=auth, timeout=5) as gw:
            deadline = time.monotonic() + 5
            while gw.get("/v1/models").status_code != 200:
                assert time.monotonic() < deadline, "the gateway never accepted the new key"
                time.sleep(0.05)
            with exchange.client(a.admin_key) as c:
                assert c.post(f"/v1/keys/{k['id']}/revoke").status_code == 200
            revoked_at = time.monotonic()
            while gw.get("/v1/models").status_code != 401:
                assert time.monotonic() - revoked_at < 1.0, "revocation took over a second"
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- isolation on every route ------------------------------------------------


def _routes(ex: ExchangeProcess) -> list[tuple[str, str, dict]]:
    with ex.client() as c:
        spec = c.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/") or path.startswith(_SKIP_PREFIXES):
            continue
        for method, op in ops.items():
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                out.append((method.upper(), path, {**op, "_components": spec["components"]}))
    return out


def _schema(op: dict) -> dict | None:
    schema = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
              .get("schema"))
    for _ in range(3):
        if not schema:
            return None
        if "$ref" in schema:
            schema = op["_components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            schema = next((s for s in schema["anyOf"] if s.get("type") != "null"), None)
    return schema


def _value(name: str, prop: dict, a: Tenant) -> Any:
    if name in _TENANT_FIELDS:
        return a.id
    fixed = {"model": "llama-3.1-8b", "amount": "1", "gpu": "RTX4090", "scope": "inference",
             "url": "http://127.0.0.1:9/v1", "base_url": "http://127.0.0.1:9/v1",
             "idempotency_key": uuid.uuid4().hex, "name": f"iso-{uuid.uuid4().hex[:8]}"}
    if name in fixed:
        return fixed[name]
    prop = next((s for s in prop.get("anyOf", []) if s.get("type") != "null"), prop)
    if "enum" in prop:
        return prop["enum"][0]
    return {"integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(
        prop.get("type", "string"), "x")


def _body(op: dict, a: Tenant) -> tuple[dict | None, bool]:
    """A plausible body aimed at tenant A, and whether it names A."""
    schema = _schema(op)
    if schema is None:
        return None, False
    props = schema.get("properties", {})
    wanted = set(schema.get("required", [])) | {n for n in props if n in _TENANT_FIELDS}
    return ({n: _value(n, props.get(n, {}), a) for n in wanted},
            any(n in _TENANT_FIELDS for n in props))


def _a_id(ex: ExchangeProcess, a: Tenant, path: str, param: str, lease: str) -> str:
    if "key" in param:
        return a.admin_key_id
    if "lease" in param:
        return lease
    if "tenant" in param:
        return a.id
    collection = path.split("/{", 1)[0]
    with ex.client(a.admin_key) as c:
        r = c.get(collection)
    rows = r.json().get("data", []) if r.status_code == 200 else []
    for row in rows:
        if isinstance(row, dict) and a.id in (row.get(f) for f in _TENANT_FIELDS):
            return str(row.get("id") or row.get("name"))
    return f"{param}-of-tenant-a"


def _request(ex: ExchangeProcess, key: str, method: str, path: str, op: dict, a: Tenant,
             lease: str) -> tuple[httpx.Response, bool]:
    """Call a route with ``key`` aimed at A; returns the response and whether
    the request named one of A's resources."""
    targeted = False
    for name in re.findall(r"{(\w+)}", path):
        path = path.replace("{" + name + "}", _a_id(ex, a, path, name, lease))
        targeted = True
    query = {p["name"]: a.id for p in op.get("parameters", [])
             if p["in"] == "query" and p["name"] in _TENANT_FIELDS}
    targeted = targeted or bool(query)
    body, names_a = _body(op, a) if method != "GET" else (None, False)
    with ex.client(key) as c:
        r = c.request(method, path, params=query, json=body)
    return r, targeted or names_a


def _a_state(ex: ExchangeProcess, a: Tenant, lease: str) -> dict:
    with ex.client() as admin:
        keys = {k["id"]: k["revoked_at"] for k in
                admin.get("/v1/keys", params={"tenant": a.id}).json()["data"]}
        bal = admin.get("/v1/balance", params={"tenant": a.id}).json()["data"][0]["balance"]
        state = admin.get(f"/v1/leases/{lease}").json()["state"]
    return {"keys": keys, "balance": bal, "lease": state}


def test_tenant_b_cannot_reach_tenant_a_on_any_route(
    exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant], a_lease: str
) -> None:
    a, b = tenants
    before = _a_state(exchange, a, a_lease)
    secrets = (a.admin_key, a.inference_key)
    problems: list[str] = []
    checked = 0
    for method, path, op in _routes(exchange):
        if method == "GET" and path.startswith(_PUBLIC_READ_PREFIXES):
            continue
        for key in (b.admin_key, b.inference_key):
            r, targeted = _request(exchange, key, method, path, op, a, a_lease)
            if method != "GET" and not targeted:
                continue  # cannot aim at A: it would act for B, which is B's right
            checked += 1
            text = r.text
            if any(s in text for s in secrets):
                problems.append(f"{method} {path}: a secret of A in the response")
            if targeted and r.status_code not in _REJECTED:
                problems.append(f"{method} {path}: HTTP {r.status_code} for B aimed at A")
            if r.status_code < 300 and (a.id in text or a_lease in text):
                problems.append(f"{method} {path}: A's data in B's response")
    assert not problems, "\n".join(problems)
    assert checked >= 10
    assert _a_state(exchange, a, a_lease) == before


def test_inference_keys_cannot_use_admin_routes(
    exchange: ExchangeProcess, tenants: tuple[Tenant, Tenant], a_lease: str
) -> None:
    a, b = tenants
    problems: list[str] = []
    for method, path, op in _routes(exchange):
        if method == "GET":
            if path.startswith(_PUBLIC_READ_PREFIXES) or "{" in path:
                continue
            with exchange.client(b.admin_key) as c:
                if c.get(path).status_code != 403:
                    continue  # not admin-only: tenants may read their own
            r, _ = _request(exchange, a.inference_key, method, path, op, a, a_lease)
            if r.status_code != 403:
                problems.append(f"GET {path}: HTTP {r.status_code} for an inference key")
            continue
        # mutations, aimed at the key's own tenant: an inference key changes nothing
        r, _ = _request(exchange, a.inference_key, method, path, op, a, a_lease)
        if r.status_code not in _REJECTED:
            problems.append(f"{method} {path}: HTTP {r.status_code} for an inference key")
    assert not problems, "\n".join(problems)
    with exchange.client(a.inference_key) as c:  # the named admin routes, strictly
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/tenants"),
                             ("GET", "/v1/events"), ("GET", "/v1/ledger/check")):
            assert c.request(method, path, json={} if method == "POST" else None) \
                .status_code == 403, path
