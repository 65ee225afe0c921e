"""Fuzzing the exchange's HTTP surface through a real ``cambist up`` (issue 6).

Two fuzzers run against the shared session ``exchange``:

* **REST API** (``/openapi.json``): schemathesis generates schema-conforming
  (positive) and schema-violating (negative) requests for every operation, a
  bounded number per operation and mode, once with the admin key and once with
  the demo tenant-admin key. No answer may be a 5xx or carry a Python
  traceback, and every 4xx must be the OpenAI error object.
* **Model API** (``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings``; not in the OpenAPI schema): hypothesis sends malformed
  bodies with the demo key (random JSON values, wrong types, huge and negative
  numbers, deep nesting, bytes that are not UTF-8). Almost all name a model that
  does not exist, so nothing is served or charged; a few use ``llama-3.1-8b``
  on the ``llama8b`` deployment with invalid parameters only.

What is kept from harming the shared exchange, and why:

* **Only malformed bodies** (negative mode, and a case is dropped when its body
  still passes the route's own Pydantic model — the server would accept it):
  ``POST /v1/prices`` (a valid one publishes a new price-list version for
  every later test), ``POST /v1/deployments`` (deploys models: engine
  processes, leases), ``POST /v1/leases`` (rents capacity other tests' deploys
  need), ``POST /v1/endpoints`` (registers bogus upstreams the router would
  then pick for real models).
* **Never on a real resource**: ``POST /v1/keys/{key_id}/revoke`` and
  ``/rotate`` (would revoke the admin or demo key every other test uses),
  ``DELETE /v1/deployments/{name}`` (would undeploy ``e2e-8b``),
  ``POST /v1/leases/{lease_id}/release``, ``DELETE /v1/endpoints/{endpoint_id}``
  and ``POST /v1/endpoints/{endpoint_id}/probe``: they are fuzzed, but a case
  whose path parameter names an existing key, deployment, lease or endpoint is
  dropped, so these only ever reach their validation and 404 paths.
* Everything else runs in both modes as generated: creating tenants and keys,
  adding credit to (random, hence unknown) tenants, and every read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from schemathesis import GenerationMode

from cambist.api.routes_billing import PriceBody
from cambist.api.routes_deployments import DeployBody
from cambist.api.routes_endpoints import RegisterBody
from cambist.api.routes_leases import RentBody
from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 8
"""Per operation, per generation mode, per key."""

_BODY_ONLY_INVALID: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/v1/prices"): PriceBody,
    ("POST", "/v1/deployments"): DeployBody,
    ("POST", "/v1/leases"): RentBody,
    ("POST", "/v1/endpoints"): RegisterBody,
}
_NEVER_REAL: dict[tuple[str, str], str] = {
    ("POST", "/v1/keys/{key_id}/revoke"): "key_id",
    ("POST", "/v1/keys/{key_id}/rotate"): "key_id",
    ("DELETE", "/v1/deployments/{name}"): "name",
    ("POST", "/v1/leases/{lease_id}/release"): "lease_id",
    ("DELETE", "/v1/endpoints/{endpoint_id}"): "endpoint_id",
    ("POST", "/v1/endpoints/{endpoint_id}/probe"): "endpoint_id",
}
_TRACEBACK = ("Traceback (most recent call last)", 'File "/')


def _existing_ids(ex: ExchangeProcess) -> set[str]:
    """Every key id, deployment name, lease id and endpoint id now on the exchange."""
    ids: set[str] = set()
    with ex.client() as c:
        for path, field in (("/v1/keys", "id"), ("/v1/deployments?all=true", "name"),
                            ("/v1/leases", "id"), ("/v1/endpoints", "id")):
            r = c.get(path)
            assert r.status_code == 200, r.text
            ids |= {str(row[field]) for row in r.json()["data"]}
    return ids


def _accepts(model: type[BaseModel], body: Any) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def assert_sound(status: int, content: bytes, what: str) -> None:
    """No 5xx, no traceback, and a 4xx is the OpenAI error object."""
    text = content.decode("utf-8", "replace")
    assert status < 500, f"{what} -> {status}: {text[:500]}"
    assert not any(t in text for t in _TRACEBACK), f"{what} -> traceback: {text[:500]}"
    if 400 <= status < 500:
        err = json.loads(content)["error"]
        assert isinstance(err["message"], str) and err["message"], (what, text[:500])
        assert isinstance(err["type"], str), (what, text[:500])


def _fuzz_operation(op: Any, mode: GenerationMode, base_url: str, key: str,
                    keep: Callable[[Any], bool]) -> None:
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        assume(keep(case))
        r = case.call(base_url=base_url, headers={"authorization": f"Bearer {key}"},
                      timeout=30)
        what = (f"{op.label} [{mode.value}] path={case.path_parameters} query={case.query} "
                f"headers={case.headers} body={case.body!r:.300}")
        assert_sound(r.status_code, r.content, what)

    try:
        run()
    except Exception as exc:
        # Nothing to generate (no parameters, hence no invalid request): fine.
        if type(exc).__name__ != "Unsatisfiable":
            raise


@pytest.mark.parametrize("who", ["admin_key", "demo_key"])
def test_rest_api_fuzz(exchange: ExchangeProcess, who: str) -> None:
    key = exchange.connection[who]
    existing = _existing_ids(exchange)
    spec = httpx.get(f"{exchange.base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [res.ok() for res in schema.get_all_operations()]
    assert len(operations) > 30
    for op in operations:
        sig = (op.method.upper(), op.path)
        body_model = _BODY_ONLY_INVALID.get(sig)
        path_param = _NEVER_REAL.get(sig)

        def keep(case: Any, body_model: type[BaseModel] | None = body_model,
                 path_param: str | None = path_param) -> bool:
            if body_model is not None and _accepts(body_model, case.body):
                return False
            return path_param is None or \
                str((case.path_parameters or {}).get(path_param)) not in existing

        modes = [GenerationMode.NEGATIVE] if body_model else \
            [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for mode in modes:
            _fuzz_operation(op, mode, exchange.base_url, key, keep)
    # The keys every other test uses still work.
    with exchange.client(key) as c:
        assert c.get("/v1/prices").status_code == 200
    assert existing <= _existing_ids(exchange)


# --- the model API -----------------------------------------------------------

_MODEL_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_NO_MODEL = "fuzz-no-such-model"

_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e308, 1e-308]),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)
_FIELDS = ("model", "messages", "prompt", "input", "max_tokens", "temperature", "top_p", "n",
           "stream", "stop", "provider", "models", "privacy", "logit_bias", "tools",
           "stream_options", "max_completion_tokens", "seed", "user", "response_format")


@st.composite
def _request_body(draw: st.DrawFn) -> dict[str, Any]:
    """An object with the model API's field names, wrong types and odd values;
    ``model`` names no model (or is not a string)."""
    body: dict[str, Any] = {f: draw(_json) for f in draw(st.sets(st.sampled_from(_FIELDS),
                                                                 max_size=6))}
    body["model"] = draw(st.one_of(st.just(_NO_MODEL), st.just(f"{_NO_MODEL}:floor"), _json))
    if draw(st.booleans()):
        body["messages"] = draw(st.one_of(
            st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]), _json),
                     max_size=3),
            st.just([{"role": "user", "content": "hi"}])))
    return body


def _nested(depth: int) -> bytes:
    return b'{"model": "' + _NO_MODEL.encode() + b'", "messages": ' + b"[" * depth + \
        b"]" * depth + b"}"


_raw_bodies = st.one_of(
    _request_body().map(lambda b: json.dumps(b).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=16).map(
        lambda b: b'{"model": "' + b"\xff\xfe" + b + b'", "messages": []}'),
    st.sampled_from([
        b"", b"{", b"null", b"[]", b'"x"', b"NaN", b'{"model": NaN}',
        b'{"model": "' + _NO_MODEL.encode() + b'", "max_tokens": Infinity}',
        b'{"model": "' + _NO_MODEL.encode() + b'", "max_tokens": -Infinity}',
        b'{"model": "\\ud800", "messages": []}', _nested(50), _nested(3000),
        _nested(100_000), b'{"model": "' + b"m" * 200_000 + b'"}',
    ]),
)


@pytest.fixture(scope="module")
def demo_client(exchange: ExchangeProcess) -> Any:
    with exchange.client(exchange.connection["demo_key"]) as c:
        yield c


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(_MODEL_PATHS), body=_raw_bodies,
       content_type=st.sampled_from(["application/json", "text/plain", None]))
def test_model_api_fuzz(demo_client: httpx.Client, path: str, body: bytes,
                        content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = demo_client.post(path, content=body, headers=headers)
    assert_sound(r.status_code, r.content, f"POST {path} {body[:300]!r}")
    assert r.status_code != 200 or _NO_MODEL not in body.decode("utf-8", "replace")


@st.composite
def _invalid_llama_body(draw: st.DrawFn) -> dict[str, Any]:
    """A request for the real model with at least one invalid parameter."""
    body: dict[str, Any] = {"model": "llama-3.1-8b",
                            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    bad = draw(st.sampled_from(["max_tokens", "temperature", "n", "messages", "stream",
                                "provider", "stop", "top_p", "logit_bias"]))
    body[bad] = draw(st.one_of(
        st.sampled_from([-1, -(10**30), 10**30, 2**63, "many", [], {}, 1e308, -1e308]),
        _json.filter(lambda v: not isinstance(v, bool | None))))
    return body


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(body=_invalid_llama_body(), path=st.sampled_from(_MODEL_PATHS[:2]))
def test_model_api_fuzz_real_model(demo_client: httpx.Client, llama8b: str,
                                   body: dict[str, Any], path: str) -> None:
    if path == "/v1/completions":
        body["prompt"] = "hi"
    r = demo_client.post(path, json=body)
    assert_sound(r.status_code, r.content, f"POST {path} {body!r:.300}")


# --- regressions for what the fuzzers found --------------------------------


@pytest.mark.parametrize("tenant", ["\x93", "/work/main", "a" * 65, "no-such-tenant"])
def test_balance_of_an_unknown_or_malformed_tenant_is_404(exchange: ExchangeProcess,
                                                          tenant: str) -> None:
    with exchange.client() as c:
        r = c.get("/v1/balance", params={"tenant": tenant})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["param"] == "tenant"


@pytest.mark.parametrize("query", [
    "/v1/market/prices?gpu=H100-80GB-SXM&since=nan",
    "/v1/market/prices?gpu=H100-80GB-SXM&until=nan",
    "/v1/market/prices?gpu=H100-80GB-SXM&until=inf",
    "/v1/market/prices?gpu=H100-80GB-SXM&since=-inf",
    "/v1/market/prices?gpu=H100-80GB-SXM&until=1e308",
    "/v1/market/trades?since=nan",
    "/v1/market/signals?since=nan",
    "/v1/market/signals?since=-inf",
    "/v1/usage?since=inf",
    "/v1/events?since=nan",
    "/v1/market/quote?model=llama-3.1-8b&tokens_per_second=inf",
    "/v1/market/quote?model=llama-3.1-8b&ttft_ms=nan",
])
def test_non_finite_or_absurd_times_and_rates_are_400(exchange: ExchangeProcess,
                                                      query: str) -> None:
    with exchange.client() as c:
        r = c.get(query)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] in {"since", "until", "tokens_per_second", "ttft_ms"}


def test_fuzz_left_the_session_keys_working(exchange: ExchangeProcess) -> None:
    for who in ("admin_key", "demo_key"):
        with exchange.client(exchange.connection[who]) as c:
            assert c.get("/v1/balance").status_code == 200
