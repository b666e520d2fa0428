"""The proxy in front of managed models: real containers of the fake vLLM, a real supervisor.

The proxy and the supervisor run in the test's event loop; the models run as containers on the
real Docker engine (``GpuFakingRuntime`` drops the GPU request and counts starts). Clients are
the official ``openai`` client and raw ``httpx`` where the bytes of a stream matter.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import docker
import httpx
import openai
import pytest
import pytest_asyncio

from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.integration.runtimes import GpuFakingRuntime
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

SMALL = "/models/small/general/qwen2.5-3b"
CODER = "/models/medium/coding/qwen2.5-coder-7b-gptq"
CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class Stack:
    """A started proxy and the supervisor, runtime and probe behind it."""

    config: Config
    supervisor: Supervisor
    runtime: GpuFakingRuntime
    health: HttpHealthProbe
    server: ProxyServer

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        await self.server.close()
        await self.supervisor.close()
        await self.health.close()
        await self.runtime.close()


MakeStack = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def proxy_stack() -> AsyncIterator[MakeStack]:
    """``await proxy_stack(config, **server_args)``: a watching supervisor and a proxy on port 0."""
    made: list[Stack] = []

    async def make(config: Config, **server_args: Any) -> Stack:
        runtime = GpuFakingRuntime(config.docker.host)
        health = HttpHealthProbe()
        supervisor = Supervisor(config, runtime, health, MonotonicClock(), probe_interval=0.2)
        server_args.setdefault("port", 0)
        server_args.setdefault("loading_interval", 0.2)
        server = ProxyServer(config, supervisor, **server_args)
        stack = Stack(config, supervisor, runtime, health, server)
        made.append(stack)
        await supervisor.open(watch=True)
        await server.start()
        return stack

    yield make
    for stack in reversed(made):
        await stack.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        yield client


async def container_names(client: docker.DockerClient) -> list[str]:
    """Names of every ``ryx-vllm-*`` container, running or not (off the loop: it blocks)."""

    def names() -> list[str]:
        found = client.containers.list(all=True, filters={"name": "ryx-vllm-"})
        return sorted(c.name for c in found)

    return await asyncio.to_thread(names)


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The non-empty lines of an SSE response, as they arrive."""
    async for line in response.aiter_lines():
        if line:
            yield line


def error_event(lines: list[str]) -> dict[str, Any]:
    """The payload of the stream's one ``event: error`` (the data line right after it)."""
    at = lines.index("event: error")
    data = lines[at + 1]
    assert data.startswith("data: "), lines
    payload: dict[str, Any] = json.loads(data.removeprefix("data: "))["error"]
    return payload


# --------------------------------------------------------------------------- the openai client


async def test_openai_client_against_a_managed_model(
    make_config: Callable[..., Config], proxy_stack: MakeStack
) -> None:
    config = make_config(
        {
            "small": {"model": SMALL, "aliases": ["tiny"]},
            "coder": {"model": CODER, "served_name": "coder"},
        },
        default_model="small",
    )
    stack = await proxy_stack(config)
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base}/v1", api_key="unused", max_retries=0, timeout=60
    ) as client:
        listed = await client.models.list()
        assert [m.id for m in listed.data] == [SMALL, "coder"]
        assert stack.supervisor.get("small").state is InstanceState.STOPPED

        # The first request, a stream through the alias, starts the container.
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"fake reply from {SMALL} to: hi"
        assert {c.model for c in chunks} == {SMALL}
        assert stack.runtime.started == ["small"]
        assert stack.supervisor.get("small").state is InstanceState.READY

        chat = await client.chat.completions.create(
            model=SMALL, messages=[{"role": "user", "content": "by name"}]
        )
        assert chat.model == SMALL
        assert chat.choices[0].message.content == f"fake reply from {SMALL} to: by name"

        raw = await client.chat.completions.with_raw_response.create(
            model="", messages=[{"role": "user", "content": "no model"}]
        )
        assert raw.headers["X-Ryx-Model"] == "small"
        unnamed = raw.parse()
        assert unnamed.model == SMALL
        assert unnamed.choices[0].message.content == f"fake reply from {SMALL} to: no model"

        completion = await client.completions.create(model="tiny", prompt="once upon", max_tokens=3)
        assert completion.model == SMALL
        assert completion.choices[0].text == "fake reply from"
        assert completion.choices[0].finish_reason == "length"

        text_stream = await client.completions.create(model="", prompt="a time", stream=True)
        pieces = [c.choices[0].text async for c in text_stream if c.choices]
        assert "".join(pieces) == f"fake reply from {SMALL} to: a time"

        embedded = await client.embeddings.create(model="tiny", input=["one", "two"])
        assert embedded.model == SMALL
        assert [e.index for e in embedded.data] == [0, 1]
        assert all(len(e.embedding) == 8 for e in embedded.data)
        alone = await client.embeddings.create(model="", input="one")
        assert alone.data[0].embedding == embedded.data[0].embedding

        # Another model by its served name: its own container, its own answer.
        coder = await client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "code"}]
        )
        assert coder.model == "coder"
        assert coder.choices[0].message.content == "fake reply from coder to: code"
        assert stack.runtime.started == ["small", "coder"]

        listed = await client.models.list()
        states = {m.id: (m.model_extra or {})["state"] for m in listed.data}
        assert states == {SMALL: "ready", "coder": "ready"}


