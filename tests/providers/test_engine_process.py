"""Engine processes: readiness, failures, command templates, records."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import pytest

from cambist.domain.errors import InvalidRequest, SupplierError
from cambist.providers import (
    EngineHandle,
    EngineSpec,
    LocalGpu,
    LocalSupplier,
    SimSupplier,
    launch_reference_engine,
    list_engine_records,
    pid_alive,
    stop_engine_process,
)

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
SPEC = EngineSpec(model="qwen2.5-7b", sku="RTX4090-24GB", gpu_count=1, lease_id="lease_1")


def _fake_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if str(FAKE_ENGINE) in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


async def test_model_that_does_not_fit_is_a_clear_non_retryable_error(
    tmp_path: Path, fake_engine_argv: list[str]
) -> None:
    spec = EngineSpec(model="does-not-fit", sku="L4-24GB", gpu_count=1, lease_id="lease_x")
    with pytest.raises(SupplierError, match="does not fit on 1 x L4-24GB") as err:
        await launch_reference_engine(spec, tmp_path, engine_argv=fake_engine_argv)
    assert err.value.retryable is False and "exit code 2" in err.value.message
    assert list_engine_records(tmp_path) == []


async def test_engine_that_never_gets_ready_is_killed(
    tmp_path: Path, fake_engine_argv: list[str]
) -> None:
    with pytest.raises(SupplierError, match=r"not ready after 0\.5 s") as err:
        await launch_reference_engine(
            SPEC, tmp_path, engine_argv=[*fake_engine_argv, "--no-ready-line"], timeout_s=0.5
        )
    assert err.value.retryable is True
    assert _fake_children() == []
    assert list_engine_records(tmp_path) == []


async def test_stop_finds_the_pid_from_the_record(
    tmp_path: Path, fake_engine_argv: list[str]
) -> None:
    handle = await launch_reference_engine(SPEC, tmp_path, engine_argv=fake_engine_argv)
    (record,) = list_engine_records(tmp_path)
    assert record.pid == handle.pid and record.url == handle.url
    assert record.command[:2] == tuple(fake_engine_argv) and "--port" in record.command
    assert os.getpgid(record.pid) == record.pid  # its own session: Ctrl-C does not reach it
    await stop_engine_process(EngineHandle(handle.url, None, handle.lease_id, handle.model),
                              tmp_path)
    assert not pid_alive(record.pid)
    assert list_engine_records(tmp_path) == []


def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "broken.json").write_text("{not json")
    assert list_engine_records(tmp_path) == []
    assert pid_alive(os.getpid()) and not pid_alive(0)


async def test_local_supplier_runs_a_command_template(tmp_path: Path) -> None:
    command = (
        f"{sys.executable} {FAKE_ENGINE} --no-ready-line --model {{model}} --host {{host}} "
        "--port {port} --sku {sku} --gpu-count {gpu_count} --served-model-name {hf_id}"
    )
    local = LocalSupplier([LocalGpu("RTX4090-24GB", 2, Decimal("0.35"))], tmp_path,
                          engine_command=command, health_timeout_s=20.0)
    handle = await local.launch_engine(
        EngineSpec(model="qwen2.5-7b", sku="RTX4090-24GB", gpu_count=2, lease_id="lease_cmd")
    )
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{handle.url}/health")).status_code == 200
        (record,) = list_engine_records(tmp_path)
        assert "Qwen/Qwen2.5-7B-Instruct" in record.command
        assert str(handle.url.rsplit(":", 1)[1]) in record.command
    finally:
        await local.stop_engine(handle)
    assert handle.pid is not None and not pid_alive(handle.pid)


async def test_command_engine_that_exits_is_an_error(tmp_path: Path) -> None:
    command = f"{sys.executable} {FAKE_ENGINE} --model {{model}} --port {{port}}"
    local = LocalSupplier([LocalGpu("L4-24GB", 1, Decimal("0.20"))], tmp_path,
                          engine_command=command, health_timeout_s=20.0)
    spec = EngineSpec(model="does-not-fit", sku="L4-24GB", gpu_count=1, lease_id="lease_bad")
    with pytest.raises(SupplierError, match="exited before it was healthy"):
        await local.launch_engine(spec)


def test_bad_command_template_is_rejected_up_front(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="placeholders are"):
        LocalSupplier([LocalGpu("L4-24GB", 1, Decimal("0.20"))], tmp_path,
                      engine_command="vllm serve {weights}")


async def test_local_gpu_declarations_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="memory"):
        LocalSupplier([LocalGpu("Mystery", 1, Decimal("0.20"))], tmp_path)
    with pytest.raises(InvalidRequest, match="count"):
        LocalSupplier([LocalGpu("L4-24GB", 0, Decimal("0.20"))], tmp_path)
    local = LocalSupplier([LocalGpu("RTX5090-32GB", 1, Decimal("0.40"))], tmp_path)
    (offer,) = await local.list_offers(0.0)
    assert offer.sku is None and "no datasheet" in offer.sku_note and offer.vram_gib == 32


def _write_record(state_dir: Path, lease_id: str, pid: int, command: list[str]) -> None:
    (state_dir / "engines").mkdir(exist_ok=True)
    body = {"lease_id": lease_id, "pid": pid, "url": "http://127.0.0.1:1", "model": "m",
            "command": command}
    (state_dir / "engines" / f"{lease_id}.json").write_text(json.dumps(body))


async def test_orphan_engine_from_a_previous_run_is_stopped(
    tmp_path: Path, fake_engine_argv: list[str]
) -> None:
    argv = [*fake_engine_argv, "--model", "m", "--port", "0"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).startswith(b"CAMBIST_ENGINE_READY ")
    _write_record(tmp_path, "lease_orphan", proc.pid, argv)
    (record,) = list_engine_records(tmp_path)
    await stop_engine_process(EngineHandle(record.url, None, "lease_orphan", "m"), tmp_path)
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    assert list_engine_records(tmp_path) == []


async def test_a_reused_pid_is_never_killed(tmp_path: Path) -> None:
    _write_record(tmp_path, "lease_old", os.getpid(), ["/gone/engine", "--port", "0"])
    await stop_engine_process(EngineHandle("http://127.0.0.1:1", None, "lease_old", "m"),
                              tmp_path)
    assert pid_alive(os.getpid())  # still here
    assert list_engine_records(tmp_path) == []


@pytest.mark.parametrize(("spec_scale", "expected"), [(1.0, "0.1"), (0.5, "0.5")])
async def test_time_scale_is_applied_once(
    tmp_path: Path, fake_engine_argv: list[str], spec_scale: float, expected: str
) -> None:
    sim = SimSupplier("vast", tmp_path, time_scale=0.1, reference_engine_argv=fake_engine_argv)
    handle = await sim.launch_engine(
        EngineSpec(model="m", sku="L4-24GB", gpu_count=1, lease_id="lease_ts",
                   time_scale=spec_scale)
    )
    try:
        (record,) = list_engine_records(tmp_path)
        assert record.command[record.command.index("--time-scale") + 1] == expected
    finally:
        await sim.stop_engine(handle)
