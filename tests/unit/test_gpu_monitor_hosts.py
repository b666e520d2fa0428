"""The GPU monitor over several hosts: each host's probe read at once, each model measured on
its own host's GPUs only, and a host whose GPUs cannot be read said so beside the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import (
    GpuProcess,
    GpuReading,
    GpuStatus,
    HostGpuProblem,
    ModelVram,
    VramReport,
)
from ryx_desktop.core.gpu_monitor import (
    NO_HOST_GPU_MESSAGE,
    NO_PROBE_HINT,
    GpuMonitor,
    build_vram_report,
    merge_host_reports,
)
from ryx_desktop.core.ports import ContainerInfo, ContainerStatus
from ryx_desktop.core.states import InstanceState
from tests.support.fakes import VirtualClock, settle
from tests.support.hosts_supervisor import HostsSupervisor

GiB = 1024**3
SSH_DOWN = GpuReading(
    message="nvidia-smi could not be run: ssh: connect to host gpu2 port 22: Connection refused",
    hint="Check that nvidia-smi runs on that host.",
)


def config() -> Config:
    return Config.model_validate(
        {
            "hosts": {"gpu2": {"url": "ssh://me@gpu2"}},
            "models": {
                "a": {"model": "/models/a", "port": 8001, "gpu_memory_utilization": 0.4},
                "big": {
                    "model": "/models/big",
                    "port": 8002,
                    "host": "gpu2",
                    "gpu_memory_utilization": 0.5,
                },
                "c": {
                    "model": "/models/c",
                    "port": 8003,
                    "host": "any",
                    "gpu_memory_utilization": 0.2,
                },
                "remote": {"url": "http://127.0.0.1:9000"},
            },
        }
    )


def gpu(name: str, used: int, *processes: GpuProcess) -> GpuStatus:
    return GpuStatus(
        index=0,
        name=name,
        total_bytes=80 * GiB,
        used_bytes=used,
        free_bytes=80 * GiB - used,
        utilization_percent=10.0,
        processes=processes,
    )


#: The same PIDs on both machines: 100 is model a's on this one, 200 is big's on gpu2.
LOCAL_READING = GpuReading(
    gpus=(gpu("NVIDIA RTX 6000", 11 * GiB, GpuProcess(100, 8 * GiB), GpuProcess(200, 3 * GiB)),)
)
GPU2_READING = GpuReading(
    gpus=(gpu("NVIDIA H200", 41 * GiB, GpuProcess(200, 40 * GiB), GpuProcess(100, GiB)),)
)


class FakeProbe:
    """Returns ``reading`` (or raises ``error``); ``gate``, when set, is awaited first."""

    def __init__(self, reading: GpuReading) -> None:
        self.reading = reading
        self.error: Exception | None = None
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.reading_now = asyncio.Event()

    async def read(self) -> GpuReading:
        self.reads += 1
        self.reading_now.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.reading

    async def close(self) -> None:
        pass


class PidRuntime:
    """The monitor's view of a runtime over several engines: PIDs by container id."""

    def __init__(self, pids: dict[str, tuple[int, ...]]) -> None:
        self.pids = pids
        self.inspected: list[str] = []

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self.inspected.append(container_id)
        return ContainerInfo(
            id=container_id,
            name=container_id,
            model_key=container_id,
            status=ContainerStatus.RUNNING,
            pids=self.pids[container_id],
        )


class Rig:
    def __init__(self, *, remote: bool = True, **monitor: Any) -> None:
        self.sup = HostsSupervisor(config())
        self.sup.set("a", state=InstanceState.READY, container_id="cid-a")
        self.sup.set("big", state=InstanceState.READY, container_id="cid-big")
        self.runtime = PidRuntime({"cid-a": (100,), "cid-big": (200,)})
        self.local = FakeProbe(LOCAL_READING)
        self.gpu2 = FakeProbe(GPU2_READING)
        self.clock = VirtualClock()
        self.monitor = GpuMonitor(
            self.local,
            self.sup,  # type: ignore[arg-type]
            self.runtime,  # type: ignore[arg-type]
            self.clock,
            remote_probes={"gpu2": self.gpu2} if remote else {},
            **monitor,
        )


def models(report: VramReport, host: str) -> list[ModelVram]:
    return [m for g in report.gpus if g.host == host for m in g.models]


@pytest.mark.asyncio
async def test_each_model_is_measured_on_its_own_hosts_gpus_only() -> None:
    rig = Rig()
    report = await rig.monitor.poll_once()
    assert report.found and report.message == "" and report.host_problems == ()
    assert report.hosts == ("local", "gpu2") and report.several_hosts
    local, remote = report.gpus
    assert (local.host, local.name, remote.host, remote.name) == (
        "local",
        "NVIDIA RTX 6000",
        "gpu2",
        "NVIDIA H200",
    )
    # PID 200 on this machine is not big's, PID 100 on gpu2 is not a's.
    assert models(report, "local") == [
        ModelVram("a", "a", used_bytes=8 * GiB, budget_fraction=0.4, running=True),
        ModelVram("c", "c", used_bytes=None, budget_fraction=0.2, running=False),
    ]
    assert local.other_bytes == 3 * GiB
    assert models(report, "gpu2") == [
        ModelVram("big", "big", used_bytes=40 * GiB, budget_fraction=0.5, running=True),
        ModelVram("c", "c", used_bytes=None, budget_fraction=0.2, running=False),
    ]
    assert remote.other_bytes == GiB
    assert report.used_by("a") == 8 * GiB and report.used_by("big") == 40 * GiB
    assert sorted(rig.runtime.inspected) == ["cid-a", "cid-big"]


