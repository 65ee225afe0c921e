"""The reference engine: an OpenAI-compatible server that simulates a GPU from the perf model.

- :class:`EngineCore` — pure continuous-batching scheduler; drive it in
  virtual time with ``step()`` or :func:`run_virtual`.
- :func:`plan_generation` — the deterministic completion of a request.
- :func:`create_app` / :class:`EngineConfig` — the Starlette app.
- ``python -m cambist.engine`` — the process supplier adapters launch.
"""

from cambist.engine.config import EngineConfig, ResolvedEngine, resolve_engine
from cambist.engine.core import EngineCore, StepResult
from cambist.engine.runtime import EngineRuntime, TokenFeed
from cambist.engine.server import create_app
from cambist.engine.text import Generation, GenerationRequest, plan_generation, split_tokens
from cambist.engine.virtual import Arrival, RequestTiming, VirtualRun, run_virtual

__all__ = [
    "Arrival",
    "EngineConfig",
    "EngineCore",
    "EngineRuntime",
    "Generation",
    "GenerationRequest",
    "RequestTiming",
    "ResolvedEngine",
    "StepResult",
    "TokenFeed",
    "VirtualRun",
    "create_app",
    "plan_generation",
    "resolve_engine",
    "run_virtual",
    "split_tokens",
]
