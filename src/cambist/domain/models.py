"""The built-in model catalog: what a model needs from a GPU.

Figures are the public architecture configs of each model family (parameter
count, layers, KV heads, head dimension, context length). ``precision`` is the
default weight precision Cambist deploys it in; ``bytes_per_param`` follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MODEL_CATALOG", "ModelSpec", "Precision", "find_model"]

Precision = Literal["bf16", "fp8"]

_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture facts of one open model."""

    name: str
    hf_id: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    context_length: int
    precision: Precision
    reasoning: bool = False
    description: str = ""

    @property
    def bytes_per_param(self) -> float:
        return _BYTES[self.precision]

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights at the default precision."""
        return self.params_b * 1e9 * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token (K and V, every layer; cache kept in the weight dtype)."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param


MODEL_CATALOG: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 8.03, 32, 8, 128, 131072, "bf16",
            description="Meta Llama 3.1 8B Instruct",
        ),
        ModelSpec(
            "llama-3.1-70b", "meta-llama/Llama-3.1-70B-Instruct", 70.6, 80, 8, 128, 131072, "fp8",
            description="Meta Llama 3.1 70B Instruct (FP8)",
        ),
        ModelSpec(
            "llama-3.1-405b", "meta-llama/Llama-3.1-405B-Instruct-FP8", 405.9, 126, 8, 128, 131072,
            "fp8", description="Meta Llama 3.1 405B Instruct (FP8)",
        ),
        ModelSpec(
            "qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 7.62, 28, 4, 128, 32768, "bf16",
            description="Qwen 2.5 7B Instruct",
        ),
        ModelSpec(
            "deepseek-r1-distill-llama-70b", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70.6,
            80, 8, 128, 131072, "fp8", reasoning=True,
            description="DeepSeek R1 distilled into Llama 70B (reasoning, FP8)",
        ),
    )
}


def find_model(name: str) -> ModelSpec | None:
    """Look a model up by catalog name or Hugging Face id, case-insensitively."""
    key = name.lower()
    for m in MODEL_CATALOG.values():
        if key in (m.name, m.hf_id.lower()):
            return m
    return None
