"""The performance model: what a model does on a GPU configuration.

A roofline with measured-engine corrections. A decode step over a batch of
``b`` sequences with average context ``c`` must stream the weights once and
the KV cache of every sequence, and do ``2 * params * b`` FLOPs:

    t_step(b) = max(bytes / (bandwidth * mem_eff), flops / (peak * mfu)) / tp_eff + overhead

Prefill of ``p`` prompt tokens is compute bound: ``2 * params * p / (peak * prefill_mfu)``.
Memory fit: weights plus at least one full-context sequence of KV must fit in
``count * memory * gpu_memory_utilization``; the rest of that memory bounds the
batch. The constants are calibrated against published vLLM figures
(``data/vllm_throughput.csv``); ``tests/test_perf.py`` holds the model to them
within a stated tolerance. An SKU without datasheet figures is refused, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import ModelSpec
from cambist.domain.sku import GpuSpec, gpu_specs

__all__ = ["PerfEstimate", "PerfModel", "Workload"]

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Workload:
    """The request shape a throughput figure assumes."""

    prompt_tokens: int = 1000
    output_tokens: int = 500


@dataclass(frozen=True, slots=True)
class PerfEstimate:
    """What one engine of ``model`` on ``count`` x ``sku`` can do."""

    model: str
    sku: str
    gpu_count: int
    precision: str
    fits: bool
    weight_gib: float
    kv_capacity_tokens: int
    max_batch: int
    decode_tok_s_single: float
    """Decode speed of a lone sequence (tokens/s)."""
    throughput_tok_s: float
    """Output tokens/s at full batch on the reference workload, prefill included."""
    prefill_tok_s: float
    step_overhead_s: float
    reason: str = ""

    def ttft_s(self, prompt_tokens: int) -> float:
        """Time to first token for a prompt of ``prompt_tokens`` on an idle engine."""
        return prompt_tokens / self.prefill_tok_s + 1.0 / self.decode_tok_s_single

    def cost_per_mtok(self, price_per_hour: Decimal) -> Decimal:
        """$ per million output tokens when the engine runs at full batch."""
        if not self.fits or self.throughput_tok_s <= 0:
            raise UnquotableOffer(f"{self.model} does not fit on {self.gpu_count}x {self.sku}")
        tokens_per_hour = Decimal(str(round(self.throughput_tok_s * 3600, 3)))
        return price_per_hour * Decimal(1_000_000) / tokens_per_hour


class PerfModel:
    """Roofline performance model; constants are explained in the module docstring."""

    mem_efficiency = 0.50
    decode_mfu = 0.30
    prefill_mfu = 0.45
    step_overhead_s = 0.006
    gpu_memory_utilization = 0.90
    max_num_seqs = 256
    tp_penalty = 0.12  # efficiency lost per extra tensor-parallel GPU (all-reduce per layer)

    def __init__(self, workload: Workload | None = None) -> None:
        self.workload = workload or Workload()

    def _spec(self, sku: str) -> GpuSpec:
        spec = gpu_specs().get(sku)
        if spec is None or not spec.quotable:
            raise UnquotableOffer(f"no datasheet figures for GPU {sku!r}; refusing to guess")
        return spec

    def peak_flops(self, spec: GpuSpec, precision: str) -> float:
        """Dense tensor FLOP/s per GPU for ``precision`` (fp8 falls back to bf16)."""
        tf = spec.fp8_dense_tflops if precision == "fp8" else None
        if tf is None:
            tf = spec.bf16_dense_tflops
        assert tf is not None  # _spec checked quotable
        return float(tf) * 1e12

    def estimate(
        self, model: ModelSpec, sku: str, gpu_count: int = 1, precision: str | None = None
    ) -> PerfEstimate:
        """Estimate fit and speed of ``model`` on ``gpu_count`` x ``sku``."""
        spec = self._spec(sku)
        prec = precision or model.precision
        bpp = 1.0 if prec == "fp8" else 2.0
        weights = model.params_b * 1e9 * bpp
        kv_tok = 2.0 * model.layers * model.kv_heads * model.head_dim * bpp
        usable = gpu_count * spec.memory_gib * GIB * self.gpu_memory_utilization
        kv_budget = usable - weights
        wl = self.workload
        ctx = min(model.context_length, wl.prompt_tokens + wl.output_tokens)
        kv_tokens = int(kv_budget // kv_tok) if kv_budget > 0 else 0
        fits = kv_tokens >= ctx
        bw = float(spec.memory_bandwidth_tb_s) * 1e12 * gpu_count * self.mem_efficiency
        flops = self.peak_flops(spec, prec) * gpu_count
        tp_eff = 1.0 / (1.0 + self.tp_penalty * (gpu_count - 1))
        avg_ctx = wl.prompt_tokens + wl.output_tokens / 2
        max_batch = max(0, min(self.max_num_seqs, int(kv_tokens // avg_ctx)))

        def step(b: int) -> float:
            mem_t = (weights + b * avg_ctx * kv_tok) / bw
            cmp_t = 2.0 * model.params_b * 1e9 * b / (flops * self.decode_mfu)
            return max(mem_t, cmp_t) / tp_eff + self.step_overhead_s

        prefill_tok_s = flops * self.prefill_mfu * tp_eff / (2.0 * model.params_b * 1e9)
        single = 1.0 / step(1)
        if max_batch >= 1:
            decode_tput = max_batch / step(max_batch)
            # Prefill time shares the GPU with decode: per request, prompt work
            # then output work.
            per_req_s = wl.prompt_tokens / prefill_tok_s + wl.output_tokens / decode_tput
            throughput = wl.output_tokens / per_req_s
        else:
            throughput = 0.0
        reason = "" if fits else (
            f"{model.name} needs {weights / GIB:.0f} GiB of weights plus KV for {ctx} tokens; "
            f"{gpu_count}x {sku} gives {usable / GIB:.0f} GiB usable"
        )
        return PerfEstimate(
            model=model.name, sku=sku, gpu_count=gpu_count, precision=prec, fits=fits,
            weight_gib=weights / GIB, kv_capacity_tokens=max(kv_tokens, 0), max_batch=max_batch,
            decode_tok_s_single=single, throughput_tok_s=throughput if fits else 0.0,
            prefill_tok_s=prefill_tok_s, step_overhead_s=self.step_overhead_s, reason=reason,
        )

    def step_time_s(self, est: PerfEstimate, model: ModelSpec, batch: int, avg_ctx: float) -> float:
        """Seconds for one decode step of ``batch`` sequences at ``avg_ctx`` context."""
        spec = self._spec(est.sku)
        bpp = 1.0 if est.precision == "fp8" else 2.0
        weights = model.params_b * 1e9 * bpp
        kv_tok = 2.0 * model.layers * model.kv_heads * model.head_dim * bpp
        bw = float(spec.memory_bandwidth_tb_s) * 1e12 * est.gpu_count * self.mem_efficiency
        flops = self.peak_flops(spec, est.precision) * est.gpu_count
        tp_eff = 1.0 / (1.0 + self.tp_penalty * (est.gpu_count - 1))
        mem_t = (weights + batch * avg_ctx * kv_tok) / bw
        cmp_t = 2.0 * model.params_b * 1e9 * max(batch, 1) / (flops * self.decode_mfu)
        return max(mem_t, cmp_t) / tp_eff + self.step_overhead_s
