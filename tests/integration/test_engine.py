"""The supervisor with the real adapters: a real Docker engine and containers of the fake vLLM.

Only the GPU is faked, where a policy needs one: ``GpuFakingRuntime`` plans models on GPU 0 but
starts their containers without a device request, as if the NVIDIA toolkit handed one over.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import docker
import pytest
import pytest_asyncio

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import (
    BudgetExceededError,
    ContainerExitedError,
    NoGpuRuntimeError,
    OutOfMemoryError,
    PortInUseError,
)
from ryx_desktop.core.ports import Clock, ProbeResult
from ryx_desktop.core.states import Instance, InstanceState, ProgressPhase
from ryx_desktop.core.supervisor import Supervisor
from tests.integration.runtimes import GpuFakingRuntime, OffsetClock
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

SMALL = "/models/small/general/qwen2.5-3b"
CODER = "/models/medium/coding/qwen2.5-coder-7b-gptq"
GENERAL = "/models/medium/general/qwen2.5-7b-gptq"


class CountingProbe(HttpHealthProbe):
    """The real probe, counting its rounds so a test can wait for the next one."""

    probes = 0

    async def probe(self, base_url: str, api_key: str | None = None) -> ProbeResult:
        self.probes += 1
        return await super().probe(base_url, api_key)


Make = Callable[..., Supervisor]


@pytest_asyncio.fixture
async def supervisor() -> AsyncIterator[Make]:
    made: list[tuple[Supervisor, DockerRuntime, HttpHealthProbe]] = []

    def make(config: Config, *, clock: Clock | None = None, **kw: Any) -> Supervisor:
        runtime = GpuFakingRuntime(config.docker.host)
        health = CountingProbe()
        sup = Supervisor(
            config,
            runtime,
            health,
            clock or MonotonicClock(),
            probe_interval=0.1,
            drain_timeout=10,
            **kw,
        )
        made.append((sup, runtime, health))
        return sup

    yield make
    for sup, runtime, health in made:
        await sup.close()
        await health.close()
        await runtime.close()


def runtime_of(sup: Supervisor) -> GpuFakingRuntime:
    runtime = sup._runtime
    assert isinstance(runtime, GpuFakingRuntime)
    return runtime


def ryx_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"name": "ryx-vllm-"})


async def test_start_progress_ready_stop_on_the_real_engine(
    make_config: Callable[..., Config], supervisor: Make, docker_client: docker.DockerClient
) -> None:
    config = make_config(
        {"small": {"model": SMALL, "env": {"FAKE_VLLM_LOAD_SECONDS": "1.2"}, "aliases": ["s"]}}
    )
    sup = supervisor(config)
    seen: list[Instance] = []
    sup.subscribe(seen.append)
    await sup.open()
    inst = await sup.ensure_ready("s")
    assert inst.state is InstanceState.READY
    states = [i.state for i in seen]
    assert states[0] is InstanceState.STARTING
    assert states[-1] is InstanceState.READY
    percents = [
        i.progress.percent
        for i in seen
        if i.progress and i.progress.phase is ProgressPhase.LOAD and i.progress.percent is not None
    ]
    assert percents, "no load progress was read from the container's log"
    assert percents == sorted(percents)
    assert percents[-1] == 100.0

    attrs = docker_client.api.inspect_container(inst.container_id)
    bindings = attrs["HostConfig"]["PortBindings"]["8000/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(inst.port)}]
    published = attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    assert {b["HostIp"] for b in published} == {"127.0.0.1"}
    assert attrs["Config"]["Labels"]["io.ryx.model"] == "small"
    assert attrs["Name"] == "/ryx-vllm-small"

    stopped = await sup.stop("small")
    assert stopped.state is InstanceState.STOPPED
    assert ryx_containers(docker_client) == []
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", inst.port or 0))


async def test_a_restarted_app_adopts_running_containers(
    make_config: Callable[..., Config],
    supervisor: Make,
    docker_client: docker.DockerClient,
    fake_image: str,
    models_dir: Any,
) -> None:
    config = make_config(
        {"small": {"model": SMALL}, "coder": {"model": CODER, "served_name": "coder"}}
    )
    first = supervisor(config)
    await first.open()
    started = await first.ensure_ready("small")
    await first.close()
    # compose started "coder": same name scheme, no labels of ours
    coder_port = config.models["coder"].port  # type: ignore[union-attr]
    docker_client.containers.run(
        fake_image,
        ["--model", CODER, "--served-model-name", "coder", "--port", "8000"],
        name="ryx-vllm-coder",
        detach=True,
        ports={"8000/tcp": ("127.0.0.1", coder_port)},
        volumes={str(models_dir): {"bind": "/models", "mode": "ro"}},
    )
    before = docker_client.api.inspect_container(started.container_id)["State"]["StartedAt"]

    second = supervisor(config)
    await second.open()
    await wait_for(
        lambda: all(i.state is InstanceState.READY for i in second.instances()), "adoption"
    )
    small, coder = second.get("small"), second.get("coder")
    assert small.adopted
    assert small.container_id == started.container_id
    assert not small.config_changed
    assert coder.adopted
    assert (await second.ensure_ready("coder")).state is InstanceState.READY
    assert runtime_of(second).started == []
    after = docker_client.api.inspect_container(started.container_id)["State"]["StartedAt"]
    assert after == before  # not restarted


async def test_changed_config_is_reported_not_applied(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config({"small": {"model": SMALL, "max_model_len": 2048}})
    first = supervisor(config)
    await first.open()
    started = await first.ensure_ready("small")
    changed = config.model_copy(
        update={
            "models": {"small": config.models["small"].model_copy(update={"max_model_len": 1024})}
        }
    )
    second = supervisor(changed)
    await second.open()
    await wait_for(lambda: second.get("small").state is InstanceState.READY, "adoption")
    inst = second.get("small")
    assert inst.config_changed
    assert inst.note == "config changed, restart to apply"
    assert inst.container_id == started.container_id


async def test_crash_during_load_fails_with_exit_code_and_log_tail(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config({"small": {"model": SMALL, "env": {"FAKE_VLLM_CRASH": "1"}}})
    sup = supervisor(config)
    await sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await sup.ensure_ready("small")
    assert not isinstance(caught.value, OutOfMemoryError)
    failure = sup.get("small").failure
    assert sup.get("small").state is InstanceState.FAILED
    assert failure is not None
    assert failure.exit_code == 1
    # The reason is the root cause found in the whole log (far above the tail, which ends in the
    # API server's generic "Engine core initialization failed"); the tail is kept as evidence.
    assert "RuntimeError: CUDA error: an illegal memory access" in failure.message
    assert "exited with code 1" in failure.message
    assert 0 < len(failure.log_tail) <= 20


async def test_exit_137_without_oom_killed_is_a_kill_not_out_of_memory(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    # Docker reports OOMKilled=false here: something killed it (`docker kill`, a SIGKILL).
    config = make_config({"small": {"model": SMALL, "env": {"FAKE_VLLM_EXIT_CODE": "137"}}})
    sup = supervisor(config)
    await sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await sup.ensure_ready("small")
    assert not isinstance(caught.value, OutOfMemoryError)
    assert caught.value.exit_code == 137
    assert "was killed (exit code 137, SIGKILL)" in caught.value.message
    assert "ran out of memory" not in caught.value.message
    assert "dmesg" in caught.value.hint


async def test_port_taken_by_another_container_or_a_socket(
    make_config: Callable[..., Config],
    supervisor: Make,
    docker_client: docker.DockerClient,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    config = make_config({"small": {"model": SMALL, "port": port}, "coder": {"model": CODER}})
    holder = supervisor(config)
    await holder.open()
    await holder.ensure_ready("small")
    # a second config that puts "coder" on the port "small" holds
    clash = make_config({"coder": {"model": CODER, "port": port}})
    sup = supervisor(clash)
    await sup.open()
    with pytest.raises(PortInUseError) as caught:
        await sup.ensure_ready("coder")
    assert str(port) in caught.value.message
    assert "ryx-vllm-small" in caught.value.message
    assert [c.name for c in ryx_containers(docker_client)] == ["ryx-vllm-small"]
    await holder.stop("small")

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT of the last
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(PortInUseError) as caught:
            await sup.ensure_ready("coder")
    assert str(port) in caught.value.message
    assert caught.value.hint
    assert ryx_containers(docker_client) == []


async def test_devices_all_without_nvidia_toolkit(
    make_config: Callable[..., Config], docker_client: docker.DockerClient
) -> None:
    config = make_config({"small": {"model": SMALL, "devices": "all"}})
    runtime, health = DockerRuntime(), HttpHealthProbe()
    sup = Supervisor(config, runtime, health, MonotonicClock(), probe_interval=0.1)
    try:
        await sup.open()
        with pytest.raises(NoGpuRuntimeError) as caught:
            await sup.ensure_ready("small")
        assert "NVIDIA container toolkit" in caught.value.hint
        assert "devices: none" in caught.value.hint
        assert sup.get("small").state is InstanceState.FAILED
        assert ryx_containers(docker_client) == []
    finally:
        await sup.close()
        await health.close()
        await runtime.close()


async def test_exclusive_policy_swaps_models_on_a_gpu(
    make_config: Callable[..., Config], supervisor: Make, docker_client: docker.DockerClient
) -> None:
    config = make_config(
        {"a": {"model": SMALL, "devices": [0]}, "b": {"model": CODER, "devices": [0]}},
        gpu={"policy": "exclusive"},
    )
    sup = supervisor(config)
    await sup.open()
    await sup.ensure_ready("a")
    names_while_b_starts: list[list[str]] = []
    sup.subscribe(
        lambda i: (
            names_while_b_starts.append([c.name for c in ryx_containers(docker_client)])
            if i.key == "b" and i.state is InstanceState.READY
            else None
        )
    )
    await sup.ensure_ready("b")
    assert sup.get("a").state is InstanceState.STOPPED
    assert "make room for b" in sup.get("a").note
    assert names_while_b_starts == [["ryx-vllm-b"]]


async def test_fractional_policy_evicts_lru_idle_and_refuses_when_busy(
    make_config: Callable[..., Config], supervisor: Make, docker_client: docker.DockerClient
) -> None:
    share = {"devices": [0], "gpu_memory_utilization": 0.45}
    config = make_config(
        {
            "a": {"model": SMALL, **share},
            "b": {"model": CODER, **share},
            "c": {"model": GENERAL, **share},
        },
        gpu={"policy": "fractional", "headroom": 0.05},
    )
    sup = supervisor(config)
    await sup.open()
    await sup.ensure_ready("b")
    await sup.ensure_ready("a")
    async with sup.track_request("a"):
        pass  # a was used after b: b is the least recently used
    await sup.ensure_ready("c")
    assert sup.get("b").state is InstanceState.STOPPED
    running = sorted(c.name for c in ryx_containers(docker_client))
    assert running == ["ryx-vllm-a", "ryx-vllm-c"]

    sup.request_started("a")
    sup.request_started("c")
    with pytest.raises(BudgetExceededError):
        await sup.ensure_ready("b")
    assert sorted(c.name for c in ryx_containers(docker_client)) == running
    sup.request_finished("a")
    sup.request_finished("c")


async def test_five_concurrent_ensure_ready_make_one_container(
    make_config: Callable[..., Config], supervisor: Make, docker_client: docker.DockerClient
) -> None:
    config = make_config(
        {"small": {"model": SMALL, "aliases": ["s"], "env": {"FAKE_VLLM_LOAD_SECONDS": "1"}}}
    )
    sup = supervisor(config)
    await sup.open()
    results = await asyncio.gather(
        *(sup.ensure_ready(n) for n in ["small", "s", SMALL, "s", "small"])
    )
    assert {r.container_id for r in results} == {results[0].container_id}
    assert runtime_of(sup).started == ["small"]
    assert len(ryx_containers(docker_client)) == 1


async def test_idle_ttl_stops_an_idle_model(
    make_config: Callable[..., Config], supervisor: Make, docker_client: docker.DockerClient
) -> None:
    clock = OffsetClock()
    config = make_config({"small": {"model": SMALL, "idle_ttl": 600}})
    sup = supervisor(config, clock=clock)
    await sup.open()
    await sup.ensure_ready("small")
    health = sup._health
    assert isinstance(health, CountingProbe)
    async with sup.track_request("small"):
        clock.offset += 601  # a long request does not count as idle
        rounds = health.probes
        await wait_for(lambda: health.probes >= rounds + 2, "two monitor rounds")
        assert sup.get("small").state is InstanceState.READY
    clock.offset += 601
    await wait_for(lambda: sup.get("small").state is InstanceState.STOPPED, "idle stop")
    assert sup.get("small").note == "stopped after 600 s idle"
    assert ryx_containers(docker_client) == []
