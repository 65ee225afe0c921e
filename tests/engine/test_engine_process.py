"""``python -m cambist.engine`` as a real process: READY line, OpenAI SDK, SIGTERM, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from cambist.domain.tokens import count_text_tokens

MODEL = "llama-3.1-8b"
SKU = "H100-80GB-SXM"
PREFIX = "CAMBIST_ENGINE_READY "


def engine_cmd(*extra: str, model: str = MODEL, sku: str = SKU) -> list[str]:
    return [
        sys.executable, "-m", "cambist.engine", "--model", model, "--sku", sku,
        "--gpu-count", "1", "--host", "127.0.0.1", "--port", "0", *extra,
    ]


def read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    box: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, "engine printed no READY line in time"
    return box[0]


def test_engine_process_serves_the_openai_sdk() -> None:
    cmd = engine_cmd("--time-scale", "0.02", "--served-name", "tiny")
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = read_line(proc)
            assert line.startswith(PREFIX) and line.endswith("\n")
            ready = json.loads(line[len(PREFIX) :])
            assert set(ready) == {"port", "pid"} and ready["pid"] == proc.pid
            assert isinstance(ready["port"], int) and ready["port"] > 0
            with httpx.Client(trust_env=False) as http:
                client = openai.OpenAI(
                    base_url=f"http://127.0.0.1:{ready['port']}/v1", api_key="unused",
                    max_retries=0, http_client=http, timeout=20,
                )
                messages = [{"role": "user", "content": "Price an H100 hour."}]
                done = client.chat.completions.create(
                    model="tiny", messages=messages, max_tokens=16  # type: ignore[arg-type]
                )
                content = done.choices[0].message.content or ""
                assert done.usage is not None and done.usage.completion_tokens == 16
                assert count_text_tokens(content) == 16
                assert done.choices[0].finish_reason == "length"
                stream = client.chat.completions.create(
                    model="tiny", messages=messages, max_tokens=16,  # type: ignore[arg-type]
                    stream=True, stream_options={"include_usage": True},
                )
                pieces, usage = [], None
                for chunk in stream:
                    if chunk.choices:
                        pieces.append(chunk.choices[0].delta.content or "")
                    if chunk.usage is not None:
                        usage = chunk.usage
                assert "".join(pieces) == content
                assert usage is not None and usage.total_tokens == done.usage.total_tokens
                with pytest.raises(openai.NotFoundError):
                    client.chat.completions.create(
                        model="other", messages=messages  # type: ignore[arg-type]
                    )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert proc.stdout is not None and proc.stdout.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(
    ("model", "sku"),
    [("no-such-model", SKU), ("llama-3.1-405b", SKU), (MODEL, "NOT-A-GPU")],
)
def test_engine_process_refuses_bad_configs_with_exit_2(model: str, sku: str) -> None:
    done = subprocess.run(
        engine_cmd(model=model, sku=sku), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
