"""Prometheus metrics of one engine, read from its state at scrape time.

Names follow Cambist's ``cambist_engine_*`` convention, plus the vLLM gauges
routers already scrape (``vllm:num_requests_running``/``waiting``). Only
counts and rates are exported, never request content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cambist.engine.runtime import EngineRuntime

__all__ = ["CONTENT_TYPE", "EngineCollector", "engine_registry", "render_metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class EngineCollector(Collector):
    """Collects the engine's gauges and counters on each scrape."""

    def __init__(
        self, runtime: EngineRuntime, model_name: str, extra_prompt_tokens: Callable[[], int]
    ) -> None:
        self.runtime = runtime
        self.model_name = model_name
        self.extra_prompt_tokens = extra_prompt_tokens

    def collect(self) -> Iterator[Metric]:
        """Yield the current metric families."""
        core = self.runtime.core
        labels = ["model_name"]
        values = [self.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(values, value)
            return c

        yield gauge("cambist_engine_requests_running", "Requests in the batch.", core.running)
        yield gauge("cambist_engine_requests_waiting", "Requests queued.", core.waiting)
        yield counter(
            "cambist_engine_prompt_tokens",
            "Prompt tokens processed (prefill and embeddings).",
            core.prompt_tokens_total + self.extra_prompt_tokens(),
        )
        yield counter(
            "cambist_engine_generation_tokens", "Tokens generated.", core.generation_tokens_total
        )
        yield gauge(
            "cambist_engine_generation_tokens_per_second",
            "Tokens generated per wall-clock second, recent window.",
            self.runtime.generation_rate_tok_s(),
        )
        yield gauge(
            "cambist_engine_kv_cache_usage_ratio",
            "Fraction of KV-cache tokens reserved.",
            core.kv_used_tokens / max(1, core.estimate.kv_capacity_tokens),
        )
        yield gauge("vllm:num_requests_running", "Requests in the batch (vLLM name).", core.running)
        yield gauge("vllm:num_requests_waiting", "Requests queued (vLLM name).", core.waiting)


def engine_registry(collector: EngineCollector) -> CollectorRegistry:
    """A fresh registry holding only ``collector`` (one per app, never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)
