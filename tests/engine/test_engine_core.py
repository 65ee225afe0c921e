"""The pure engine core: batching, prefill/decode timing, KV admission, virtual time."""

from __future__ import annotations

import pytest

from cambist.domain.errors import Conflict, InvalidRequest
from cambist.domain.models import MODEL_CATALOG
from cambist.engine.core import EngineCore
from cambist.engine.virtual import Arrival, run_virtual
from cambist.perf import PerfModel

PERF = PerfModel()


def make_core(model: str = "llama-3.1-8b", sku: str = "H100-80GB-SXM", gpus: int = 1) -> EngineCore:
    spec = MODEL_CATALOG[model]
    return EngineCore(spec, PERF.estimate(spec, sku, gpus), PERF)


def burst(n: int, prompt: int, output: int) -> list[Arrival]:
    return [Arrival(0.0, f"r{i}", prompt, output) for i in range(n)]


def test_lone_request_matches_perf_model_ttft() -> None:
    core = make_core()
    run = run_virtual(core, [Arrival(0.0, "a", 1000, 10)])
    ttft = run.timings["a"].ttft_s
    assert ttft is not None
    assert ttft == pytest.approx(core.estimate.ttft_s(1000), rel=0.05)
    assert run.timings["a"].tokens == 10
    assert core.idle and core.kv_used_tokens == 0


def test_ttft_grows_with_prompt_length() -> None:
    ttfts = []
    for prompt in (100, 1_000, 10_000, 50_000):
        run = run_virtual(make_core(), [Arrival(0.0, "a", prompt, 4)])
        ttfts.append(run.timings["a"].ttft_s)
    assert ttfts == sorted(ttfts)
    assert ttfts[-1] > 10 * ttfts[0]


def test_long_prompt_is_prefilled_in_chunks() -> None:
    core = make_core()
    core.submit("a", 20_000, 1)
    first = core.step()
    assert first.prefill_tokens == core.max_prefill_tokens
    assert not first.emitted
    assert first.duration_s > 0


def test_step_emits_one_token_per_decoding_request() -> None:
    core = make_core()
    for i in range(3):
        core.submit(f"r{i}", 10, 5)
    result = core.step()
    assert dict(result.emitted) == {"r0": 1, "r1": 1, "r2": 1}
    assert core.running == 3 and core.waiting == 0
    assert core.prompt_tokens_total == 30 and core.generation_tokens_total == 3


def test_throughput_rises_with_concurrency_then_flattens() -> None:
    max_batch = make_core().estimate.max_batch
    tput = {}
    for n in (1, 8, 64, max_batch, 2 * max_batch, 4 * max_batch):
        run = run_virtual(make_core(), burst(n, 500, 100))
        tput[n] = run.throughput_tok_s()
    assert tput[1] < tput[8] < tput[64] < tput[max_batch]
    assert tput[max_batch] > 20 * tput[1]
    # past the batch limit requests queue: throughput stays within 10%
    assert tput[2 * max_batch] == pytest.approx(tput[max_batch], rel=0.10)
    assert tput[4 * max_batch] == pytest.approx(tput[max_batch], rel=0.10)


def test_batch_never_exceeds_max_batch_and_queue_waits() -> None:
    core = make_core()
    n = core.estimate.max_batch + 10
    for i in range(n):
        core.submit(f"r{i}", 100, 50)
    core.step()
    assert core.running == core.estimate.max_batch
    assert core.waiting == 10


def test_faster_sku_decodes_faster() -> None:
    def decode_time(sku: str) -> float:
        run = run_virtual(make_core(sku=sku), [Arrival(0.0, "a", 10, 200)])
        t = run.timings["a"]
        assert t.first_token_s is not None and t.finished_s is not None
        return t.finished_s - t.first_token_s

    assert decode_time("H100-80GB-SXM") < decode_time("A100-80GB-SXM")
    assert decode_time("H200-141GB-SXM") < decode_time("A100-80GB-SXM")


def test_kv_capacity_limits_admission() -> None:
    core = make_core("llama-3.1-70b")  # about 41k KV tokens on one H100
    cap = core.estimate.kv_capacity_tokens
    per = 10_000
    fit = cap // (per + 100)
    for i in range(fit + 3):
        core.submit(f"r{i}", per, 100)
    core.step()
    assert core.running == fit < core.estimate.max_batch
    assert core.waiting == 3
    assert core.kv_used_tokens <= cap


def test_finished_requests_free_kv_for_waiting_ones() -> None:
    core = make_core("llama-3.1-70b")
    run = run_virtual(core, burst(8, 10_000, 20))
    assert all(t.tokens == 20 for t in run.timings.values())
    assert core.idle and core.kv_used_tokens == 0
    assert core.finished_total == 8


def test_submit_refuses_oversized_and_duplicate_requests() -> None:
    core = make_core()
    with pytest.raises(InvalidRequest):
        core.submit("big", core.max_model_len, 1)
    core.submit("a", 10, 1)
    with pytest.raises(Conflict):
        core.submit("a", 10, 1)


def test_cancel_frees_the_slot() -> None:
    core = make_core()
    core.submit("a", 10, 100)
    core.submit("b", 10, 100)
    core.step()
    assert core.cancel("a") and not core.cancel("a")
    assert core.running == 1 and "a" not in core
    assert core.kv_used_tokens == 110


def test_zero_output_request_finishes_after_prefill() -> None:
    core = make_core()
    core.submit("a", 50, 0)
    result = core.step()
    assert result.finished == ("a",) and not result.emitted
    assert core.idle


def test_idle_step_takes_no_time() -> None:
    result = make_core().step()
    assert result.duration_s == 0.0 and result.batch == 0


def test_model_that_does_not_fit_is_refused() -> None:
    spec = MODEL_CATALOG["llama-3.1-405b"]
    with pytest.raises(InvalidRequest):
        EngineCore(spec, PERF.estimate(spec, "H100-80GB-SXM", 1), PERF)


def test_virtual_run_handles_staggered_arrivals() -> None:
    arrivals = [Arrival(i * 5.0, f"r{i}", 200, 20) for i in range(3)]
    run = run_virtual(make_core(), arrivals)
    for i in range(3):
        t = run.timings[f"r{i}"]
        assert t.arrived_s == i * 5.0
        assert t.ttft_s is not None and 0 < t.ttft_s < 1.0
    assert run.end_s > 10.0 and run.busy_s < run.end_s
