"""What a stream waiting for its model's cold start hears: ``proxy.loading_messages``.

A managed model starts in the in-memory runtime (no Docker): its container "runs" at once but
serves only when the test says so, and prints the load-progress lines the test writes; the
port it serves on is a real fake vLLM's, so once it is ready the proxy relays a real stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.states import InstanceState, ProgressPhase
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.proxy.helpers import chat, make_config, sse_events
from tests.support.fakes import FakeContainer, FakeHealth, FakeRuntime
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

KEY = "small"
SERVED = "alpha-served"  # the shared fake upstream's name, so the started model is served there
HALF = "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01,  1.00it/s]"
UP = "INFO:     Application startup complete."
#: Short, so that a wait of a few probe rounds spans many intervals (repeats would show).
INTERVAL = 0.02
#: A deadline on each read, so that a missing event fails the test rather than hanging it.
READ_TIMEOUT = 10.0


class _ControlledRuntime(FakeRuntime):
    """Containers print nothing by themselves and serve only once ``serve`` is called."""

    LOAD_LINES = ()

    def __init__(self) -> None:
        super().__init__()
        self.live_logs = True
        self.behaviour[KEY] = "slow"  # running, not serving

    def container(self) -> FakeContainer | None:
        return self.by_key(KEY)

    def serve(self) -> None:
        """The server is up: it answers probes and says so in its log."""
        container = self.container()
        assert container is not None
        container.serving = True
        self.write_log(container.info.id, UP)


@dataclass
class ColdStart:
    """A proxy in front of a supervisor whose model ``KEY`` is stopped."""

    server: ProxyServer
    supervisor: Supervisor
    runtime: _ControlledRuntime
    health: FakeHealth

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def log(self, *lines: str) -> None:
        container = self.runtime.container()
        assert container is not None
        self.runtime.write_log(container.info.id, *lines)

    async def loading(self) -> None:
        """Wait until the container runs and its log is followed (the LOAD phase)."""

        def loading() -> bool:
            progress = self.supervisor.get(KEY).progress
            return self.runtime.container() is not None and (
                progress is not None and progress.phase is ProgressPhase.LOAD
            )

        await wait_for(loading, f"{KEY} to be loading")

    async def probe_rounds(self, count: int) -> None:
        """Let ``count`` more readiness probes go by (each ready_poll_interval apart)."""
        target = self.health.probes + count
        await wait_for(lambda: self.health.probes >= target, f"{count} probe rounds")

    def openai(self) -> AsyncOpenAI:
        return AsyncOpenAI(
            base_url=f"{self.base}/v1",
            api_key="x",
            max_retries=0,
            timeout=READ_TIMEOUT,
        )


@contextlib.asynccontextmanager
async def cold_start(
    upstream: FakeUpstream, *, behaviour: str = "slow", **proxy: Any
) -> AsyncIterator[ColdStart]:
    config = make_config(
        {KEY: {"model": "/models/x", "served_name": SERVED, "port": upstream.port}}, **proxy
    )
    runtime = _ControlledRuntime()
    runtime.behaviour[KEY] = behaviour
    health = FakeHealth(runtime)
    supervisor = Supervisor(config, runtime, health, MonotonicClock(), ready_poll_interval=0.02)
    await supervisor.open(watch=False)
    server = ProxyServer(config, supervisor, port=0, loading_interval=INTERVAL)
    try:
        await server.start()
        yield ColdStart(server, supervisor, runtime, health)
    finally:
        await server.close()
        await supervisor.close()


def reasoning_of(chunk: ChatCompletionChunk) -> str | None:
    """The chunk's ``reasoning_content``: not a field the openai client knows, so an extra."""
    if not chunk.choices:
        return None
    extra = chunk.choices[0].delta.model_extra or {}
    value = extra.get("reasoning_content")
    assert value is None or isinstance(value, str), extra
    return value


async def next_chunk(chunks: AsyncIterator[ChatCompletionChunk]) -> ChatCompletionChunk:
    return await asyncio.wait_for(anext(chunks), READ_TIMEOUT)


