"""The whole life of a model on the real vLLM server, as a user's app lives it.

One start of the real server serves every step, in order: the supervisor starts it in a
container and follows its real load progress (a second process's ``status --json`` sees it too),
it turns ready, the official openai client talks to it through the proxy (chat, a stream,
completions, an upstream 400 passed through unchanged), its ``/metrics`` are read, an external
``url:`` model pointed at the same server learns its served name, the probes' access lines stay
out of the log view, and it stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import openai
import pytest

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config, save_config
from ryx_desktop.core.access_log import is_probe_access_line
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.readiness import parse_startup_complete
from ryx_desktop.core.states import Instance, InstanceState, ProgressPhase
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.real_vllm import provision
from tests.real_vllm.conftest import SERVED
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio


def status_json(config_path: Path) -> dict[str, dict[str, object]]:
    """``ryx-desktop status --json`` run as a second process, by model key."""
    env = {**os.environ, "RYX_CONFIG": str(config_path)}
    result = subprocess.run(
        [sys.executable, "-m", "ryx_desktop", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {row["key"]: row for row in json.loads(result.stdout)}


async def test_start_progress_openai_metrics_external_and_stop(
    make_real_config: Callable[..., Config],
    tiny_model: provision.TinyModel,
    docker_client: docker.DockerClient,
    remove_after: Callable[[str], str],
    tmp_path: Path,
) -> None:
    config = make_real_config({"tiny": {"model": tiny_model}})
    port = config.models["tiny"].port  # type: ignore[union-attr]
    config = make_real_config(
        {
            "tiny": {"model": tiny_model, "port": port},
            # The same server seen as an external model, with no served_name: the name to send
            # must be learned from its /v1/models, not guessed from the key.
            "hostvllm": {"url": f"http://127.0.0.1:{port}/v1"},
        }
    )
    config_path = tmp_path / "config.yaml"
    save_config(config, config_path)
    remove_after("ryx-vllm-tiny")

    runtime = DockerRuntime(config.docker.host)
    health = HttpHealthProbe()
    sup = Supervisor(config, runtime, health, MonotonicClock(), probe_interval=0.5)
    seen: list[Instance] = []
    sup.subscribe(lambda inst: seen.append(inst) if inst.key == "tiny" else None)
    server = ProxyServer(config, sup, port=0)
    try:
        await sup.open(watch=True)
        await server.start()

        # ---- the start: real progress, seen by this process and by a second one
        starting = asyncio.create_task(sup.ensure_ready("tiny"))

        def weights_loaded() -> bool:
            inst = sup.get("tiny")
            return inst.progress is not None and (inst.progress.percent or 0) >= 60

        await wait_for(lambda: weights_loaded() or starting.done(), "the weights", 400)
        if not starting.done():
            other = await asyncio.to_thread(status_json, config_path)
            assert other["tiny"]["state"] == "starting", other["tiny"]
            progress = other["tiny"]["progress"]
            assert isinstance(progress, dict), other["tiny"]
            assert progress["percent"] is not None, other["tiny"]
        ready = await starting
        assert ready.state is InstanceState.READY
        assert ready.url == f"http://127.0.0.1:{port}"

        loads = [i.progress for i in seen if i.progress and i.progress.phase is ProgressPhase.LOAD]
        percents = [p.percent for p in loads if p.percent is not None]
        assert percents == sorted(percents), percents  # never goes back
        assert percents[-1] == 100.0
        details = [p.detail for p in loads]
        shards = [d for d in details if d.startswith("weights ") and d.endswith(" shards")]
        assert shards, details
        done, total = shards[-1].split()[1].split("/")
        assert done == total, details  # every shard, as vLLM counted them
        assert "answering a first request" in details

        # ---- the openai client through the proxy
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        ) as client:
            chat = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=5
            )
            assert chat.model == SERVED
            assert chat.choices[0].finish_reason in ("length", "stop")
            assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 5

            stream = await client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "stream please"}],
                max_tokens=5,
                stream=True,
            )
            chunks = [chunk async for chunk in stream]
            assert {c.model for c in chunks} == {SERVED}
            finished = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert finished[-1] in ("length", "stop")

            completion = await client.completions.create(
                model="tiny", prompt="the model", max_tokens=3
            )
            assert completion.choices[0].finish_reason == "length"
            assert completion.usage is not None and completion.usage.completion_tokens == 3

            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=5000
                )
        # The upstream 400 is vLLM's own, byte for byte the body a direct request gets.
        body = {"model": SERVED, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}
        async with httpx.AsyncClient(timeout=60) as http:
            direct = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
        assert direct.status_code == 400
        assert refused.value.response.status_code == 400
        assert refused.value.response.json() == direct.json()
        assert "max_tokens" in direct.json()["error"]["message"]

        # ---- metrics, read by the supervisor's probe of the running model
        await wait_for(lambda: sup.get("tiny").metrics is not None, "tiny's metrics", 30)
        metrics = sup.get("tiny").metrics
        assert metrics is not None
        assert metrics.requests_running == 0
        assert metrics.requests_waiting == 0
        assert metrics.kv_cache_usage is not None and 0 <= metrics.kv_cache_usage <= 1

        # ---- the external model learns the served name and reads the same metrics
        await wait_for(
            lambda: sup.get("hostvllm").state is InstanceState.READY, "hostvllm ready", 60
        )
        external = sup.get("hostvllm")
        assert external.served_name == SERVED
        await wait_for(lambda: sup.get("hostvllm").metrics is not None, "hostvllm metrics", 30)
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                f"http://127.0.0.1:{server.port}/v1/completions",
                json={"model": "hostvllm", "prompt": "hello", "max_tokens": 2},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == SERVED

        # ---- the log: the probes' access lines are there, and the log view leaves them out
        def raw_log() -> list[str]:
            container = docker_client.containers.get("ryx-vllm-tiny")
            return bytes(container.logs()).decode("utf-8", "replace").splitlines()

        lines = await asyncio.to_thread(raw_log)
        assert any(parse_startup_complete(line) for line in lines)
        probes = [line for line in lines if is_probe_access_line(line)]
        assert any('"GET /health HTTP/1.1" 200' in line for line in probes), lines[-20:]
        assert any('"GET /metrics HTTP/1.1" 200' in line for line in probes), lines[-20:]
        kept = [line for line in lines if not is_probe_access_line(line)]
        assert any('"POST /v1/chat/completions HTTP/1.1" 200' in line for line in kept)
        assert not any('"GET /health ' in line for line in kept)

        # ---- stop: SIGTERM, and the real server is gone within the stop timeout
        began = time.monotonic()
        stopped = await sup.stop("tiny")
        took = time.monotonic() - began
        assert stopped.state is InstanceState.STOPPED
        assert stopped.failure is None
        assert took < config.docker.stop_timeout, f"stop took {took:.1f} s"
        found = docker_client.containers.list(all=True, filters={"name": "ryx-vllm-tiny"})
        assert found == []
    finally:
        await server.close()
        await sup.close()
        await health.close()
        await runtime.close()