# --------------------------------------------------------------------------- on-demand starts


async def test_five_concurrent_requests_for_a_stopped_model_make_one_start(
    make_config: Callable[..., Config],
    proxy_stack: MakeStack,
    http: httpx.AsyncClient,
    docker_client: docker.DockerClient,
) -> None:
    config = make_config(
        {"small": {"model": SMALL, "aliases": ["s"], "env": {"FAKE_VLLM_LOAD_SECONDS": "1"}}},
        default_model="small",
    )
    stack = await proxy_stack(config)
    url = f"{stack.base}/v1/chat/completions"
    names = ["small", "s", SMALL, "", "s"]
    answers = await asyncio.gather(*(http.post(url, json={**CHAT, "model": n}) for n in names))
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert {a.headers["X-Ryx-Model"] for a in answers} == {"small"}
    assert {a.json()["model"] for a in answers} == {SMALL}
    assert stack.runtime.started == ["small"]
    assert await container_names(docker_client) == ["ryx-vllm-small"]
    await wait_for(lambda: stack.supervisor.get("small").in_flight == 0, "requests to end")


async def test_start_failure_is_a_503_naming_the_crash(
    make_config: Callable[..., Config], proxy_stack: MakeStack, http: httpx.AsyncClient
) -> None:
    config = make_config({"crashy": {"model": SMALL, "env": {"FAKE_VLLM_CRASH": "1"}}})
    stack = await proxy_stack(config)
    answer = await http.post(f"{stack.base}/v1/chat/completions", json={**CHAT, "model": "crashy"})
    assert answer.status_code == 503
    assert answer.headers["X-Ryx-Model"] == "crashy"
    error = answer.json()["error"]
    assert error["code"] == "model_start_failed"
    assert error["type"] == "service_unavailable"
    assert "crashy could not start" in error["message"]
    assert "exited with code 1" in error["message"]
    assert stack.supervisor.get("crashy").state is InstanceState.FAILED


async def test_the_openai_clients_retries_do_not_start_a_failed_model_again(
    make_config: Callable[..., Config], proxy_stack: MakeStack
) -> None:
    # The official client retries a 503 twice by default: each retry used to start the
    # model again (three failed loads). Now a failed start says x-should-retry: false, and
    # within proxy.start_cooldown a request gets the same failure at once.
    config = make_config({"crashy": {"model": SMALL, "env": {"FAKE_VLLM_CRASH": "1"}}})
    stack = await proxy_stack(config)
    async with openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key="unused") as client:
        with pytest.raises(openai.InternalServerError) as first:
            await client.chat.completions.create(
                model="crashy", messages=[{"role": "user", "content": "hi"}]
            )
        assert first.value.response.headers["x-should-retry"] == "false"
        with pytest.raises(openai.InternalServerError) as again:
            await client.chat.completions.create(
                model="crashy", messages=[{"role": "user", "content": "hi"}]
            )
    assert stack.runtime.started == ["crashy"]  # one load for both requests and any retries
    assert again.value.response.json() == first.value.response.json()
    assert "crashy could not start" in again.value.message


async def test_stream_waiting_on_a_cold_start_gets_loading_comments(
    make_config: Callable[..., Config], proxy_stack: MakeStack, http: httpx.AsyncClient
) -> None:
    config = make_config({"small": {"model": SMALL, "env": {"FAKE_VLLM_LOAD_SECONDS": "2"}}})
    stack = await proxy_stack(config)
    body = {**CHAT, "model": "small", "stream": True}
    before_data: list[str] = []
    lines: list[str] = []
    async with http.stream("POST", f"{stack.base}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["X-Ryx-Model"] == "small"
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in sse_lines(response):
            if not lines and not line.startswith("data:"):
                before_data.append(line)
            else:
                lines.append(line)
    assert len(before_data) >= 2, before_data  # repeated while the model loads
    for comment in before_data:
        assert re.fullmatch(r": loading small \S+", comment), before_data
    assert any(re.fullmatch(r": loading small \d+%", c) for c in before_data), before_data
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines), lines
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["model"] == SMALL
    assert stack.runtime.started == ["small"]