async def read_until(
    chunks: AsyncIterator[ChatCompletionChunk], seen: list[ChatCompletionChunk], text: str
) -> None:
    """Read chunks into ``seen`` until one's reasoning contains ``text``."""
    while True:
        chunk = await next_chunk(chunks)
        seen.append(chunk)
        if text in (reasoning_of(chunk) or ""):
            return


async def read_all(
    stream: AsyncStream[ChatCompletionChunk], seen: list[ChatCompletionChunk]
) -> None:
    async with stream:
        async for chunk in stream:
            seen.append(chunk)


# ------------------------------------------------------------------ reasoning


async def test_reasoning_deltas_describe_the_start_then_the_answer_follows(
    alpha: FakeUpstream,
) -> None:
    async with cold_start(alpha, loading_messages="reasoning") as cold:
        client = cold.openai()
        try:
            stream = await client.chat.completions.create(
                model=KEY, messages=[{"role": "user", "content": "wake up"}], stream=True
            )
            seen: list[ChatCompletionChunk] = []
            async with stream:
                chunks = aiter(stream)
                seen.append(await next_chunk(chunks))  # said at once, before anything loads
                await cold.loading()
                cold.log(HALF)
                await read_until(chunks, seen, "30 %")
                await cold.probe_rounds(5)  # many intervals with nothing new to say
                cold.runtime.serve()
                seen += [chunk async for chunk in chunks]
        finally:
            await client.close()

    waiting = [c for c in seen if reasoning_of(c) is not None]
    answer = [c for c in seen if reasoning_of(c) is None]
    assert waiting, seen
    assert seen[: len(waiting)] == waiting, "the answer began before the wait was over"
    texts = [reasoning_of(c) for c in waiting]
    assert texts[0] == f"starting {KEY}…\n", texts
    assert f"loading {KEY} 30 %: weights 2/4 shards\n" in texts, texts
    assert len(texts) == len(set(texts)), f"a text was repeated: {texts}"
    for index, chunk in enumerate(waiting):
        assert chunk.id.startswith("chatcmpl-ryx-wait-"), chunk
        assert chunk.id == waiting[0].id, "one id for the whole wait"
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == SERVED  # what the model's own chunks carry
        assert chunk.choices[0].index == 0
        assert chunk.choices[0].finish_reason is None
        assert chunk.choices[0].delta.content is None
        assert chunk.choices[0].delta.role == ("assistant" if index == 0 else None), chunk
    content = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    assert content == f"fake reply from {SERVED} to: wake up"
    assert all(c.model == SERVED for c in answer)
    assert answer[-1].choices[0].finish_reason == "stop"
    assert cold.supervisor.get(KEY).state is InstanceState.READY


async def test_reasoning_wait_sends_no_comment_text_and_keeps_the_stream_alive(
    alpha: FakeUpstream,
) -> None:
    """Raw bytes: the wait is chunk events plus bare keep-alive comments, never the old lines."""
    async with (
        cold_start(alpha, loading_messages="reasoning") as cold,
        httpx.AsyncClient(base_url=cold.base, trust_env=False, timeout=READ_TIMEOUT) as http,
        http.stream("POST", "/v1/chat/completions", json=chat("hi", model=KEY, stream=True)) as r,
    ):
        assert r.status_code == 200
        await cold.loading()
        await cold.probe_rounds(5)
        cold.runtime.serve()
        body = (await r.aread()).decode()
    comments = [line for line in body.splitlines() if line.startswith(":")]
    assert comments, "no keep-alive while the text stayed the same"
    assert not [line for line in comments if "loading" in line], comments
    datas = [json.loads(data) for _, data in sse_events(body) if data != "[DONE]"]
    reasoning = [d["choices"][0]["delta"]["reasoning_content"] for d in datas[:2]]
    assert reasoning == [f"starting {KEY}…\n", f"loading {KEY}…\n"], datas[:3]
    assert body.rstrip().endswith("data: [DONE]")


