"""Engine processes on this machine: launch, track, find again, stop.

The reference engine (``python -m cambist.engine``) announces itself with one
stdout line ``CAMBIST_ENGINE_READY {"port": <int>, "pid": <int>}``; a real
engine started from a command template (vLLM, SGLang, llama.cpp) is ready when
``GET /health`` answers 200. Engines run in their own session
(``start_new_session=True``) so a Ctrl-C in the user's terminal does not reach
them: the exchange stops them itself. Each running engine has a record
``state_dir/engines/<lease_id>.json`` so a restarted exchange can find, adopt
or kill engines it left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from cambist.domain.errors import InvalidRequest, SupplierError
from cambist.domain.models import find_model
from cambist.providers.base import EngineHandle, EngineSpec

__all__ = [
    "READY_PREFIX",
    "EngineRecord",
    "effective_time_scale",
    "launch_command_engine",
    "launch_reference_engine",
    "list_engine_records",
    "pid_alive",
    "render_command",
    "stop_engine_process",
]

READY_PREFIX = "CAMBIST_ENGINE_READY "
TEMPLATE_FIELDS = ("model", "hf_id", "host", "port", "sku", "gpu_count")
_LINE_LIMIT = 1 << 20
_TAIL_BYTES = 8192


@dataclass(frozen=True, slots=True)
class EngineRecord:
    """What the exchange wrote down about an engine it started."""

    lease_id: str
    pid: int
    url: str
    model: str
    command: tuple[str, ...]


@dataclass
class _Child:
    """A process this interpreter started: its handle and its pipe drainers."""

    proc: asyncio.subprocess.Process
    stderr_tail: bytearray
    tasks: list[asyncio.Task[None]]


# Children of this interpreter, by pid: child processes are a per-process
# resource, so the table that reaps them is too.
_CHILDREN: dict[int, _Child] = {}


def _record_path(state_dir: Path, lease_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", lease_id)
    return state_dir / "engines" / f"{safe}.json"


def _write_record(state_dir: Path, rec: EngineRecord) -> None:
    path = _record_path(state_dir, rec.lease_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def list_engine_records(state_dir: Path) -> list[EngineRecord]:
    """Records of engines started under ``state_dir`` and not stopped since,
    sorted by lease id. Unreadable records are skipped."""
    out: list[EngineRecord] = []
    for path in sorted((state_dir / "engines").glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw["command"] = tuple(raw["command"])
            out.append(EngineRecord(**raw))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # Field 3, after the parenthesised command name, is the state.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _last_line(tail: bytearray) -> str:
    lines = [ln.strip() for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output on stderr)"


async def _collect(stream: asyncio.StreamReader, tail: bytearray | None) -> None:
    while chunk := await stream.read(65536):
        if tail is not None:
            tail.extend(chunk)
            del tail[:-_TAIL_BYTES]


async def _spawn(argv: Sequence[str], supplier: str) -> _Child:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=_LINE_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except OSError as exc:
        raise SupplierError(
            f"cannot start engine {shlex.join(argv)}: {exc}", supplier=supplier
        ) from exc
    tail = bytearray()
    assert proc.stderr is not None
    child = _Child(proc, tail, [asyncio.create_task(_collect(proc.stderr, tail))])
    _CHILDREN[proc.pid] = child
    return child


def _drain_stdout(child: _Child) -> None:
    assert child.proc.stdout is not None
    child.tasks.append(asyncio.create_task(_collect(child.proc.stdout, None)))


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


async def _reap(child: _Child, timeout_s: float) -> int | None:
    """Wait for a child to exit and its pipes to close; its exit code."""
    try:
        rc = await asyncio.wait_for(child.proc.wait(), timeout_s)
    except TimeoutError:
        return None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*child.tasks, return_exceptions=True), 2.0)
    _CHILDREN.pop(child.proc.pid, None)
    return rc


async def _fail(child: _Child, what: str, supplier: str, *, retryable: bool) -> SupplierError:
    if child.proc.returncode is None:
        _kill_group(child.proc.pid, signal.SIGKILL)
    rc = await _reap(child, 5.0)
    return SupplierError(
        f"{what} (exit code {rc}): {_last_line(child.stderr_tail)}",
        supplier=supplier,
        retryable=retryable and rc != 2,
    )


async def _await_ready_line(
    child: _Child, timeout_s: float, supplier: str
) -> dict[str, Any]:
    assert child.proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            line = await asyncio.wait_for(child.proc.stdout.readline(), remaining)
        except TimeoutError:
            raise await _fail(child, f"engine not ready after {timeout_s:g} s", supplier,
                              retryable=True) from None
        except ValueError:  # an over-long log line: skip it
            continue
        if not line:
            raise await _fail(child, "engine exited before it was ready", supplier,
                              retryable=True)
        text = line.decode("utf-8", "replace").strip()
        if text.startswith(READY_PREFIX):
            try:
                info = json.loads(text.removeprefix(READY_PREFIX))
                int(info["port"])
            except (ValueError, KeyError, TypeError):
                raise await _fail(child, f"malformed ready line {text!r}", supplier,
                                  retryable=False) from None
            return dict(info)


async def launch_reference_engine(
    spec: EngineSpec,
    state_dir: Path,
    *,
    python: str = sys.executable,
    timeout_s: float = 30.0,
    engine_argv: Sequence[str] | None = None,
    supplier: str = "engine",
) -> EngineHandle:
    """Start the reference engine for ``spec`` and return once it listens.

    ``engine_argv`` replaces ``[python, "-m", "cambist.engine"]`` (tests pass a
    fake engine that honours the same ready-line contract). Raises
    ``SupplierError`` with the engine's last stderr line if it exits or is not
    ready within ``timeout_s``; exit code 2 (model does not fit) is not
    retryable.
    """
    prefix = list(engine_argv) if engine_argv is not None else [python, "-m", "cambist.engine"]
    argv = [
        *prefix, "--model", spec.model, "--sku", spec.sku, "--gpu-count", str(spec.gpu_count),
        "--host", "127.0.0.1", "--port", "0", "--time-scale", repr(float(spec.time_scale)),
    ]
    child = await _spawn(argv, supplier)
    info = await _await_ready_line(child, timeout_s, supplier)
    _drain_stdout(child)
    url = f"http://127.0.0.1:{int(info['port'])}"
    rec = EngineRecord(spec.lease_id, child.proc.pid, url, spec.model, tuple(argv))
    _write_record(state_dir, rec)
    return EngineHandle(url=url, pid=child.proc.pid, lease_id=spec.lease_id, model=spec.model)


def effective_time_scale(spec: EngineSpec, supplier_default: float) -> float:
    """The time scale a reference engine runs at: the spec's when it sets one
    (anything but the default 1.0), else the supplier's default. Never the
    product of both, so a caller that sets both to the same value gets it once."""
    return spec.time_scale if spec.time_scale != 1.0 else supplier_default


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def render_command(template: str, values: dict[str, str]) -> list[str]:
    """Split a command template into argv and fill its placeholders."""
    try:
        return [tok.format_map(values) for tok in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidRequest(
            f"engine command template {template!r} is invalid ({exc!r}); placeholders are "
            + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
            param="engine_command",
        ) from exc


async def _await_health(child: _Child, url: str, timeout_s: float, supplier: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if child.proc.returncode is not None:
                raise await _fail(child, "engine exited before it was healthy", supplier,
                                  retryable=True)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            if loop.time() >= deadline:
                raise await _fail(child, f"engine not healthy after {timeout_s:g} s", supplier,
                                  retryable=True)
            await asyncio.sleep(0.2)


async def launch_command_engine(
    spec: EngineSpec,
    command_template: str,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    hf_id: str | None = None,
    health_timeout_s: float = 600.0,
    supplier: str = "local",
) -> EngineHandle:
    """Start an engine from a command template and return once ``/health`` is 200.

    Placeholders: ``{model} {hf_id} {host} {port} {sku} {gpu_count}``; the port
    is a free one, ``hf_id`` defaults to the catalog's Hugging Face id of the
    model (or the model name). The process is tracked like the reference engine.
    """
    if hf_id is None:
        found = find_model(spec.model)
        hf_id = found.hf_id if found is not None else spec.model
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    port = _free_port(connect_host)
    values = {"model": spec.model, "hf_id": hf_id, "host": host, "port": str(port),
              "sku": spec.sku, "gpu_count": str(spec.gpu_count)}
    argv = render_command(command_template, values)
    if not argv:
        raise InvalidRequest("engine command template is empty", param="engine_command")
    child = await _spawn(argv, supplier)
    _drain_stdout(child)
    url = f"http://{connect_host}:{port}"
    await _await_health(child, url, health_timeout_s, supplier)
    _write_record(state_dir, EngineRecord(spec.lease_id, child.proc.pid, url, spec.model,
                                          tuple(argv)))
    return EngineHandle(url=url, pid=child.proc.pid, lease_id=spec.lease_id, model=spec.model)


async def stop_engine_process(
    handle: EngineHandle, state_dir: Path, *, grace_s: float = 5.0
) -> None:
    """Stop an engine: SIGTERM to its process group, up to ``grace_s`` to exit,
    then SIGKILL; remove its record. No error if it is already gone."""
    recs = [r for r in list_engine_records(state_dir) if r.lease_id == handle.lease_id]
    pid = handle.pid if handle.pid is not None else (recs[0].pid if recs else None)
    if pid is not None and pid not in _CHILDREN and recs and not _runs(pid, recs[0].command):
        pid = None  # the engine is gone and its pid now belongs to another process
    if pid is not None:
        child = _CHILDREN.get(pid)
        running = child.proc.returncode is None if child is not None else pid_alive(pid)
        if running:
            _kill_group(pid, signal.SIGTERM)
        if child is not None:
            if await _reap(child, grace_s) is None:
                _kill_group(pid, signal.SIGKILL)
                await _reap(child, 5.0)
        else:
            await _wait_gone(pid, grace_s)
    _record_path(state_dir, handle.lease_id).unlink(missing_ok=True)


def _runs(pid: int, command: Sequence[str]) -> bool:
    """Whether ``pid`` still runs ``command`` (where ``/proc`` can tell)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)
    return raw.split(b"\0")[: len(command)] == [c.encode() for c in command]


async def _wait_gone(pid: int, grace_s: float) -> None:
    """Wait for a process that is not our child (an adopted orphan) to exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while pid_alive(pid):
        if loop.time() >= deadline:
            _kill_group(pid, signal.SIGKILL)
            return
        await asyncio.sleep(0.05)
