"""``ExtraDockerd``: engines of the tests' own run side by side and leave nothing behind.

Several at once (the multi-host tests need two or three), each publishing ports on this
machine's loopback through its own bridge, without touching the main engine's bridge; and once
closed, even after a crash with a container still running, no process, mount, bridge or folder
of theirs is left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.engines.conftest import MODEL_PATH, MakeEngine
from tests.fake_vllm.image import ensure_fake_image
from tests.support.extra_dockerd import (
    ExtraDockerd,
    link_exists,
    mounts_under,
    process_alive,
)
from tests.support.waiting import wait_for


def run_fake(engine: ExtraDockerd, models_dir: Path, port: int) -> str:
    """A fake vLLM container on ``engine`` publishing ``127.0.0.1:port``; its id."""
    with contextlib.closing(engine.client()) as client:
        image = ensure_fake_image(client)
        container = client.containers.run(
            image,
            [MODEL_PATH, "--port", "8000"],
            name=f"ryx-vllm-{engine.name}",
            detach=True,
            volumes={str(models_dir): {"bind": "/models", "mode": "ro"}},
            ports={"8000/tcp": ("127.0.0.1", port)},
        )
        return str(container.id)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def answering(port: int) -> Callable[[], bool]:
    return lambda: healthy(port)


@pytest.mark.asyncio
async def test_two_engines_run_side_by_side_and_publish_on_loopback(
    make_engine: MakeEngine, models_dir: Path, free_port: Callable[[], int]
) -> None:
    first, second = make_engine("p"), make_engine("q")
    assert first.docker_host != second.docker_host
    assert first.subnet is not None and second.subnet is not None
    assert not first.subnet.overlaps(second.subnet)
    assert link_exists(first.bridge) and link_exists(second.bridge)
    ports = {engine.name: free_port() for engine in (first, second)}
    for engine in (first, second):
        container_id = run_fake(engine, models_dir, ports[engine.name])
        with contextlib.closing(engine.client()) as client:
            attrs = client.api.inspect_container(container_id)
            address = ipaddress.ip_address(attrs["NetworkSettings"]["IPAddress"])
            assert engine.subnet is not None and address in engine.subnet, (
                address
            )  # on its own bridge
            names = [c.name for c in client.containers.list(all=True)]
        assert names == [f"ryx-vllm-{engine.name}"]  # each engine sees only its own
    for engine in (first, second):
        await wait_for(answering(ports[engine.name]), f"engine {engine.name}'s fake", 20)


@pytest.mark.asyncio
async def test_close_after_a_crash_removes_everything_it_made(
    models_dir: Path, free_port: Callable[[], int]
) -> None:
    name = f"z{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"ryx-engine-{name}-"))
    engine = ExtraDockerd(name, None, workdir)
    try:
        engine.start()
        port = free_port()
        run_fake(engine, models_dir, port)
        # Once it answers it handles SIGTERM (before, as PID 1, it would ignore it for 10 s).
        await wait_for(answering(port), "the fake vLLM", 20)
        engine.kill()  # a crash: containerd's shim and the container live on
        leftovers = engine.leftover_pids()
        assert leftovers, "the container's shim outlives a killed dockerd"
        engine.close()
        assert not engine.running
        assert engine.leftover_pids() == []
        assert not any(process_alive(pid) for pid in leftovers)
        assert not link_exists(engine.bridge)
        assert not engine.data_root.exists() and not engine.exec_root.exists()
        assert mounts_under(workdir) == []
        assert not healthy(port)
    finally:
        with contextlib.suppress(Exception):
            engine.close()
        shutil.rmtree(workdir, ignore_errors=True)