async def test_completions_streams_keep_comments_under_reasoning(alpha: FakeUpstream) -> None:
    body = {"model": KEY, "prompt": "hi", "stream": True}
    async with (
        cold_start(alpha, loading_messages="reasoning") as cold,
        httpx.AsyncClient(base_url=cold.base, trust_env=False, timeout=READ_TIMEOUT) as http,
        http.stream("POST", "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.aiter_lines()
        first = await asyncio.wait_for(anext(lines), READ_TIMEOUT)
        await cold.loading()
        cold.runtime.serve()
        rest = [line async for line in lines if line]
    assert first == f": loading {KEY} starting"
    assert "reasoning_content" not in "\n".join(rest)
    comments = [line for line in rest if line.startswith(":")]
    assert all(line.startswith(f": loading {KEY} ") for line in comments), comments
    datas = [line for line in rest if line.startswith("data:")]
    assert json.loads(datas[0].removeprefix("data: "))["object"] == "text_completion"
    assert datas[-1] == "data: [DONE]", rest


async def test_a_failed_start_still_ends_with_the_error_event(alpha: FakeUpstream) -> None:
    async with cold_start(alpha, behaviour="crash", loading_messages="reasoning") as cold:
        client = cold.openai()
        seen: list[ChatCompletionChunk] = []
        try:
            stream = await client.chat.completions.create(
                model=KEY, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            with pytest.raises(openai.APIError) as info:
                await read_all(stream, seen)
        finally:
            await client.close()
    assert f"{KEY} could not start" in info.value.message, info.value.message
    assert [reasoning_of(c) for c in seen][:1] == [f"starting {KEY}…\n"], seen
    assert all(reasoning_of(c) is not None for c in seen), "only the wait came before the error"


# ------------------------------------------------------------------ comment (default) and off


async def test_the_default_is_comment_lines_and_no_reasoning(alpha: FakeUpstream) -> None:
    async with (
        cold_start(alpha) as cold,
        httpx.AsyncClient(base_url=cold.base, trust_env=False, timeout=READ_TIMEOUT) as http,
        http.stream("POST", "/v1/chat/completions", json=chat("hi", model=KEY, stream=True)) as r,
    ):
        assert r.status_code == 200
        lines = r.aiter_lines()
        before: list[str] = []
        while len([line for line in before if line]) < 3:  # repeated every interval
            before.append(await asyncio.wait_for(anext(lines), READ_TIMEOUT))
        cold.runtime.serve()
        rest = [line async for line in lines]
    comments = [line for line in before if line]
    assert all(line.startswith(f": loading {KEY} ") for line in comments), comments
    body = "\n".join(rest)
    assert "reasoning_content" not in body
    datas = [line for line in rest if line.startswith("data:")]
    assert json.loads(datas[0].removeprefix("data: "))["model"] == SERVED
    assert datas[-1] == "data: [DONE]"


async def test_off_sends_nothing_while_the_model_starts(alpha: FakeUpstream) -> None:
    async with (
        cold_start(alpha, loading_messages="off") as cold,
        httpx.AsyncClient(base_url=cold.base, trust_env=False, timeout=READ_TIMEOUT) as http,
        http.stream("POST", "/v1/chat/completions", json=chat("hi", model=KEY, stream=True)) as r,
    ):
        assert r.status_code == 200  # the headers go out at once, as in the other styles
        await cold.loading()
        cold.log(HALF)

        def halfway() -> bool:
            progress = cold.supervisor.get(KEY).progress
            return progress is not None and progress.detail == "weights 2/4 shards"

        await wait_for(halfway, "the progress to reach 2/4 shards")
        await cold.probe_rounds(5)  # many intervals in which comments would have gone out
        cold.runtime.serve()
        body = (await r.aread()).decode()
    assert body.startswith("data: {"), body[:200]
    assert not [line for line in body.splitlines() if line.startswith(":")]
    assert "reasoning_content" not in body
    first = json.loads(sse_events(body)[0][1])
    assert first["model"] == SERVED and not first["id"].startswith("chatcmpl-ryx-wait-")
    assert body.rstrip().endswith("data: [DONE]")
