"""Sleep-aware room on a GPU, against in-memory fakes: measured memory decides, sleeps come first.

The runtime and health are the in-memory fakes; a recording ``SleepControl`` stands in for
vLLM's sleep routes and a fixed ``GpuProbe`` for NVML, so the readings are exactly the test's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus
from ryx_desktop.core.sleep_planner import RoomRefusedError
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock

pytestmark = pytest.mark.asyncio

GIB = 1024**3


class RecordingSleep:
    """``SleepControl`` that records what it was asked and always succeeds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    async def sleep(self, base_url: str, level: int, api_key: str | None = None) -> None:
        self.calls.append(("sleep", base_url, level))

    async def wake(self, base_url: str, level: int, api_key: str | None = None) -> None:
        self.calls.append(("wake", base_url, level))

    async def is_sleeping(self, base_url: str, api_key: str | None = None) -> bool | None:
        return None

    async def close(self) -> None:
        pass


class FixedGpus:
    """``GpuProbe`` answering one reading: GPU 0 with 80 GiB, and what the test puts on it."""

    def __init__(self) -> None:
        self.processes: list[GpuProcess] = []

    async def read(self) -> GpuReading:
        used = sum(p.used_bytes or 0 for p in self.processes)
        gpu = GpuStatus(
            index=0,
            name="H100",
            total_bytes=80 * GIB,
            used_bytes=used,
            free_bytes=80 * GIB - used,
            processes=tuple(self.processes),
        )
        return GpuReading(gpus=(gpu,))

    async def close(self) -> None:
        pass


def rig(gpus: FixedGpus | None) -> tuple[Supervisor, FakeRuntime, RecordingSleep]:
    def m(port: int) -> dict[str, Any]:
        return {
            "model": f"/models/m{port}",
            "port": port,
            "devices": [0],
            "gpu_memory_utilization": 0.45,
            "sleep_mode": True,
        }

    config = Config.model_validate(
        {"models": {"a": m(8001), "b": m(8002)}, "gpu": {"policy": "fractional", "headroom": 0.05}}
    )
    runtime = FakeRuntime()
    sleep = RecordingSleep()
    sup = Supervisor(
        config,
        runtime,
        FakeHealth(runtime),
        VirtualClock(),
        sleep_control=sleep,
        gpu_probe=gpus,
    )
    return sup, runtime, sleep


def give_pid(runtime: FakeRuntime, key: str, pid: int) -> None:
    container = runtime.by_key(key)
    assert container is not None
    container.info = dataclasses.replace(container.info, pids=(pid,))


async def a_ready_beside_another_program() -> tuple[Supervisor, RecordingSleep]:
    """``a`` ready on GPU 0, measured: a holds its 36 GiB and a program outside ryx-desktop
    30 GiB, so ``b`` (36 GiB + 4 GiB headroom) fits only once ``a`` gives its memory back."""
    gpus = FixedGpus()
    sup, runtime, sleep = rig(gpus)
    await sup.open()
    await sup.ensure_ready("a")
    give_pid(runtime, "a", 101)
    gpus.processes = [GpuProcess(101, 36 * GIB), GpuProcess(999, 30 * GIB)]
    return sup, sleep


async def test_by_the_configured_shares_both_fit_and_nothing_sleeps() -> None:
    sup, _runtime, sleep = rig(None)
    await sup.open()
    await sup.ensure_ready("a")
    await sup.ensure_ready("b")  # 0.45 + 0.45 + 0.05 headroom fits one GPU
    assert sleep.calls == []
    assert {sup.get("a").state, sup.get("b").state} == {InstanceState.READY}
    await sup.close()


async def test_measured_memory_of_another_process_makes_the_idle_model_sleep() -> None:
    sup, sleep = await a_ready_beside_another_program()
    await sup.ensure_ready("b")
    assert sleep.calls == [("sleep", "http://127.0.0.1:8001", 2)]  # RAM unknown: level 2
    assert sup.get("a").state is InstanceState.SLEEPING
    assert "to make room for b" in sup.get("a").note
    assert sup.get("b").state is InstanceState.READY
    await sup.close()


async def test_a_busy_model_is_never_put_to_sleep_to_make_room() -> None:
    sup, sleep = await a_ready_beside_another_program()
    sup.request_started("a")
    with pytest.raises(RoomRefusedError, match="busy") as refused:
        await sup.ensure_ready("b")
    assert refused.value.busy == ("a",)
    assert sleep.calls == []
    assert sup.get("a").state is InstanceState.READY
    sup.request_finished("a")
    await sup.close()
