"""The performance model against published vLLM figures, and its refusals."""

from __future__ import annotations

import csv
from decimal import Decimal
from importlib import resources

import pytest

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import MODEL_CATALOG
from cambist.perf import PerfModel

NAMES = {"Llama-3.1-8B": "llama-3.1-8b", "Llama-3.1-70B": "llama-3.1-70b",
         "Llama-3.1-405B": "llama-3.1-405b"}
ROWS = list(csv.DictReader(resources.files("cambist.domain").joinpath(
    "data/vllm_throughput.csv").read_text().splitlines()))

# Stated tolerance: within 30% of the vLLM 0.6.0 figures (multi-step scheduling,
# the engine generation Cambist targets); within a factor 2.6 of vLLM 0.5.4's,
# whose per-step CPU overhead the model does not carry.
TOLERANCE = {"vLLM 0.6.0": (0.70, 1.30), "vLLM 0.5.4": (0.95, 2.6)}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['model']}x{r['gpu_count']}-{r['engine']}")
def test_throughput_matches_published_vllm(row: dict[str, str]) -> None:
    est = PerfModel().estimate(MODEL_CATALOG[NAMES[row["model"]]], row["gpu"],
                               int(row["gpu_count"]), row["precision"])
    ratio = est.throughput_tok_s / float(row["output_tokens_per_s"])
    lo, hi = TOLERANCE[row["engine"]]
    assert lo <= ratio <= hi, f"model/observed = {ratio:.2f}"


def test_faster_memory_decodes_faster() -> None:
    m = MODEL_CATALOG["llama-3.1-8b"]
    pm = PerfModel()
    h100 = pm.estimate(m, "H100-80GB-SXM")
    l4 = pm.estimate(m, "L4-24GB")
    h200 = pm.estimate(m, "H200-141GB-SXM")
    assert l4.decode_tok_s_single < h100.decode_tok_s_single < h200.decode_tok_s_single
    assert h100.ttft_s(2000) > h100.ttft_s(100)


def test_memory_fit() -> None:
    pm = PerfModel()
    big = MODEL_CATALOG["llama-3.1-70b"]
    assert not pm.estimate(big, "L4-24GB").fits
    assert pm.estimate(big, "H100-80GB-SXM", 2).fits
    with pytest.raises(UnquotableOffer):
        pm.estimate(big, "L4-24GB").cost_per_mtok(Decimal("1"))


def test_refuses_to_guess_unknown_gpu() -> None:
    with pytest.raises(UnquotableOffer):
        PerfModel().estimate(MODEL_CATALOG["llama-3.1-8b"], "A10G-24GB")  # no TFLOPs published
    with pytest.raises(UnquotableOffer):
        PerfModel().estimate(MODEL_CATALOG["llama-3.1-8b"], "H100")


def test_cost_per_mtok_scales_with_price() -> None:
    est = PerfModel().estimate(MODEL_CATALOG["qwen2.5-7b"], "H100-80GB-SXM")
    assert est.cost_per_mtok(Decimal("4")) == 2 * est.cost_per_mtok(Decimal("2"))
