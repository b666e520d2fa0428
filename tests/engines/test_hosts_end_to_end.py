"""Two ``ssh://`` hosts driven as one, through the one proxy (issue 13), with the real adapters.

Each host is a ``RemoteHost``: a network namespace of its own with a Docker engine and an sshd,
reached only over SSH with a key made at test time. The app is built as it builds itself
(``build_engine`` and ``build_proxy`` on a config with ``hosts:``): the engines are reached
through SSH tunnels to their sockets, the models' ports through SSH tunnels as well (a model
publishes on its host's loopback only, which this machine cannot reach otherwise), the GPUs
through ``nvidia-smi`` over SSH (a fake ``nvidia-smi`` on each host's ``PATH``: no GPU here).

One test walks the issue's list in order, since every step needs the same two hosts running:
a model on each host answers through the proxy; ``host: any`` goes to the host whose nvidia-smi
reports the free memory, both ways round; a tunnel killed mid-stream ends the stream with an SSE
``error`` event and the next request works; a host's engine killed turns its model
``unreachable`` while the other host's model still answers; the engine back (live-restore kept
the container) and the model is adopted and answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ryx_desktop.app import Engine, build_engine, build_proxy
from ryx_desktop.config import Config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.proxy import ProxyServer
from tests.engines.conftest import MODEL_PATH, MakeRemoteHost, fake_image_on
from tests.support.remote_host import RemoteHost
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

GIB = 2**30

#: nvidia-smi's answers: one 80 GiB GPU with ``{free}`` MiB free, no compute process.
NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) echo "0, GPU-{uuid}, NVIDIA H100 80GB HBM3, 81920, {used}, {free}, 3, 35" ;;
  --query-compute-apps=*) ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def report_free(host: RemoteHost, free_mib: int) -> None:
    """Make the host's nvidia-smi report ``free_mib`` free of its 80 GiB."""
    script = NVIDIA_SMI.format(uuid=host.name, used=81920 - free_mib, free=free_mib)
    host.sshd.add_command("nvidia-smi", script)


def container_names(host: RemoteHost) -> list[str]:
    with contextlib.closing(host.engine.client()) as client:
        return sorted(c.name for c in client.containers.list())


def host_entry(host: RemoteHost, models_dir: Path) -> dict[str, Any]:
    return {
        "url": host.ssh_url,
        "models_dir": str(models_dir),
        "ssh": {"identity_file": str(host.identity_file), "options": host.ssh_options},
    }


def model(name: str, port: int, **settings: Any) -> dict[str, Any]:
    return {"model": MODEL_PATH, "served_name": name, "devices": "none", "port": port, **settings}


async def chat(base: str, model: str) -> str:
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as ai:
        answer = await ai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
    return answer.choices[0].message.content or ""


