"""``RemoteHost``: a network namespace with its own engine and sshd stands for another machine.

The fake vLLM runs on the remote host's engine publishing ``127.0.0.1:P``: that is the host's
loopback, so nothing answers on this machine's ``127.0.0.1:P`` until an ``SshTunnel`` through
the host's sshd forwards this machine's ``127.0.0.1:P`` there (the same port on both ends, as
ryx-desktop's forwards do). Commands run over ssh see the engine as ``DOCKER_HOST``, and a
forward to the engine's socket reaches the engine. ``close()`` leaves no namespace, link,
process or mount behind, even after the engine was killed with a container running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.ssh_tunnel import SshTunnel
from ryx_desktop.config import Config
from ryx_desktop.core.ports import ContainerStatus
from ryx_desktop.core.spec import ContainerSpec, build_spec
from tests.engines.conftest import MakeRemoteHost, fake_image_on, health
from tests.support.extra_dockerd import link_exists, mounts_under, ping
from tests.support.remote_host import NETNS_DIR, RemoteHost
from tests.support.waiting import wait_for_async

KEY = "m"
#: Asks ``/health`` on the loopback of wherever it runs; exits 0 on 200.
HEALTH_SCRIPT = (
    "import sys, urllib.request\n"
    "try:\n"
    "    code = urllib.request.urlopen(sys.argv[1], timeout=2).status\n"
    "except Exception:\n"
    "    code = None\n"
    "sys.exit(0 if code == 200 else 1)\n"
)


async def answers_inside(host: RemoteHost, port: int) -> bool:
    """Whether ``127.0.0.1:port`` answers ``/health`` in the host's own network namespace."""
    url = f"http://127.0.0.1:{port}/health"
    done = await asyncio.to_thread(host.run_in_netns, sys.executable, "-c", HEALTH_SCRIPT, url)
    return done.returncode == 0


async def start_model(
    host: RemoteHost, engine_config: Callable[..., Config]
) -> tuple[ContainerSpec, str]:
    """Start the fake model on the host's engine (through its socket, as setup); its spec
    and container id, once it answers ``/health`` on the host's loopback."""
    image = await asyncio.to_thread(fake_image_on, host.engine)
    config = engine_config(host.engine, image)
    for cache in (config.docker.hf_cache, config.docker.vllm_cache):
        cache.mkdir(parents=True, exist_ok=True)
    spec = build_spec(KEY, config)
    assert spec.host_ip == "127.0.0.1"
    runtime = DockerRuntime(host.docker_host)
    try:
        info = await runtime.start(spec)
    finally:
        await runtime.close()
    assert info.status is ContainerStatus.RUNNING
    await wait_for_async(
        lambda: answers_inside(host, spec.host_port), "the model on the host's loopback", 30
    )
    return spec, info.id


@pytest.mark.asyncio
async def test_a_model_on_a_remote_host_is_reached_only_through_an_ssh_tunnel(
    make_remote_host: MakeRemoteHost, engine_config: Callable[..., Config]
) -> None:
    remote = make_remote_host("r")
    assert remote.ssh_url.startswith(f"ssh://root@{remote.address}:")
    assert remote.address != "127.0.0.1"
    spec, container_id = await start_model(remote, engine_config)
    port = spec.host_port

    # It answers on the host's loopback (above), not on this machine's.
    assert await health(f"http://127.0.0.1:{port}") is None

    target = remote.target()
    model_tunnel = SshTunnel(target, port, local_port=port, backoff=(0.05, 0.5))
    engine_tunnel = SshTunnel(target, str(remote.socket_path), backoff=(0.05, 0.5))
    runtime: DockerRuntime | None = None
    try:
        await model_tunnel.open()
        assert model_tunnel.url == f"http://127.0.0.1:{port}"
        statuses: list[int | None] = []

        async def healthy() -> bool:
            statuses.append(await health(model_tunnel.url))
            return statuses[-1] == 200

        await wait_for_async(healthy, "the model's /health through the tunnel", 20)

        # Commands over ssh see the host's engine.
        done = await asyncio.to_thread(
            subprocess.run,
            target.command_argv("printenv", "DOCKER_HOST"),
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
        assert (done.returncode, done.stdout.strip()) == (0, remote.docker_host), done.stderr

        # The engine, through a forward to its socket.
        await engine_tunnel.open()
        assert engine_tunnel.url != remote.docker_host
        runtime = DockerRuntime(engine_tunnel.url, address=target.url, check_model_paths=False)
        listed = await runtime.list_models()
        assert [(info.model_key, info.id, info.status) for info in listed] == [
            (KEY, container_id, ContainerStatus.RUNNING)
        ]
    finally:
        if runtime is not None:
            await runtime.close()
        await engine_tunnel.close()
        await model_tunnel.close()
    assert await health(f"http://127.0.0.1:{port}") is None  # the tunnel was the only way


@pytest.fixture
def unstarted_host(tmp_path: Path) -> Iterator[RemoteHost]:
    """A remote host not started yet, for the test to start and close itself; closed again
    (in case the test failed before) and its workdir removed after the test."""
    name = f"c{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"ryx-remote-{name}-"))
    host = RemoteHost(name, workdir)
    try:
        yield host
    finally:
        with contextlib.suppress(Exception):
            host.close()
        for log in workdir.rglob("*.log"):
            shutil.copy(log, tmp_path / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.asyncio
async def test_close_leaves_no_namespace_link_process_or_mount_behind(
    unstarted_host: RemoteHost, engine_config: Callable[..., Config]
) -> None:
    host = unstarted_host
    docker0 = link_exists("docker0")
    await asyncio.to_thread(host.start)
    assert (NETNS_DIR / host.netns).exists() and link_exists(host.link)
    await asyncio.to_thread(host.kill_engine)
    assert not ping(host.socket_path)
    await asyncio.to_thread(host.restart_engine)
    assert ping(host.socket_path)
    await start_model(host, engine_config)

    # A crashed engine: its container and the container's shim run on, the shim in the
    # host's namespace.
    await asyncio.to_thread(host.kill_engine)
    leftovers = host.engine.leftover_pids()
    in_netns = host.netns_pids()
    assert leftovers and set(leftovers) <= set(in_netns)
    assert host.sshd.pid in in_netns

    await asyncio.to_thread(host.close)
    assert not (NETNS_DIR / host.netns).exists()
    assert not link_exists(host.link)
    assert host.netns_pids() == []
    assert host.engine.leftover_pids() == []
    assert not host.sshd.running and not host.engine.running
    assert mounts_under(host.workdir) == []
    assert not host.socket_path.exists()
    assert link_exists("docker0") == docker0
