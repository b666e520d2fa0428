"""The multi-engine runtime over two real Docker engines of the test's own (``ExtraDockerd``).

Two engines on this machine, each with its own socket and bridge, stand for two hosts: ``local``
and ``gpu2``. Both publish model ports on this machine's loopback, so the port "forward" of the
remote host is an identity that only records what it was asked (no SSH here: the SSH tunnel is
tested in ``test_ssh_tunnel``). Through the one composite runtime the fake vLLM starts on each
engine and answers ``/health``; then ``gpu2``'s dockerd is killed: the composite reports it,
still lists the local engine's container and still delivers the local engine's events; once
``gpu2``'s engine is back it is reported back and its container is listed again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.adapters.multi_engine import MultiEngineRuntime
from ryx_desktop.config import Config
from ryx_desktop.core.ports import ContainerStatus, RuntimeEvent, RuntimeEventKind
from ryx_desktop.core.spec import build_spec
from tests.engines.conftest import MODEL_PATH, MakeEngine, fake_image_on
from tests.support.extra_dockerd import ExtraDockerd
from tests.support.waiting import wait_for

REMOTE = "gpu2"


class QuickClock:
    """Real time, with the reconnection backoff cut to a tenth (1 s becomes 0.1 s)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / 10)


@dataclass
class Forwards:
    """The identity forward: both engines publish on this machine already; records the calls."""

    opened: list[tuple[str, int]] = field(default_factory=list)
    closed: list[tuple[str, int]] = field(default_factory=list)

    async def open_port(self, host: str, port: int) -> tuple[str, int]:
        self.opened.append((host, port))
        return (host, port)

    async def close_port(self, handle: tuple[str, int]) -> None:
        self.closed.append(handle)


def docker_stop(engine: ExtraDockerd, container_id: str) -> None:
    """``docker stop`` on ``engine``, as a user would."""
    with contextlib.closing(engine.client()) as client:
        client.api.stop(container_id, timeout=5)


def two_host_config(
    local: ExtraDockerd,
    remote: ExtraDockerd,
    image: str,
    models_dir: Path,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> Config:
    model = {"model": MODEL_PATH, "devices": "none"}
    for cache in ("hf-cache", "vllm-cache"):  # a remote runtime makes no folder on its host
        (tmp_path / cache).mkdir(exist_ok=True)
    return Config.model_validate(
        {
            "docker": {
                "host": local.docker_host,
                "image": image,
                "models_dir": str(models_dir),
                "hf_cache": str(tmp_path / "hf-cache"),
                "vllm_cache": str(tmp_path / "vllm-cache"),
                "stop_timeout": 5,
            },
            "hosts": {REMOTE: {"url": remote.docker_host}},
            "proxy": {"port": free_port()},
            "models": {
                "m": {**model, "port": free_port(), "served_name": "m"},
                "n": {**model, "port": free_port(), "served_name": "n", "host": REMOTE},
            },
        }
    )


async def next_event_of(
    events: AsyncIterator[RuntimeEvent], container_id: str, kind: RuntimeEventKind
) -> RuntimeEvent:
    """The next event of ``kind`` for ``container_id`` (others are passed over)."""

    async def find() -> RuntimeEvent:
        async for event in events:
            if event.container_id == container_id and event.kind is kind:
                return event
        pytest.fail("the merged event stream ended")

    return await asyncio.wait_for(find(), 15)


async def answers_health(health: HttpHealthProbe, url: str, timeout: float = 15) -> None:
    """Wait until ``url`` answers ``/health`` with 200; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await health.probe(url)).healthy:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{url} did not answer /health within {timeout} s: {result.error}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_two_engines_as_one_runtime_outlive_one_engine_going_away(
    make_engine: MakeEngine, models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    local_engine, remote_engine = make_engine("ml"), make_engine("mr")
    image, remote_image = await asyncio.gather(
        asyncio.to_thread(fake_image_on, local_engine),
        asyncio.to_thread(fake_image_on, remote_engine),
    )
    assert image == remote_image
    config = two_host_config(local_engine, remote_engine, image, models_dir, tmp_path, free_port)
    heard: list[tuple[str, str | None]] = []
    forwards = Forwards()
    runtime = MultiEngineRuntime(
        {
            "local": DockerRuntime(local_engine.docker_host),
            REMOTE: DockerRuntime(remote_engine.docker_host, check_model_paths=False),
        },
        forwards.open_port,
        forwards.close_port,
        on_host=lambda host, problem: heard.append((host, problem)),
        clock=QuickClock(),
    )
    health = HttpHealthProbe()
    events = runtime.events()
    try:
        await wait_for(lambda: len(heard) == 2, "both hosts followed", 15)
        assert set(heard) == {("local", None), (REMOTE, None)}

        m, n = build_spec("m", config), build_spec("n", config)
        assert (m.host, n.host) == ("local", REMOTE)
        await asyncio.gather(
            runtime.ensure_image(m.image), runtime.ensure_image(n.image, host=REMOTE)
        )
        m_info, n_info = await asyncio.gather(runtime.start(m), runtime.start(n))
        assert (m_info.host, n_info.host) == ("local", REMOTE)
        assert forwards.opened == [(REMOTE, n.host_port)]
        # Each started on its own engine, and answers on its port.
        with contextlib.closing(remote_engine.client()) as client:
            assert [c.id for c in client.containers.list()] == [n_info.id]
        for port in (m.host_port, n.host_port):
            await answers_health(health, f"http://127.0.0.1:{port}")

        # gpu2's engine crashes: reported, left out of the list, the local one carries on.
        await asyncio.to_thread(remote_engine.kill)
        await wait_for(lambda: heard[-1][0] == REMOTE and heard[-1][1] is not None, "gpu2 away")
        listed = await runtime.list_models()
        assert [(info.id, info.host) for info in listed] == [(m_info.id, "local")]
        assert REMOTE in (await runtime.list_hosts()).problems
        await asyncio.to_thread(docker_stop, local_engine, m_info.id)
        died = await next_event_of(events, m_info.id, RuntimeEventKind.DIE)
        assert died.host == "local" and died.model_key == "m"

        # gpu2's engine is back (it stopped its container on the way): reported back, listed.
        await asyncio.to_thread(remote_engine.start)
        await wait_for(lambda: heard[-1] == (REMOTE, None), "gpu2 back", 15)
        assert [problem for host, problem in heard if host == "local"] == [None]
        listed = await runtime.list_models()
        by_id = {info.id: info for info in listed}
        assert by_id[n_info.id].host == REMOTE
        assert by_id[n_info.id].status is ContainerStatus.EXITED
        assert by_id[m_info.id].host == "local"

        await runtime.remove(n_info.id)
        assert forwards.closed == [(REMOTE, n.host_port)]
        await runtime.stop(m_info.id, timeout=5)
        assert await runtime.list_models() == []
    finally:
        await health.close()
        await runtime.close()
    async with asyncio.timeout(5):  # the merged stream ends with close(), after what it had
        rest = [event async for event in events]
    assert {event.host for event in rest} <= {"local", REMOTE}