@pytest.mark.asyncio
async def test_a_model_placed_on_a_host_is_drawn_there_alone() -> None:
    rig = Rig()
    rig.sup.set("c", state=InstanceState.READY, container_id="cid-c", host="gpu2")
    rig.runtime.pids["cid-c"] = (300,)
    rig.gpu2.reading = GpuReading(gpus=(gpu("NVIDIA H200", 60 * GiB, GpuProcess(300, 20 * GiB)),))
    report = await rig.monitor.poll_once()
    assert [m.key for m in models(report, "local")] == ["a"]
    assert [(m.key, m.used_bytes) for m in models(report, "gpu2")] == [
        ("big", 0),
        ("c", 20 * GiB),
    ]


@pytest.mark.asyncio
async def test_every_hosts_probe_is_read_at_the_same_time() -> None:
    rig = Rig()
    # Each probe answers only once the other is being read: one after the other would hang.
    rig.local.gate, rig.gpu2.gate = asyncio.Event(), asyncio.Event()
    poll = asyncio.ensure_future(rig.monitor.poll_once())
    await asyncio.wait_for(rig.local.reading_now.wait(), 5)
    await asyncio.wait_for(rig.gpu2.reading_now.wait(), 5)
    assert not poll.done()
    rig.local.gate.set()
    rig.gpu2.gate.set()
    report = await asyncio.wait_for(poll, 5)
    assert [g.host for g in report.gpus] == ["local", "gpu2"]


@pytest.mark.asyncio
async def test_a_host_whose_gpus_cannot_be_read_says_why_beside_the_others() -> None:
    rig = Rig()
    rig.gpu2.reading = SSH_DOWN
    report = await rig.monitor.poll_once()
    assert report.found and report.message == ""  # this machine's GPU was read
    assert report.host_problems == (HostGpuProblem("gpu2", SSH_DOWN.message, SSH_DOWN.hint),)
    local, remote = report.gpus
    assert local.name == "NVIDIA RTX 6000"
    # gpu2's GPU with its models' budgets only, as this machine's without a driver.
    assert (remote.host, remote.name, remote.total_bytes) == ("gpu2", "GPU 0", None)
    assert [(m.key, m.used_bytes) for m in remote.models] == [("big", None), ("c", None)]
    assert rig.runtime.inspected == ["cid-a"]  # nothing to match on gpu2: no PIDs asked there

    rig.gpu2.error = RuntimeError("the SSH connection broke")
    report = await rig.monitor.poll_once()
    assert report.found
    assert report.host_problems == (
        HostGpuProblem("gpu2", "Reading the GPUs of gpu2 failed: the SSH connection broke"),
    )


@pytest.mark.asyncio
async def test_when_no_host_gives_a_gpu_the_report_says_so_and_polls_slowly() -> None:
    rig = Rig(interval=2.0, idle_factor=10.0)
    rig.local.reading = GpuReading(message="No NVIDIA GPU found", hint="Install the driver.")
    rig.gpu2.reading = SSH_DOWN
    await rig.monitor.open()
    await settle()
    report = rig.monitor.report
    assert report is not None and not report.found
    assert (report.message, report.hint) == (NO_HOST_GPU_MESSAGE, "Install the driver.")
    assert [p.host for p in report.host_problems] == ["local", "gpu2"]
    await rig.clock.advance(19.0)
    assert (rig.local.reads, rig.gpu2.reads) == (1, 1)
    await rig.clock.advance(1.0)
    assert (rig.local.reads, rig.gpu2.reads) == (2, 2)
    await rig.monitor.close()


@pytest.mark.asyncio
async def test_every_probe_raising_is_a_failed_poll() -> None:
    rig = Rig()
    rig.local.error = RuntimeError("driver fell over")
    rig.gpu2.error = RuntimeError("ssh fell over")
    with pytest.raises(RuntimeError, match="driver fell over"):
        await rig.monitor.poll_once()
    assert rig.monitor.report is None


@pytest.mark.asyncio
async def test_a_host_without_a_probe_is_listed_with_budgets_and_says_so() -> None:
    rig = Rig(remote=False)
    report = await rig.monitor.poll_once()
    assert report.found and report.hosts == ("local", "gpu2")
    (problem,) = report.host_problems
    assert problem == HostGpuProblem(
        "gpu2", "The GPUs of gpu2 are not read from here", NO_PROBE_HINT
    )
    assert [m.key for m in models(report, "gpu2")] == ["big", "c"]


def test_one_hosts_report_is_that_report() -> None:
    sup = HostsSupervisor(Config.model_validate({"models": {"a": {"model": "/m", "port": 8001}}}))
    alone = build_vram_report(LOCAL_READING, sup.instances(), {"a": (100,)}, sup.config, (0,))
    merged = merge_host_reports([("local", alone)])
    assert merged.gpus == alone.gpus and merged.hosts == ("local",)
    assert not merged.several_hosts and merged.found and merged.host_problems == ()


@pytest.mark.asyncio
async def test_a_host_that_does_not_answer_is_not_asked_for_its_gpus() -> None:
    rig = Rig()
    rig.sup.set_host_problem("gpu2", "ssh: connect to host gpu2 port 22: Connection refused")
    report = await rig.monitor.poll_once()
    assert rig.gpu2.reads == 0 and rig.local.reads == 1
    assert report.found
    assert report.host_problems == (
        HostGpuProblem(
            "gpu2", "gpu2 does not answer: ssh: connect to host gpu2 port 22: Connection refused"
        ),
    )
    rig.sup.set_host_problem("gpu2", None)
    await rig.monitor.poll_once()
    assert rig.gpu2.reads == 1  # read again once it answers
