"""The rate limiter on a manual clock, its header formats, and plan configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cambist.config import ConfigError, load_settings
from cambist.domain.clock import ManualClock
from cambist.gateway.errors import RateLimited
from cambist.gateway.limits import RateLimiter, TokenBucket, format_duration, reset_header
from cambist.ledger.plans import DEFAULT_PLANS, Plan, PlanBook

SMALL = Plan("small", requests_per_minute=3, tokens_per_minute=1000,
             tenant_requests_per_minute=5, tenant_tokens_per_minute=1500)


def limiter(clock: ManualClock) -> RateLimiter:
    return RateLimiter(PlanBook([*DEFAULT_PLANS, SMALL], {"ten_a": "small"}), clock)


# -- the buckets ------------------------------------------------------------------------

def test_requests_refused_after_the_limit_then_refilled() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    for n in (2, 1, 0):
        a = lim.admit("key_1", "ten_a")
        assert a.headers["x-ratelimit-remaining-requests"] == str(n)
        assert a.headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimited) as info:
        lim.admit("key_1", "ten_a")
    exc = info.value
    assert (exc.status, exc.type, exc.code) == (429, "requests", "rate_limit_exceeded")
    assert exc.retry_after_s == pytest.approx(20.0)  # 3/min refills one every 20 s
    assert exc.headers["retry-after"] == "20"
    assert exc.headers["x-ratelimit-remaining-requests"] == "0"
    assert exc.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "Limit 3" in exc.message and "small" in exc.message
    clock.advance(19.9)
    with pytest.raises(RateLimited):
        lim.admit("key_1", "ten_a")
    clock.advance(0.1)
    a = lim.admit("key_1", "ten_a")
    assert a.headers["x-ratelimit-remaining-requests"] == "0"
    assert a.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.advance(60)  # a full minute refills to the limit, never beyond
    assert lim.admit("key_1", "ten_a").headers["x-ratelimit-remaining-requests"] == "2"


def test_tenant_limit_is_shared_by_its_keys() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    for _ in range(3):
        lim.admit("key_1", "ten_a")
    a = lim.admit("key_2", "ten_a")
    # key_2 has 2 left of 3, the tenant 1 of 5: the headers show the tighter
    assert a.headers["x-ratelimit-limit-requests"] == "5"
    assert a.headers["x-ratelimit-remaining-requests"] == "1"
    lim.admit("key_2", "ten_a")
    with pytest.raises(RateLimited, match="organization"):
        lim.admit("key_3", "ten_a")
    lim.admit("key_9", "ten_b")  # another tenant, on the default plan, is unaffected


def test_tokens_reserved_corrected_and_refunded() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    a = lim.admit("key_1", "ten_a")
    a.reserve_tokens(600)
    assert a.headers["x-ratelimit-remaining-tokens"] == "400"
    assert a.headers["x-ratelimit-limit-tokens"] == "1000"
    b = lim.admit("key_1", "ten_a")
    with pytest.raises(RateLimited) as info:
        b.reserve_tokens(500)
    assert info.value.type == "tokens"
    assert info.value.retry_after_s == pytest.approx(100 / (1000 / 60))
    a.settle(100)  # used fewer than reserved: 500 come back
    a.settle(0)  # idempotent
    b.reserve_tokens(500)
    assert b.headers["x-ratelimit-remaining-tokens"] == "400"
    c = lim.admit("key_2", "ten_a")
    c.reserve_tokens(0)
    assert c.headers["x-ratelimit-remaining-tokens"] == "900"  # tenant: 1500 - 100 - 500
    assert c.headers["x-ratelimit-limit-tokens"] == "1500"
    b.settle(0)  # released: all 500 come back
    c = lim.admit("key_2", "ten_a")
    c.reserve_tokens(0)
    assert c.headers["x-ratelimit-remaining-tokens"] == "1000"  # key_2's own is tighter


def test_a_request_larger_than_the_limit_is_refused_outright() -> None:
    lim = limiter(ManualClock())
    a = lim.admit("key_1", "ten_a")
    with pytest.raises(RateLimited, match="too large") as info:
        a.reserve_tokens(1001)
    assert info.value.type == "tokens"
    a.reserve_tokens(1000)


def test_refused_requests_take_nothing() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    for _ in range(3):
        lim.admit("key_1", "ten_a")
    for _ in range(10):
        with pytest.raises(RateLimited):
            lim.admit("key_1", "ten_a")
    clock.advance(20)
    lim.admit("key_1", "ten_a")


def test_bucket_ignores_a_clock_step_back() -> None:
    b = TokenBucket(60, now=100.0)
    b.adjust(-60)
    b.refill(50.0)
    assert b.remaining == 0
    b.refill(101.0)
    assert b.remaining == 1 and b.reset_s == pytest.approx(59.0)


# -- header formats ---------------------------------------------------------------------

@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (250, "250ns"), (1_500, "1.5µs"), (20_000_000, "20ms"),
    (59_500_000, "59.5ms"), (1_000_000_000, "1s"), (1_500_000_000, "1.5s"),
    (360_000_000_000, "6m0s"), (3_723_000_000_000, "1h2m3s"), (3_600_000_000_000, "1h0m0s"),
])
def test_format_duration_like_go_and_openai(ns: int, text: str) -> None:
    assert format_duration(ns) == text


_UNITS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000,
          "ms": 1_000_000, "µs": 1_000, "ns": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|µs|ns|m|s)")


def _parse(text: str) -> int:
    parts = _PART.findall(text)
    assert "".join(n + u for n, u in parts) == text
    total = 0
    for number, unit in parts:
        whole, _, frac = number.partition(".")
        scale = _UNITS[unit]
        total += int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    return total


@given(st.integers(min_value=0, max_value=10 ** 15))
def test_format_duration_round_trips(ns: int) -> None:
    text = format_duration(ns)
    assert _parse(text) == ns
    assert not re.search(r"\.\d*0[a-zµ]", text)  # no trailing zeros in fractions
    if ns >= 3_600_000_000_000:
        assert re.fullmatch(r"\d+h\d+m[\d.]+s", text)
    elif ns >= 60_000_000_000:
        assert re.fullmatch(r"\d+m[\d.]+s", text)


@given(st.floats(min_value=0, max_value=10 ** 6, allow_nan=False))
def test_reset_header_is_whole_ms_rounded_up(seconds: float) -> None:
    ns = _parse(reset_header(seconds))
    assert ns % 1_000_000 == 0
    assert seconds * 1e9 - 1e3 <= ns <= seconds * 1e9 + 1_000_000 + 1e3


# -- plans and their configuration ------------------------------------------------------

def test_shipped_plans_and_default() -> None:
    book = PlanBook()
    assert [p.name for p in book.plans()] == ["free", "pro", "pro_plus", "max", "payg"]
    assert book.plan_of("anyone").name == "payg"  # pay as you go: no grants
    assert not book.plan_of("anyone").grants and not book.grants_in_use()
    limits = [p.requests_per_minute for p in book.plans()[:4]]
    assert limits == sorted(limits)


def test_plans_from_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'default_plan = "free"\ntenant_plans = { ten_big = "max", ten_team = "team" }\n'
        '[[plans]]\nname = "team"\nrequests_per_minute = 100\ntokens_per_minute = 50000\n'
        'tenant_requests_per_minute = 300\n'
        '[[plans]]\nname = "free"\nrequests_per_minute = 5\ntokens_per_minute = 5000\n')
    book = load_settings(home=tmp_path, environ={}).plan_book()
    team = book.plan_of("ten_team")
    assert (team.requests_per_minute, team.tokens_per_minute,
            team.tenant_requests_per_minute, team.tenant_tokens_per_minute) == (
        100, 50000, 300, 50000)
    assert book.plan_of("ten_big").name == "max"
    assert book.plan_of("ten_other").requests_per_minute == 5  # free, replaced


@pytest.mark.parametrize(("toml", "match"), [
    ('default_plan = "gold"\n', "gold"),
    ('tenant_plans = { ten_a = "gold" }\n', "ten_a"),
    ('tenant_plans = ["x"]\n', "tenant_plans"),
    ('plans = 3\n', "plans"),
    ('[[plans]]\nname = "x"\nrequests_per_minute = 1\n', "tokens_per_minute"),
    ('[[plans]]\nname = "x"\nrequests_per_minute = 0\ntokens_per_minute = 1\n', "positive"),
    ('[[plans]]\nname = "x"\nrequests_per_minute = 1\ntokens_per_minute = 1\nrpm = 2\n',
     "unknown keys"),
])
def test_plan_config_errors_name_the_setting(tmp_path: Path, toml: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError, match=match):
        load_settings(home=tmp_path, environ={})


class _Owner:
    """Stands in for the shared limiter: counts the buckets queued for a push."""

    def __init__(self) -> None:
        self.marked = 0

    def mark(self, bucket: object) -> None:
        self.marked += 1


_STEPS = st.lists(st.tuples(st.sampled_from(["take", "give"]),
                            st.integers(min_value=-50, max_value=400),
                            st.floats(min_value=0.0, max_value=20.0)), max_size=40)


@given(st.integers(min_value=1, max_value=1_000), st.integers(min_value=1, max_value=1_000),
       _STEPS)
def test_shared_buckets_keep_the_levels_of_plain_ones(
        cap_a: int, cap_b: int, steps: list[tuple[str, int, float]]) -> None:
    """The shared bucket's take and give, written out for speed, move the
    levels exactly as the plain bucket's refill, wait and adjust do (Redis's
    slack set out of reach); their pending takes add up to what was taken,
    and every change is queued for Redis (this owner never sets ``queued``)."""
    from cambist.gateway.limits_redis import SharedBucket

    owner = _Owner()
    plain = (TokenBucket(cap_a, 0.0), TokenBucket(cap_b, 0.0))
    shared = (SharedBucket("k:a:tok", cap_a, 0.0, 10**9, owner),  # type: ignore[arg-type]
              SharedBucket("t:b:tok", cap_b, 0.0, 10**9, owner))  # type: ignore[arg-type]
    now, net, changes = 0.0, 0.0, 0
    for op, amount, dt in steps:
        now += dt
        if op == "take":
            cost = abs(amount)
            waits = (plain[0].take_pair(plain[1], cost, now),
                     shared[0].take_pair(shared[1], cost, now))
            assert (waits[0] > 0) == (waits[1] > 0)
            if not waits[0]:
                net, changes = net - cost, changes + 1
        else:
            plain[0].give_pair(plain[1], amount, now)
            shared[0].give_pair(shared[1], amount, now)
            net, changes = net + amount, changes + 1
        for p, s in zip(plain, shared, strict=True):
            assert (s.level, s.stamp) == (p.level, p.stamp)
            assert s.pending == net
    assert owner.marked == 2 * changes
