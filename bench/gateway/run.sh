#!/usr/bin/env bash
# Gateway speed benchmark, one command: bench/gateway/run.sh [bench.py options]
# Uses the repository's .venv (uvloop and aiohttp are installed into it when
# missing: the mock, the load generator and the passthrough need them) and
# LiteLLM's proxy from its own virtual environment, $LITELLM_VENV
# (default /tmp/litellm-venv), created here when absent; never the project's.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -f .venv/bin/activate ]]; then . .venv/bin/activate; fi
python - <<'PY' 2>/dev/null || { echo "installing the benchmark's own tools (uvloop, aiohttp) into $(python -c 'import sys; print(sys.prefix)')"; python -m pip install -q uvloop aiohttp; }
import aiohttp, uvloop
PY
LITELLM_VENV="${LITELLM_VENV:-/tmp/litellm-venv}"
if [[ " $* " != *" --only "* || " $* " == *litellm* ]] && [[ ! -x "$LITELLM_VENV/bin/litellm" ]]; then
  echo "LiteLLM proxy not found in $LITELLM_VENV: installing litellm[proxy] from PyPI there (a few minutes, once)"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/pip" install -q 'litellm[proxy]' || echo "LiteLLM install failed: it will be skipped"
fi
exec python bench/gateway/bench.py --litellm "$LITELLM_VENV/bin/litellm" "$@"
