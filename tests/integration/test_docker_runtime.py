"""``DockerRuntime`` against the real engine, with containers of the fake vLLM image."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest
import pytest_asyncio

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.config import Config
from ryx_desktop.core.errors import (
    DockerUnavailableError,
    ImageMissingError,
    ModelPathMissingError,
    NoGpuRuntimeError,
    PortInUseError,
)
from ryx_desktop.core.ports import ContainerStatus, PullProgress, RuntimeEvent, RuntimeEventKind
from ryx_desktop.core.spec import LABEL_MANAGED, LABEL_MODEL, LABEL_SPEC_HASH, build_spec

T = TypeVar("T")
MakeConfig = Callable[..., Config]

GENERAL = "/models/medium/general/qwen2.5-7b-gptq"
CODER = "/models/medium/coding/qwen2.5-coder-7b-gptq"
SMALL = "/models/small/general/qwen2.5-3b"
MISSING_IMAGE = "ryx-test/does-not-exist:1"


@pytest_asyncio.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime()
    try:
        yield rt
    finally:
        await rt.close()


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def names_of(client: docker.DockerClient, name: str) -> list[str]:
    """Names of all containers (running or not) whose name is exactly ``name``."""
    found = client.containers.list(all=True, filters={"name": f"^/{name}$"}, ignore_removed=True)
    return [c.name for c in found]


def our_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def general(port: int | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": GENERAL, "served_name": "qwen", **extra}
    if port is not None:
        entry["port"] = port
    return entry


# --------------------------------------------------------------------------- start and stop


@pytest.mark.asyncio
async def test_start_runs_a_labelled_container_on_loopback_only(
    runtime: DockerRuntime, make_config: MakeConfig, docker_client: docker.DockerClient
) -> None:
    config = make_config({"medium-general": general()})
    spec = build_spec("medium-general", config, {"HF_TOKEN": "hf-secret"})

    info = await runtime.start(spec)

    assert info.name == "ryx-vllm-medium-general"
    assert info.model_key == "medium-general"
    assert info.status == ContainerStatus.RUNNING
    assert info.managed
    assert info.spec_hash == spec.spec_hash
    assert info.host_port == spec.host_port
    assert info.exit_code is None
    attrs = docker_client.api.inspect_container(info.id)
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_MODEL] == "medium-general"
    assert labels[LABEL_SPEC_HASH] == spec.spec_hash
    assert attrs["HostConfig"]["PortBindings"] == {
        "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(spec.host_port)}]
    }
    published = attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    assert published
    assert {b["HostIp"] for b in published} == {"127.0.0.1"}
    assert attrs["HostConfig"]["IpcMode"] == "host"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/models"]["RW"] is False
    assert mounts["/models"]["Source"] == str(config.docker.models_dir)
    assert mounts["/root/.cache/huggingface"]["RW"] is True
    assert "HF_TOKEN=hf-secret" in attrs["Config"]["Env"]
    assert attrs["Config"]["Cmd"] == list(spec.command)
    assert not attrs["HostConfig"].get("DeviceRequests")

    listed = await runtime.list_models()
    assert [i.id for i in listed] == [info.id]
    assert listed[0].pids  # host PIDs of the running server

    async def serving() -> bool:
        return any(
            "Application startup complete" in line for line in await runtime.logs(info.id, 20)
        )

    await eventually(serving, what="the fake to finish loading")  # it then stops at SIGTERM

    await runtime.stop(info.id, timeout=5)
    assert await runtime.inspect(info.id) is None
    assert names_of(docker_client, "ryx-vllm-medium-general") == []
    await runtime.stop(info.id, timeout=5)  # gone already: fine
    await runtime.remove(info.id)


@pytest.mark.asyncio
async def test_start_replaces_an_exited_container_of_the_same_name(
    runtime: DockerRuntime, make_config: MakeConfig, docker_client: docker.DockerClient
) -> None:
    config = make_config({"medium-general": general(env={"FAKE_VLLM_EXIT_CODE": "3"})})
    first = await runtime.start(build_spec("medium-general", config, {}))

    async def exited() -> bool:
        seen = await runtime.inspect(first.id)
        return seen is not None and seen.status == ContainerStatus.EXITED

    await eventually(exited, what="the first container to exit")
    config = make_config({"medium-general": general()})
    second = await runtime.start(build_spec("medium-general", config, {}))
    assert second.id != first.id
    assert await runtime.inspect(first.id) is None
    assert names_of(docker_client, "ryx-vllm-medium-general") == ["ryx-vllm-medium-general"]


@pytest.mark.asyncio
async def test_start_refuses_when_the_model_already_runs(
    runtime: DockerRuntime, make_config: MakeConfig
) -> None:
    config = make_config({"medium-general": general()})
    spec = build_spec("medium-general", config, {})
    await runtime.start(spec)
    with pytest.raises(Exception, match="container ryx-vllm-medium-general already runs"):
        await runtime.start(spec)


# --------------------------------------------------------------------------- logs


@pytest.mark.asyncio
async def test_follow_logs_yields_load_progress_and_ends_when_the_container_stops(
    runtime: DockerRuntime, make_config: MakeConfig
) -> None:
    config = make_config({"medium-general": general(env={"FAKE_VLLM_LOAD_SECONDS": "0.4"})})
    info = await runtime.start(build_spec("medium-general", config, {}))

    lines: list[str] = []

    async def read_until_ready() -> None:
        async for line in runtime.follow_logs(info.id, tail=-1):
            lines.append(line)
            if "Application startup complete" in line:
                break

    await asyncio.wait_for(read_until_ready(), 30)
    progress = [line for line in lines if line.startswith("Loading safetensors checkpoint shards")]
    assert progress[0].startswith("Loading safetensors checkpoint shards:   0% Completed | 0/4")
    assert progress[-1].startswith("Loading safetensors checkpoint shards: 100% Completed | 4/4")
    assert all(not line.endswith(("\n", "\r")) for line in lines)

    async def no_log_threads() -> bool:
        return not our_threads("ryx-logs-")

    await eventually(no_log_threads, 5, "the log thread to stop after the loop broke out")

    # "Application startup complete." is the server's last start-up line.
    async def last_three() -> list[str] | None:
        tail = await runtime.logs(info.id, 3)
        return tail if tail and "Application startup complete" in tail[-1] else None

    tail = await eventually(last_three, 10, "the server's last start-up line")
    assert len(tail) == 3

    # A follower with no history sees nothing old and ends when the container stops.
    follower = runtime.follow_logs(info.id)
    collected: list[str] = []

    async def follow_to_end() -> None:
        async for line in follower:
            collected.append(line)

    task = asyncio.create_task(follow_to_end())
    await runtime.stop(info.id, timeout=5)
    await asyncio.wait_for(task, 15)
    assert not any(line.startswith("Loading safetensors") for line in collected)
    assert await runtime.logs(info.id, 10) == []  # gone


@pytest.mark.asyncio
async def test_aclose_stops_the_log_thread(runtime: DockerRuntime, make_config: MakeConfig) -> None:
    config = make_config({"medium-general": general()})
    info = await runtime.start(build_spec("medium-general", config, {}))
    follower = runtime.follow_logs(info.id, tail=5)
    first = await asyncio.wait_for(anext(follower), 30)
    assert first
    assert our_threads("ryx-logs-")
    await follower.aclose()

    async def stopped() -> bool:
        return not our_threads("ryx-logs-")

    await eventually(stopped, 5, "the log thread to stop after aclose()")


# --------------------------------------------------------------------------- failures


@pytest.mark.asyncio
async def test_port_taken_by_another_container(
    runtime: DockerRuntime,
    make_config: MakeConfig,
    docker_client: docker.DockerClient,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    holder = make_config({"medium-general": general(port)})
    await runtime.start(build_spec("medium-general", holder, {}))
    wanted = make_config({"medium-coding": {"model": CODER, "port": port}})

    with pytest.raises(PortInUseError) as caught:
        await runtime.start(build_spec("medium-coding", wanted, {}))

    assert caught.value.message == (
        f"port {port} is already used by container ryx-vllm-medium-general"
    )
    assert "another `port:`" in caught.value.hint
    assert names_of(docker_client, "ryx-vllm-medium-coding") == []


@pytest.mark.asyncio
async def test_port_taken_by_a_plain_socket(
    runtime: DockerRuntime,
    make_config: MakeConfig,
    docker_client: docker.DockerClient,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    config = make_config({"medium-general": general(port)})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(PortInUseError) as caught:
            await runtime.start(build_spec("medium-general", config, {}))
    assert caught.value.message == f"port {port} is already in use by another program"
    assert names_of(docker_client, "ryx-vllm-medium-general") == []


@pytest.mark.asyncio
async def test_gpus_without_a_gpu_runtime(
    runtime: DockerRuntime, make_config: MakeConfig, docker_client: docker.DockerClient
) -> None:
    config = make_config({"medium-general": general(devices="all")})
    spec = build_spec("medium-general", config, {})
    error: NoGpuRuntimeError | None = None
    try:
        info = await runtime.start(spec)
    except NoGpuRuntimeError as exc:
        error = exc
    else:
        await runtime.stop(info.id, timeout=5)
        pytest.skip(
            "this engine can hand GPUs to containers: the no-GPU-runtime error cannot occur"
        )
    assert error is not None
    assert error.message.startswith(
        "Docker has no GPU runtime to give GPUs to container ryx-vllm-medium-general"
    )
    assert "NVIDIA container toolkit" in error.hint
    assert names_of(docker_client, "ryx-vllm-medium-general") == []


@pytest.mark.asyncio
async def test_unreachable_engine_names_its_address(make_config: MakeConfig) -> None:
    address = "unix:///nonexistent/docker.sock"
    runtime = DockerRuntime(host=address)
    try:
        with pytest.raises(DockerUnavailableError) as caught:
            await runtime.list_models()
        assert (
            caught.value.message == f"no Docker engine answers at {address} (socket file not found)"
        )
        assert "systemctl start docker" in caught.value.hint
        spec = build_spec("medium-general", make_config({"medium-general": general()}), {})
        with pytest.raises(DockerUnavailableError):
            await runtime.start(spec)
        events = runtime.events()
        with pytest.raises(DockerUnavailableError):
            await asyncio.wait_for(anext(events), 10)
    finally:
        await runtime.close()


@pytest.mark.asyncio
async def test_missing_image(
    runtime: DockerRuntime, make_config: MakeConfig, docker_client: docker.DockerClient
) -> None:
    progress: list[PullProgress] = []
    with pytest.raises(ImageMissingError) as caught:
        await asyncio.wait_for(runtime.ensure_image(MISSING_IMAGE, progress.append), 120)
    assert caught.value.message.startswith(
        f"image {MISSING_IMAGE} is not available locally and could not be pulled: "
    )
    assert "docker pull" in caught.value.hint

    config = make_config({"medium-general": general(image=MISSING_IMAGE)})
    with pytest.raises(ImageMissingError) as started:
        await runtime.start(build_spec("medium-general", config, {}))
    assert MISSING_IMAGE in started.value.message
    assert names_of(docker_client, "ryx-vllm-medium-general") == []


@pytest.mark.asyncio
async def test_present_image_needs_no_pull(runtime: DockerRuntime, fake_image: str) -> None:
    progress: list[PullProgress] = []
    await runtime.ensure_image(fake_image, progress.append)
    assert progress == []


@pytest.mark.asyncio
async def test_missing_model_path_creates_nothing(
    runtime: DockerRuntime,
    make_config: MakeConfig,
    docker_client: docker.DockerClient,
    models_dir: Path,
) -> None:
    config = make_config({"medium-general": {"model": "/models/medium/general/nope"}})
    with pytest.raises(ModelPathMissingError) as caught:
        await runtime.start(build_spec("medium-general", config, {}))
    assert caught.value.message == (
        "model path /models/medium/general/nope not found: "
        f"{models_dir}/medium/general/nope does not exist"
    )
    assert "models directory" in caught.value.hint
    assert names_of(docker_client, "ryx-vllm-medium-general") == []


# --------------------------------------------------------------------------- adoption, events


@pytest.mark.asyncio
async def test_list_models_finds_compose_started_and_exited_containers(
    runtime: DockerRuntime,
    make_config: MakeConfig,
    docker_client: docker.DockerClient,
    fake_image: str,
    models_dir: Path,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    compose = docker_client.containers.run(
        fake_image,
        ["--model", SMALL, "--host", "0.0.0.0", "--port", "8000"],
        name="ryx-vllm-small-general",
        detach=True,
        volumes={str(models_dir): {"bind": "/models", "mode": "ro"}},
        ports={"8000/tcp": ("127.0.0.1", port)},
    )
    stranger = docker_client.containers.create(fake_image, ["--model", SMALL], name="not-ryx-x")
    try:
        config = make_config({"medium-general": general(env={"FAKE_VLLM_EXIT_CODE": "2"})})
        managed = await runtime.start(build_spec("medium-general", config, {}))

        async def settled() -> list[Any] | None:
            models = await runtime.list_models()
            by_key = {m.model_key: m for m in models}
            ready = (
                by_key.get("medium-general") is not None
                and by_key["medium-general"].status == ContainerStatus.EXITED
                and by_key.get("small-general") is not None
            )
            return models if ready else None

        models = await eventually(settled, what="both containers to be listed")
        assert [m.model_key for m in models] == ["medium-general", "small-general"]
        exited, adopted = models
        assert exited.id == managed.id
        assert exited.managed
        assert exited.exit_code == 2
        assert exited.pids == ()
        assert adopted.id == compose.id
        assert adopted.name == "ryx-vllm-small-general"
        assert not adopted.managed
        assert adopted.spec_hash is None
        assert adopted.host_port == port
        assert adopted.status == ContainerStatus.RUNNING
        inspected = await runtime.inspect(compose.id)
        assert inspected is not None
        assert inspected.model_key == "small-general"
    finally:
        stranger.remove(force=True)


@pytest.mark.asyncio
async def test_events_report_start_and_die_with_the_exit_code(
    runtime: DockerRuntime, make_config: MakeConfig
) -> None:
    config = make_config({"medium-general": general(env={"FAKE_VLLM_EXIT_CODE": "137"})})
    events = runtime.events()  # subscribed from here on, before the container exists
    info = await runtime.start(build_spec("medium-general", config, {}))

    seen: list[RuntimeEvent] = []

    async def until(kind: RuntimeEventKind) -> None:
        async for event in events:
            assert event.model_key == "medium-general"
            assert event.container_id == info.id
            seen.append(event)
            if event.kind == kind:
                return

    await asyncio.wait_for(until(RuntimeEventKind.DIE), 30)
    assert [e.kind for e in seen] == [RuntimeEventKind.START, RuntimeEventKind.DIE]
    assert seen[0].exit_code is None
    assert seen[-1].exit_code == 137

    inspected = await runtime.inspect(info.id)
    assert inspected is not None
    assert inspected.status == ContainerStatus.EXITED
    assert inspected.exit_code == 137
    assert not inspected.oom_killed

    await runtime.remove(info.id)
    await asyncio.wait_for(until(RuntimeEventKind.DESTROY), 30)
    assert seen[-1].kind == RuntimeEventKind.DESTROY
    await events.aclose()

    async def stopped() -> bool:
        return not our_threads("ryx-docker-events")

    await eventually(stopped, 5, "the events thread to stop after aclose()")


@pytest.mark.asyncio
async def test_close_ends_event_iteration_promptly(make_config: MakeConfig) -> None:
    runtime = DockerRuntime()
    events = runtime.events()
    received: list[RuntimeEvent] = []

    async def consume() -> None:
        async for event in events:
            received.append(event)

    task = asyncio.create_task(consume())
    await runtime.list_models()  # the client exists; let the thread connect

    async def connected() -> bool:
        return bool(our_threads("ryx-docker-events"))

    await eventually(connected, 5, "the events thread to start")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runtime.close()
    await asyncio.wait_for(task, 5)
    assert loop.time() - started < 3
    assert not our_threads("ryx-docker-events")
    assert received == []
