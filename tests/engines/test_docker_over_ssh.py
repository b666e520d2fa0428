"""A Docker engine on an ``ssh://`` host: ``DockerRuntime`` through SSH tunnels.

The "remote host" is an ``ExtraDockerd`` reached through a ``TestSshd`` as
``ssh://root@127.0.0.1:<port>``. ``DockerRuntime`` talks to that engine through an
``SshTunnel`` forwarding a local unix socket to the engine's socket on the host (what an
``ssh://`` host in the config becomes: no paramiko, the system ssh client with the host's
key, config and options), and the model's port, published on the host's loopback only, is
reached through a second tunnel. Listing, starting, events, logs, the model's ``/health``, and
an engine that dies, named by its ``ssh://`` url.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel, TunnelSet
from ryx_desktop.config import Config
from ryx_desktop.core.errors import DockerUnavailableError
from ryx_desktop.core.ports import ContainerStatus, RuntimeEventKind
from ryx_desktop.core.spec import build_spec
from tests.engines.conftest import MakeEngine, fake_image_on, health
from tests.support.sshd import TestSshd
from tests.support.waiting import wait_for, wait_for_async

KEY = "m"


@pytest.fixture
def sshd() -> Iterator[TestSshd]:
    workdir = tempfile.mkdtemp(prefix="ryx-sshd-")
    server = TestSshd(workdir)
    server.start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.asyncio
async def test_a_runtime_on_an_ssh_host_starts_a_model_reached_through_a_tunnel(
    make_engine: MakeEngine, sshd: TestSshd, engine_config: Callable[..., Config]
) -> None:
    engine = make_engine("s")
    image = await asyncio.to_thread(fake_image_on, engine)
    target = SshTarget.from_url(
        sshd.url, identity_file=sshd.identity_file, options=sshd.client_options()
    )
    tunnels = TunnelSet(lambda t, remote: SshTunnel(t, remote, backoff=(0.05, 0.5)))
    runtime: DockerRuntime | None = None
    try:
        engine_tunnel = await tunnels.acquire(target, str(engine.socket_path))
        assert engine_tunnel.url.startswith("unix:///") and engine_tunnel.url != engine.docker_host
        runtime = DockerRuntime(engine_tunnel.url, address=target.url, check_model_paths=False)
        assert runtime.address == sshd.url
        assert await runtime.list_models() == []
        assert (await runtime.engine_info()).version
        assert await runtime.image_present(image)

        events = runtime.events()
        config = engine_config(engine, image)
        for cache in (config.docker.hf_cache, config.docker.vllm_cache):
            cache.mkdir(parents=True)  # on the host (here the same machine), as a user would
        spec = build_spec(KEY, config)
        info = await runtime.start(spec)
        assert info.status is ContainerStatus.RUNNING and info.model_key == KEY
        event = await asyncio.wait_for(anext(events), 15)  # the event stream, tunneled too
        assert (event.kind, event.model_key) == (RuntimeEventKind.START, KEY)
        listed = await runtime.list_models()
        assert [(i.model_key, i.id) for i in listed] == [(KEY, info.id)]

        # The container publishes on the host's loopback; this side reaches it by a tunnel.
        model_tunnel = await tunnels.acquire(target, spec.host_port)
        assert model_tunnel.local_port != spec.host_port
        statuses: list[int | None] = []

        async def healthy() -> bool:
            statuses.append(await health(model_tunnel.url))
            return statuses[-1] == 200

        await wait_for_async(healthy, "the model's /health through the tunnel", 20)
        assert await runtime.logs(info.id, tail=50)  # its log, over SSH as well

        # The engine dies: the runtime says so, naming the host as the config does.
        await asyncio.to_thread(engine.kill)
        with pytest.raises(DockerUnavailableError) as caught:
            await runtime.list_models()
        assert caught.value.message.startswith(f"no Docker engine answers at {sshd.url}")
        assert engine_tunnel.up  # the host is still there: only its engine went
        with contextlib.suppress(Exception):
            await events.aclose()
    finally:
        if runtime is not None:
            await runtime.close()
        await tunnels.close()
    assert engine_tunnel.local_socket is not None
    assert not engine_tunnel.local_socket.parent.exists()  # its private folder is gone
    await wait_for(lambda: sshd.connection_pids() == [], "every ssh session ended", 10)
