"""Local endpoints through a real exchange: register a reference engine started
by hand, list, probe and call it (priced by the declared-price fallback), then
remove it; only admin keys may register or remove; bad URLs are refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess, reference_engine

pytestmark = pytest.mark.e2e

SERVED = "e2e-local-qwen"  # a name the price list does not know


@pytest.fixture
def engine_url() -> Iterator[str]:
    """A reference engine on a free port, stopped at the end."""
    with reference_engine(SERVED) as url:
        yield url

def _wait_for_model(client: httpx.Client, model: str, present: bool = True) -> dict | None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        if (model in models) == present:
            return models.get(model)
        time.sleep(0.2)
    raise AssertionError(f"{model} {'never appeared' if present else 'never left'}")


def test_local_endpoint_lifecycle(exchange: ExchangeProcess, engine_url: str) -> None:
    demo = exchange.connection["demo_key"]
    r = exchange.cli("endpoints", "add", engine_url, "--model", SERVED, "--price-in", "0.02",
                     "--price-out", "0.05", "--quantization", "bf16", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    ep = json.loads(r.stdout)
    assert (ep["kind"], ep["model"], ep["url"]) == ("local", SERVED, engine_url)
    listed = exchange.cli("endpoints", "list", "--json")
    assert ep["id"] in {e["id"] for e in json.loads(listed.stdout)["data"]}
    probe = exchange.cli("endpoints", "probe", ep["id"], "--json")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    got = json.loads(probe.stdout)
    assert got["ok"] and got["serves_model"] and got["latency_ms"] is not None
    with exchange.client(demo) as c:
        seen = c.get("/v1/endpoints").json()["data"]
        assert ep["id"] in {e["id"] for e in seen}
        assert all("api_key_env" not in e for e in seen)
        model = _wait_for_model(c, SERVED)
        assert model is not None
        assert model["pricing"] == {"prompt": "0.0260", "completion": "0.0650"}  # x 1.30
    sdk = openai.OpenAI(base_url=exchange.base_url + "/v1", api_key=demo, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model=SERVED, max_tokens=16, messages=[{"role": "user", "content": "Hello there"}])
    done = raw.parse()
    assert done.choices[0].message.content and done.usage is not None
    assert raw.headers["x-cambist-endpoint"] == ep["id"]
    stream = sdk.chat.completions.create(model=SERVED, max_tokens=8, stream=True,
                                         messages=[{"role": "user", "content": "Count"}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    r = exchange.cli("endpoints", "remove", ep["id"])
    assert r.returncode == 0, r.stdout + r.stderr
    with exchange.client(demo) as c:
        _wait_for_model(c, SERVED, present=False)
        assert ep["id"] not in {e["id"] for e in c.get("/v1/endpoints").json()["data"]}


def test_only_admins_register_and_bad_urls_are_refused(exchange: ExchangeProcess) -> None:
    body = {"url": "http://127.0.0.1:9/v1", "model": "m", "input_price_per_mtok": "0",
            "output_price_per_mtok": "0"}
    with exchange.client(exchange.connection["demo_key"]) as c:
        r = c.post("/v1/endpoints", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert c.delete("/v1/endpoints/ep_anything").status_code == 403
    with exchange.client() as admin:
        for url in ("ftp://127.0.0.1:9/v1", "http://user:pass@127.0.0.1:9/v1"):
            r = admin.post("/v1/endpoints", json={**body, "url": url})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "url"
    r = exchange.cli("endpoints", "add", "ftp://h/v1", "--model", "m", "--price-in", "0",
                     "--price-out", "0")
    assert r.returncode == 1 and "http or https" in r.stderr
