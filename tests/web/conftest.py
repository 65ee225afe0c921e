"""Fixtures for the dashboard tests: a real exchange with traffic from two
tenants, and Debian's headless Chromium driven by Playwright.

Browser rule (as for the services in ``tests/services.py``): without Chromium
or the ``playwright`` package the browser tests are **skipped** with a message
naming the fix, except under ``CI=true`` where they **fail** (``.ci/run``
installs Chromium). Screenshots go to ``.cambist-test/screenshots/``
(gitignored).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess
from tests.services import in_ci

CHROMIUM = os.environ.get("CAMBIST_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".cambist-test" / "screenshots"


def _browser_missing(reason: str) -> None:
    message = f"headless Chromium is not available ({reason})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"{message}; apt-get install chromium (or set CAMBIST_TEST_CHROMIUM) and "
                "pip install -e '.[test]'")


@dataclass
class Traffic:
    """Who made which requests before the pages were opened."""

    admin_key: str
    demo_key: str
    demo_tenant: str
    other_key: str
    other_tenant: str
    demo_requests: int
    other_requests: int


def chat(ex: ExchangeProcess, key: str, n: int, stream: bool = False) -> set[str]:
    """Send ``n`` chat completions with ``key``; their request ids."""
    client = openai.OpenAI(base_url=ex.base_url + "/v1", api_key=key, max_retries=0)
    ids = set()
    for i in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": f"dashboard {i}"}],
            max_tokens=24, stream=stream)
        ids.add(raw.headers["x-request-id"])
        if stream:
            for _ in raw.parse():
                pass
    return ids


def wait_flushed(ex: ExchangeProcess, key: str, ids: set[str], timeout: float = 15) -> None:
    """Wait until the usage of ``ids`` is in the store (pages read it from there)."""
    deadline = time.monotonic() + timeout
    with ex.client(key) as c:
        while time.monotonic() < deadline:
            got = {u["request_id"] for u in c.get("/v1/usage", params={"limit": 10000})
                   .json()["data"]}
            if ids <= got:
                return
            time.sleep(0.2)
    raise AssertionError(f"usage of {ids - got} not flushed in {timeout}s")


@pytest.fixture(scope="session")
def traffic(exchange: ExchangeProcess, llama8b: str) -> Traffic:
    """Requests from the demo tenant and from a second tenant created here."""
    conn = exchange.connection
    with exchange.client() as admin:
        made = admin.post("/v1/tenants", json={"name": f"web-other-{time.time_ns()}"})
        assert made.status_code == 201, made.text
        other = made.json()
        topup = admin.post("/v1/credits", json={"tenant": other["id"], "amount": "5",
                                                "idempotency_key": f"web-{other['id']}"})
        assert topup.status_code == 201, topup.text
    demo = chat(exchange, conn["demo_key"], 5) | chat(exchange, conn["demo_key"], 1, True)
    mine = chat(exchange, other["key"], 2)
    wait_flushed(exchange, conn["demo_key"], demo)
    wait_flushed(exchange, other["key"], mine)
    return Traffic(conn["admin_key"], conn["demo_key"], conn["demo_tenant"], other["key"],
                   other["id"], len(demo), len(mine))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module: Playwright's sync API keeps an event loop
    running on this thread while it is open, which would break every later
    ``asyncio.run`` in the same process, so it must close before the next module."""
    if not Path(CHROMIUM).exists():
        _browser_missing(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("the playwright package is not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Session:
    """A browser tab signed in (or not) with one key, recording JS errors."""

    page: Any
    base_url: str
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        self.page.goto(self.base_url + path)  # waits for "load": the charts are drawn by then
        return self.page

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser: Any, exchange: ExchangeProcess
        ) -> Iterator[Callable[[str | None], Session]]:
    """``tab(key)``: a fresh browser context signed in through the login page
    with ``key`` (``None``: signed out). Console errors fail the test."""
    made: list[Any] = []

    def make(key: str | None) -> Session:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        made.append(context)
        s = Session(context.new_page(), exchange.base_url)
        s.page.on("console", lambda m: s.errors.append(f"console {m.type}: {m.text}")
                  if m.type == "error" else None)
        s.page.on("pageerror", lambda e: s.errors.append(f"pageerror: {e}"))
        if key is not None:
            s.open("/ui/login")
            s.page.fill("#key", key)
            with s.page.expect_navigation():
                s.page.click("#sign-in")
            assert "/ui/login" not in s.page.url, s.page.content()[:500]
        return s

    yield make
    for context in made:
        context.close()
