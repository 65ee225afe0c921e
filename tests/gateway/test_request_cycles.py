"""Serving leaves no reference cycles of the gateway's own objects.

The gateway spaces young collections 20,000 allocations apart
(``cambist.app.run.settle_collector``) because requests leave nothing for the
collector to find. A request that did leave a cycle (a callback referring back
to its response, an exception kept by the object its traceback holds, a parser
and its protocol) piles up garbage that the next collection walks: measured at
11-15 ms stalls every few hundred streamed requests (bench/gateway). Here the
real gateway (``cambist.app.run.serve``, SQLite home, the outbox and the
flusher running) serves whole, streamed and refused requests against a
loopback upstream that closes some of its connections and sometimes fails
(an error status, a stream cut short), with the collector
saving what it finds; none of it may be Cambist's. Run in a fresh interpreter:
collector settings are process-wide."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.services import postgres_database, require_redis

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import asyncio, gc, io, json, os, signal, sys, types
    from decimal import Decimal
    from pathlib import Path

    import httpx
    import uvicorn
    from rich.console import Console

    from cambist.app.exchange import open_exchange
    from cambist.app.run import bind, serve
    from cambist.config import load_settings
    from tests.gateway.upstream_app import FakeUpstream

    MODEL = "llama-3.1-8b"
    CONFIG = """log_level = "warning"
    [[upstreams]]
    name = "fake"
    base_url = "{url}"
    models = [{{ name = "{model}", input_price_per_mtok = 0.10, output_price_per_mtok = 0.20 }}]
    """


    def ours(obj):
        code = (getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
                or getattr(obj, "ag_code", None) or getattr(obj, "gi_code", None))
        if code is not None:
            return "/cambist/" in code.co_filename
        if isinstance(obj, types.FunctionType):
            return (obj.__module__ or "").startswith("cambist")
        return (type(obj).__module__ or "").startswith("cambist")


    async def main(home, rounds):
        fake = FakeUpstream("u", served=(MODEL,))
        up_sock = bind("127.0.0.1", 0)
        # Keep-alive of 0.05 s: the upstream closes idle connections between
        # rounds, so the gateway's pool meets closed connections too.
        up = uvicorn.Server(uvicorn.Config(fake.app, lifespan="off", log_level="critical",
                                           timeout_keep_alive=0.05))
        up_task = asyncio.create_task(up.serve(sockets=[up_sock]))
        url = "http://127.0.0.1:%d/v1" % up_sock.getsockname()[1]
        (home / "config.toml").write_text(
            "\\n".join(line.strip() for line in CONFIG.format(url=url, model=MODEL).splitlines()))
        settings = load_settings(home=home, environ=json.loads(sys.argv[3]))
        ex = await open_exchange(settings, "gateway")
        tenant = await ex.keyring.create_tenant("cycles")
        _, key = await ex.keyring.create_key(tenant, "inference", "cycles")
        await ex.wallet.topup(tenant, Decimal("100"), "test:cycles")
        await ex.stop()

        sock = bind("127.0.0.1", 0)
        gateway = asyncio.create_task(
            serve(settings, "gateway", Console(file=io.StringIO()), sock=sock))
        base = "http://127.0.0.1:%d" % sock.getsockname()[1]
        headers = {"authorization": "Bearer " + key}
        body = {"model": MODEL, "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi there"}]}
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(600):
                try:
                    if (await client.get(base + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

            async def burst(n):
                for i in range(n):
                    r = await client.post(base + "/v1/chat/completions", json=body,
                                          headers=headers)
                    assert r.status_code == 200, r.text
                    async with client.stream("POST", base + "/v1/chat/completions",
                                             headers=headers,
                                             json={**body, "stream": True}) as s:
                        assert s.status_code == 200
                        async for _ in s.aiter_bytes():
                            pass
                    r = await client.post(base + "/v1/chat/completions",
                                          json={"model": MODEL}, headers=headers)
                    assert r.status_code == 400, r.text
                    if i % 4 == 3:
                        await asyncio.sleep(0.1)  # past the upstream's keep-alive
                    if i % 4 == 1:  # the upstream fails: a whole answer, then a stream
                        fake.fail_status = 500
                        r = await client.post(base + "/v1/chat/completions", json=body,
                                              headers=headers)
                        fake.fail_status = None
                        assert r.status_code >= 500, r.text
                        fake.die_after = 1
                        async with client.stream("POST", base + "/v1/chat/completions",
                                                 headers=headers,
                                                 json={**body, "stream": True}) as s:
                            text = b"".join([c async for c in s.aiter_bytes()])
                        fake.die_after = None
                        assert b"error" in text, text

            await burst(4)  # warm: pools, caches, tables built on first use
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            await burst(rounds)
            gc.collect()
            found = [o for o in gc.garbage if ours(o)]
            kinds = sorted({type(o).__qualname__ for o in found})
            report = {"garbage": len(gc.garbage), "ours": len(found), "kinds": kinds}
            gc.set_debug(0)
            gc.garbage.clear()
            found.clear()
            gc.enable()
        os.kill(os.getpid(), signal.SIGTERM)  # serve() ends cleanly on SIGTERM
        await gateway
        up.should_exit = True
        await up_task
        print(json.dumps(report))


    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
''')


def _leftovers(home: Path, environ: dict[str, str]) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMBIST_")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), "12", json.dumps(environ)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-4000:]
    report: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def test_serving_leaves_no_cycles_of_cambist_objects(tmp_path: Path) -> None:
    report = _leftovers(tmp_path, {})
    assert report["ours"] == 0, report


def test_serving_on_postgres_and_redis_leaves_no_cycles(tmp_path: Path) -> None:
    """The same with the shared wallet and limits (pushes to Redis) and the
    flusher writing to PostgreSQL."""
    from redis import Redis

    redis = require_redis()
    prefix = f"cambist-test-cycles-{secrets.token_hex(4)}"
    try:
        with postgres_database() as url:
            report = _leftovers(tmp_path, {
                "CAMBIST_DATABASE_URL": url.replace("postgresql://", "postgresql+asyncpg://", 1),
                "CAMBIST_REDIS_URL": redis,
                "CAMBIST_REDIS_PREFIX": prefix,
            })
    finally:
        client = Redis.from_url(redis)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    assert report["ours"] == 0, report