async def test_stream_whose_cold_start_fails_ends_with_an_error_event(
    make_config: Callable[..., Config], proxy_stack: MakeStack, http: httpx.AsyncClient
) -> None:
    config = make_config({"crashy": {"model": SMALL, "env": {"FAKE_VLLM_CRASH": "1"}}})
    stack = await proxy_stack(config)
    body = {**CHAT, "model": "crashy", "stream": True}
    async with http.stream("POST", f"{stack.base}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200  # sent before the start could fail
        lines = [line async for line in sse_lines(response)]
    assert lines[0].startswith(": loading crashy"), lines
    assert "data: [DONE]" not in lines
    assert lines[-2] == "event: error", lines
    error = error_event(lines)
    assert error["code"] == "model_start_failed"
    assert "exited with code 1" in error["message"]


async def test_without_auto_start_a_stopped_model_is_a_quick_503(
    make_config: Callable[..., Config],
    proxy_stack: MakeStack,
    http: httpx.AsyncClient,
    docker_client: docker.DockerClient,
) -> None:
    config = make_config({"small": {"model": SMALL}}, proxy={"auto_start": False})
    stack = await proxy_stack(config)
    url = f"{stack.base}/v1/chat/completions"
    began = time.monotonic()
    for stream in (False, True):
        answer = await http.post(url, json={**CHAT, "model": "small", "stream": stream})
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["code"] == "model_not_running"
        assert "small is stopped" in error["message"]
        assert "auto_start" in error["message"]
    assert time.monotonic() - began < 2
    assert stack.runtime.started == []
    assert await container_names(docker_client) == []
    assert stack.supervisor.get("small").state is InstanceState.STOPPED


async def test_exclusive_policy_swaps_models_for_a_request(
    make_config: Callable[..., Config],
    proxy_stack: MakeStack,
    http: httpx.AsyncClient,
    docker_client: docker.DockerClient,
) -> None:
    config = make_config(
        {
            "a": {"model": SMALL, "served_name": "a", "devices": [0]},
            "b": {"model": CODER, "served_name": "b", "devices": [0]},
        },
        gpu={"policy": "exclusive"},
    )
    stack = await proxy_stack(config)
    url = f"{stack.base}/v1/chat/completions"
    first = await http.post(url, json={**CHAT, "model": "a"})
    assert first.status_code == 200, first.text
    assert await container_names(docker_client) == ["ryx-vllm-a"]

    second = await http.post(url, json={**CHAT, "model": "b"})
    assert second.status_code == 200, second.text
    assert second.headers["X-Ryx-Model"] == "b"
    assert second.json()["choices"][0]["message"]["content"] == "fake reply from b to: hello there"
    assert await container_names(docker_client) == ["ryx-vllm-b"]
    assert stack.supervisor.get("a").state is InstanceState.STOPPED
    assert stack.runtime.started == ["a", "b"]


# --------------------------------------------------------------------------- streams in flight


async def test_a_stream_in_flight_is_counted_by_the_supervisor(
    make_config: Callable[..., Config], proxy_stack: MakeStack, http: httpx.AsyncClient
) -> None:
    config = make_config({"slow": {"model": SMALL, "env": {"FAKE_VLLM_TOKEN_DELAY": "0.1"}}})
    stack = await proxy_stack(config)
    sup = stack.supervisor
    await sup.ensure_ready("slow")
    assert sup.get("slow").in_flight == 0
    body = {**CHAT, "model": "slow", "stream": True}
    lines: list[str] = []
    async with http.stream("POST", f"{stack.base}/v1/chat/completions", json=body) as response:
        async for line in sse_lines(response):
            lines.append(line)
            if len(lines) <= 3:  # 5 more tokens 0.1 s apart to come: certainly in flight
                assert sup.get("slow").in_flight == 1
    assert len(lines) == 9  # the role, 7 tokens, [DONE]
    assert lines[-1] == "data: [DONE]"
    await wait_for(lambda: sup.get("slow").in_flight == 0, "the in-flight count to drop")
    assert sup.get("slow").last_used is not None


async def test_upstream_killed_mid_stream_ends_with_an_error_event(
    make_config: Callable[..., Config],
    proxy_stack: MakeStack,
    http: httpx.AsyncClient,
    docker_client: docker.DockerClient,
) -> None:
    config = make_config({"slow": {"model": SMALL, "env": {"FAKE_VLLM_TOKEN_DELAY": "0.2"}}})
    stack = await proxy_stack(config)
    await stack.supervisor.ensure_ready("slow")
    container = await asyncio.to_thread(docker_client.containers.get, "ryx-vllm-slow")
    words = " ".join(["word"] * 100)  # a reply of about 100 tokens, 20 s
    body = {
        "model": "slow",
        "messages": [{"role": "user", "content": words}],
        "stream": True,
        "max_tokens": 200,
    }
    lines: list[str] = []
    async with http.stream("POST", f"{stack.base}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in sse_lines(response):
            lines.append(line)
            if len(lines) == 2:  # the role and one token
                await asyncio.to_thread(container.kill)
    assert "data: [DONE]" not in lines
    assert len(lines) < 20, lines  # cut short, long before the 100 tokens
    assert lines[-2] == "event: error", lines
    error = error_event(lines)
    assert error["code"] in ("upstream_error", "upstream_incomplete")
    assert "slow's server" in error["message"]
    await wait_for(lambda: stack.supervisor.get("slow").in_flight == 0, "the request to end")
    await wait_for(
        lambda: not stack.supervisor.get("slow").running, "the supervisor to see the death"
    )
