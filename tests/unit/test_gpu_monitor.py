"""The VRAM report (pure) and the GPU monitor polling a fake probe beside the real supervisor."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus, ModelVram, VramReport
from ryx_desktop.core.gpu_monitor import GpuMonitor, build_vram_report
from ryx_desktop.core.ports import ContainerInfo
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock, settle

GiB = 1024**3
NO_GPU = GpuReading(message="No NVIDIA GPU found", hint="Install the NVIDIA driver.")


def config() -> Config:
    return Config.model_validate(
        {
            "models": {
                "a": {"model": "/models/a", "port": 8001, "gpu_memory_utilization": 0.4},
                "b": {
                    "model": "/models/b",
                    "port": 8002,
                    "gpu_memory_utilization": 0.3,
                    "devices": [1],
                },
                "cpu": {"model": "/models/cpu", "port": 8003, "devices": "none"},
                "remote": {"url": "http://127.0.0.1:9000"},
            }
        }
    )


def instance(key: str, state: InstanceState = InstanceState.READY) -> Instance:
    return Instance(key=key, name=f"Model {key}", served_name=key, state=state)


def gpu(index: int, used: int, *processes: GpuProcess) -> GpuStatus:
    return GpuStatus(
        index=index,
        name=f"NVIDIA RTX {index}",
        total_bytes=24 * GiB,
        used_bytes=used,
        free_bytes=24 * GiB - used,
        utilization_percent=50.0,
        processes=processes,
    )


def keys(report: VramReport, index: int) -> list[str]:
    return [m.key for m in report.gpus[index].models]


# ---- build_vram_report ---------------------------------------------------------------------


def test_models_are_measured_through_their_container_pids() -> None:
    reading = GpuReading(
        gpus=(
            gpu(
                0,
                12 * GiB,
                GpuProcess(100, 8 * GiB),
                GpuProcess(101, GiB),
                GpuProcess(900, 3 * GiB),
            ),
            gpu(1, 5 * GiB, GpuProcess(200, 5 * GiB)),
        )
    )
    report = build_vram_report(
        reading,
        [instance("a"), instance("b"), instance("cpu", InstanceState.STOPPED), instance("remote")],
        {"a": (100, 101), "b": (200,)},
        config(),
        (0, 1),
    )
    assert report.found and report.message == ""
    first, second = report.gpus
    assert first.models == (
        ModelVram("a", "Model a", used_bytes=9 * GiB, budget_fraction=0.4, running=True),
    )
    assert first.other_bytes == 3 * GiB  # pid 900 belongs to no model
    assert (first.name, first.total_bytes, first.utilization_percent) == (
        "NVIDIA RTX 0",
        24 * GiB,
        50.0,
    )
    # "all" puts a on GPU 1 too (nothing of it there yet); b is planned on GPU 1 only.
    assert second.models == (
        ModelVram("a", "Model a", used_bytes=0, budget_fraction=0.4, running=True),
        ModelVram("b", "Model b", used_bytes=5 * GiB, budget_fraction=0.3, running=True),
    )
    assert second.other_bytes == 0
    assert report.used_by("a") == 9 * GiB and report.used_by("b") == 5 * GiB
    assert report.used_by("cpu") is None and report.used_by("remote") is None


def test_stopped_models_show_their_budget_and_no_measurement() -> None:
    reading = GpuReading(gpus=(gpu(0, 3 * GiB, GpuProcess(900, 3 * GiB)),))
    report = build_vram_report(
        reading, [instance("a", InstanceState.STOPPED)], {"a": (900,)}, config(), (0,)
    )
    (only,) = report.gpus
    assert only.models == (ModelVram("a", "Model a", None, 0.4, running=False),)
    assert only.other_bytes == 3 * GiB


def test_unknown_pids_or_unknown_process_memory_are_none() -> None:
    reading = GpuReading(gpus=(gpu(0, 4 * GiB, GpuProcess(100, None)),))
    report = build_vram_report(reading, [instance("a")], {"a": (100,)}, config(), (0,))
    assert report.gpus[0].models[0].used_bytes is None  # NVML could not tell (WDDM, MIG)
    report = build_vram_report(reading, [instance("a")], {}, config(), (0,))
    assert report.gpus[0].models[0].used_bytes is None  # the container's PIDs are not known


def test_a_model_found_on_a_gpu_it_is_not_planned_on_is_shown_there() -> None:
    reading = GpuReading(gpus=(gpu(0, 2 * GiB, GpuProcess(200, 2 * GiB)), gpu(1, 0)))
    report = build_vram_report(reading, [instance("b")], {"b": (200,)}, config(), (0, 1))
    assert keys(report, 0) == ["a", "b"]
    assert report.gpus[0].models[1].used_bytes == 2 * GiB
    assert keys(report, 1) == ["a", "b"]


def test_devices_none_and_external_models_are_on_no_gpu() -> None:
    reading = GpuReading(gpus=(gpu(0, 0), gpu(1, 0)))
    report = build_vram_report(reading, [], {}, config(), (0, 1))
    assert keys(report, 0) == ["a"]
    assert keys(report, 1) == ["a", "b"]
    assert all(not m.running for g in report.gpus for m in g.models)


def test_no_gpu_lists_each_configured_gpu_with_budgets_and_the_message() -> None:
    report = build_vram_report(NO_GPU, [instance("a")], {"a": (100,)}, config(), (0, 1))
    assert not report.found
    assert (report.message, report.hint) == ("No NVIDIA GPU found", "Install the NVIDIA driver.")
    first, second = report.gpus
    assert (first.index, first.name, first.total_bytes, first.used_bytes) == (
        0,
        "GPU 0",
        None,
        None,
    )
    assert first.models == (ModelVram("a", "Model a", None, 0.4, running=True),)
    assert second.name == "GPU 1"
    assert [(m.key, m.budget_fraction, m.running) for m in second.models] == [
        ("a", 0.4, True),
        ("b", 0.3, False),
    ]
    assert first.other_bytes is None


# ---- GpuMonitor ----------------------------------------------------------------------------


class FakeProbe:
    """Returns ``reading`` (or raises ``error``) and counts reads."""

    def __init__(self, reading: GpuReading) -> None:
        self.reading = reading
        self.error: Exception | None = None
        self.reads = 0
        self.closed = False

    async def read(self) -> GpuReading:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.reading

    async def close(self) -> None:
        self.closed = True


class CountingInspect:
    """The monitor's view of the runtime: the fake runtime's ``inspect``, counted."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.inspected: list[str] = []

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self.inspected.append(container_id)
        return await self.runtime.inspect(container_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


class Rig:
    def __init__(self, reading: GpuReading, **monitor: Any) -> None:
        self.config = config()
        self.runtime = FakeRuntime()
        self.clock = VirtualClock()
        self.sup = Supervisor(
            self.config, self.runtime, FakeHealth(self.runtime), self.clock, gpu_indices=(0, 1)
        )
        self.probe = FakeProbe(reading)
        self.view = CountingInspect(self.runtime)
        self.monitor = GpuMonitor(
            self.probe,
            self.sup,
            self.view,  # type: ignore[arg-type]
            self.clock,
            interval=2.0,
            gpu_indices=(0, 1),
            **monitor,
        )
        self.seen: list[VramReport] = []
        self.monitor.subscribe(self.seen.append)

    async def start(self, key: str, pids: tuple[int, ...]) -> str:
        await self.sup.ensure_ready(key)
        container = self.runtime.by_key(key)
        assert container is not None
        container.info = replace(container.info, pids=pids)
        return container.info.id

    async def close(self) -> None:
        await self.monitor.close()
        await self.sup.close()


def two_gpu_reading(a_used: int = 8 * GiB) -> GpuReading:
    return GpuReading(
        gpus=(
            gpu(0, a_used + GiB, GpuProcess(100, a_used), GpuProcess(900, GiB)),
            gpu(1, 0),
        )
    )


@pytest.mark.asyncio
async def test_polls_publish_reports_to_subscribers_on_the_clock() -> None:
    rig = Rig(two_gpu_reading())
    await rig.sup.open()
    await rig.start("a", (100,))
    assert rig.monitor.report is None and rig.monitor.used_by("a") is None
    await rig.monitor.open()
    await settle()
    assert rig.probe.reads == 1
    assert len(rig.seen) == 1 and rig.monitor.report is rig.seen[-1]
    assert rig.monitor.used_by("a") == 8 * GiB
    assert rig.seen[-1].gpus[0].other_bytes == GiB
    await rig.clock.advance(2.0)
    assert rig.probe.reads == 2
    assert len(rig.seen) == 1  # nothing changed, nothing republished
    rig.probe.reading = two_gpu_reading(a_used=10 * GiB)
    await rig.clock.advance(2.0)
    assert rig.probe.reads == 3 and len(rig.seen) == 2
    assert rig.monitor.used_by("a") == 10 * GiB
    await rig.close()


@pytest.mark.asyncio
async def test_container_pids_are_inspected_once_per_container() -> None:
    rig = Rig(two_gpu_reading(), pid_refresh=15.0)
    await rig.sup.open()
    cid = await rig.start("a", (100, 900))  # every process on the GPU is accounted for
    for _ in range(10):
        await rig.monitor.poll_once()
        await rig.clock.advance(2.0)
    assert rig.view.inspected == [cid]
    assert rig.monitor.used_by("a") == 9 * GiB
    await rig.close()


@pytest.mark.asyncio
async def test_pids_are_refreshed_when_the_gpu_shows_processes_no_model_accounts_for() -> None:
    # vLLM starts its engine process after the API server: a PID list read early misses it.
    rig = Rig(two_gpu_reading(), pid_refresh=15.0)
    await rig.sup.open()
    cid = await rig.start("a", (100,))
    await rig.monitor.poll_once()
    assert rig.monitor.used_by("a") == 8 * GiB
    container = rig.runtime.containers[cid]
    container.info = replace(container.info, pids=(100, 900))
    await rig.clock.advance(10.0)
    await rig.monitor.poll_once()
    assert rig.view.inspected == [cid]  # not yet: at most every 15 s
    await rig.clock.advance(6.0)
    await rig.monitor.poll_once()
    assert rig.view.inspected == [cid, cid]
    assert rig.monitor.used_by("a") == 9 * GiB
    await rig.close()


@pytest.mark.asyncio
async def test_a_model_stopping_updates_the_report_without_a_poll() -> None:
    rig = Rig(two_gpu_reading())
    await rig.sup.open()
    await rig.start("a", (100,))
    await rig.monitor.open()
    await settle()
    assert rig.seen[-1].gpus[0].models[0].running
    await rig.sup.stop("a")
    assert rig.probe.reads == 1
    assert not rig.seen[-1].gpus[0].models[0].running
    assert rig.monitor.used_by("a") is None
    await rig.close()


@pytest.mark.asyncio
async def test_without_a_gpu_it_polls_slowly_and_never_asks_docker() -> None:
    rig = Rig(NO_GPU)
    await rig.sup.open()
    await rig.start("a", (100,))
    await rig.monitor.open()
    await settle()
    report = rig.monitor.report
    assert report is not None and report.message == "No NVIDIA GPU found"
    assert [m.key for m in report.gpus[1].models] == ["a", "b"]
    await rig.clock.advance(19.0)
    assert rig.probe.reads == 1
    await rig.clock.advance(1.0)
    assert rig.probe.reads == 2
    assert rig.view.inspected == []
    await rig.close()


@pytest.mark.asyncio
async def test_a_failing_probe_does_not_end_the_polling() -> None:
    rig = Rig(two_gpu_reading())
    await rig.sup.open()
    rig.probe.error = RuntimeError("driver fell over")
    await rig.monitor.open()
    await settle()
    assert rig.probe.reads == 1 and rig.monitor.report is None
    rig.probe.error = None
    await rig.clock.advance(20.0)
    assert rig.probe.reads == 2 and rig.monitor.report is not None
    await rig.close()


@pytest.mark.asyncio
async def test_close_stops_polling_and_unsubscribes() -> None:
    rig = Rig(two_gpu_reading())
    await rig.sup.open()
    await rig.start("a", (100,))
    await rig.monitor.open()
    await settle()
    await rig.monitor.close()
    published = len(rig.seen)
    await rig.clock.advance(100.0)
    await rig.sup.stop("a")
    assert rig.probe.reads == 1 and len(rig.seen) == published
    assert not rig.probe.closed  # the probe belongs to whoever built it
    await rig.sup.close()


@pytest.mark.asyncio
async def test_unsubscribe_stops_deliveries() -> None:
    rig = Rig(two_gpu_reading())
    late: list[VramReport] = []
    unsubscribe = rig.monitor.subscribe(late.append)
    await rig.monitor.poll_once()
    unsubscribe()
    unsubscribe()  # twice is harmless
    rig.probe.reading = two_gpu_reading(a_used=GiB)
    await rig.monitor.poll_once()
    assert len(late) == 1 and len(rig.seen) == 2


@pytest.mark.asyncio
async def test_pids_are_read_again_when_the_model_becomes_ready() -> None:
    rig = Rig(two_gpu_reading(), pid_refresh=1000.0)
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.ensure_future(rig.sup.ensure_ready("a"))
    await settle()
    container = rig.runtime.by_key("a")
    assert container is not None and rig.sup.get("a").state is InstanceState.STARTING
    container.info = replace(container.info, pids=(1,))  # the API server alone, still loading
    await rig.monitor.poll_once()
    assert rig.monitor.used_by("a") == 0
    container.info = replace(container.info, pids=(1, 100))
    container.serving = True
    await rig.clock.advance(2.0)
    await task
    await rig.monitor.poll_once()
    assert rig.view.inspected == [container.info.id] * 2
    assert rig.monitor.used_by("a") == 8 * GiB
    await rig.close()


@pytest.mark.asyncio
async def test_a_late_subscriber_gets_the_latest_report_at_once() -> None:
    rig = Rig(NO_GPU)
    await rig.monitor.poll_once()
    await rig.monitor.poll_once()  # the same again: not republished
    assert len(rig.seen) == 1
    late: list[VramReport] = []
    rig.monitor.subscribe(late.append)
    assert late == [rig.monitor.report]