async def stream_cut_by(base: str, model: str, cut: Callable[[], None]) -> list[str]:
    """Stream a long answer, call ``cut`` after the first chunk; every SSE event's lines."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": 400,
        "stream": True,
    }
    events: list[str] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{base}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                events.append(event)
                if len(events) == 1:
                    cut()
    return events


async def test_two_ssh_hosts_one_proxy(
    make_remote_host: MakeRemoteHost,
    models_dir: Path,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    one = make_remote_host("a", live_restore=True)
    two = make_remote_host("b")
    image_one, image_two = await asyncio.gather(
        asyncio.to_thread(fake_image_on, one.engine), asyncio.to_thread(fake_image_on, two.engine)
    )
    assert image_one == image_two
    report_free(one, 4096)
    report_free(two, 61440)
    for cache in ("hf-cache", "vllm-cache"):
        (tmp_path / cache).mkdir()
    slow = {"FAKE_VLLM_TOKEN_DELAY": "0.05"}
    config = Config.model_validate(
        {
            "docker": {
                "image": image_one,
                "models_dir": str(models_dir),
                "hf_cache": str(tmp_path / "hf-cache"),
                "vllm_cache": str(tmp_path / "vllm-cache"),
                "stop_timeout": 5,
            },
            "proxy": {"port": free_port()},
            "hosts": {"one": host_entry(one, models_dir), "two": host_entry(two, models_dir)},
            "models": {
                "far1": model("far1", free_port(), host="one", env=slow),
                "far2": model("far2", free_port(), host="two", env=slow),
                "roam": model(
                    "roam", free_port(), host="any", devices=[0], gpu_memory_utilization=0.5
                ),
            },
        }
    )
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    engine: Engine = build_engine(config, environ)
    async with engine:
        proxy: ProxyServer = build_proxy(engine, environ)
        async with proxy:
            await _walk_the_issue(engine, proxy, one, two)
        await engine.supervisor.stop_all()
    assert container_names(one) == [] and container_names(two) == []


async def _walk_the_issue(
    engine: Engine, proxy: ProxyServer, one: RemoteHost, two: RemoteHost
) -> None:
    sup = engine.supervisor
    base = proxy.local_root
    await wait_for(
        lambda: (
            sup.host_problems == {"local": None, "one": None, "two": None}
            or any(p for h, p in sup.host_problems.items() if h != "local")
        ),
        "every host's first report",
        60,
    )
    assert sup.host_problems["one"] is None and sup.host_problems["two"] is None

    # 1. A model on each host, through the one proxy (each started on demand by the request).
    assert await chat(base, "far1")
    assert await chat(base, "far2")
    assert (sup.get("far1").host, sup.get("far2").host) == ("one", "two")
    assert container_names(one) == ["ryx-vllm-far1"]
    assert container_names(two) == ["ryx-vllm-far2"]
    # GPUs are read over the same SSH connection as the engine: one client port every time.
    assert engine.hosts is not None
    two_ssh = engine.hosts.ssh_engines["two"]
    seen = {(await two_ssh.run(["printenv", "SSH_CONNECTION"]))[1] for _ in range(3)}
    assert len(seen) == 1 and next(iter(seen)).startswith(f"{two.local_address} ")
    reading = await engine.gpu_probes["two"].read()
    assert [(g.name, g.free_bytes) for g in reading.gpus] == [("NVIDIA H100 80GB HBM3", 60 * GIB)]

    # 2. host: any by the free memory nvidia-smi reports over SSH. There is no GPU here, so the
    # start fails on the picked host with its engine's own GPU error; where it failed is the point.
    with contextlib.suppress(Exception):
        await sup.ensure_ready("roam")
    roam = sup.get("roam")
    assert roam.state is InstanceState.FAILED and roam.host == "two", roam
    report_free(one, 71680)
    report_free(two, 2048)
    with contextlib.suppress(Exception):
        await sup.ensure_ready("roam")
    assert sup.get("roam").host == "one", sup.get("roam")
    assert "ryx-vllm-roam" not in container_names(one) + container_names(two)

    # 3. The tunnel of far2's port killed mid-stream: an SSE error event ends the stream.
    assert engine.hosts is not None
    target_two = next(t for t in engine.hosts.tunnels.tunnels() if t.remote == sup.get("far2").port)
    killed_pid = target_two.pid
    assert killed_pid is not None
    events = await stream_cut_by(base, "far2", lambda: os.kill(killed_pid, 9))
    assert events[0].startswith("data: ") and "chat.completion.chunk" in events[0]
    last = events[-1].splitlines()
    assert last[0] == "event: error", events[-3:]
    error = json.loads(last[1].removeprefix("data: "))["error"]
    assert "far2's server" in error["message"] and "host two, through SSH" in error["message"]
    assert "SSH tunnel to host two" in error["hint"], error
    await wait_for(
        lambda: target_two.up and target_two.pid not in (None, killed_pid),
        "the tunnel reopened by itself",
        30,
    )
    assert await chat(base, "far2")

    # The engine's own tunnel (the SSH connection master) killed: reopened, a master again.
    master = two_ssh.tunnel
    assert master is not None and master.pid is not None
    master_pid = master.pid
    os.kill(master_pid, 9)
    await wait_for(
        lambda: master.up and master.pid not in (None, master_pid), "the engine's tunnel", 30
    )
    seen = {(await two_ssh.run(["printenv", "SSH_CONNECTION"]))[1] for _ in range(2)}
    assert len(seen) == 1
    assert await chat(base, "far2")

    # 4. Host one's engine killed: far1 unreachable with the reason, far2 still answers.
    one.kill_engine()
    await wait_for(
        lambda: sup.get("far1").state is InstanceState.UNREACHABLE, "far1 unreachable", 60
    )
    assert "host one does not answer" in sup.get("far1").note
    assert sup.host_problems["one"] is not None
    assert await chat(base, "far2")
    async with httpx.AsyncClient(timeout=30) as client:
        refused = await client.post(
            f"{base}/v1/chat/completions",
            json={"model": "far1", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert refused.status_code == 503
    assert "host one" in refused.json()["error"]["message"]

    # 5. The engine back (live-restore kept the container): far1 adopted and answering again.
    one.restart_engine()
    await wait_for(lambda: sup.get("far1").state is InstanceState.READY, "far1 adopted", 90)
    assert sup.host_problems["one"] is None
    assert sup.get("far1").adopted
    assert await chat(base, "far1")
