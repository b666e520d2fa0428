"""The chat's client of ryx-desktop's own proxy: what it sends and how it reads the answers.

A small aiohttp server on 127.0.0.1 plays the proxy, answering with the bytes the real one sends
(its loading comments, its ``reasoning`` loading chunks made by ``proxy._loading``, its error
bodies and SSE error events made by ``proxy._errors``), and records each request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from ryx_desktop.adapters.chat_client import ProxyChatClient
from ryx_desktop.core.chat import ChatDelta, ChatProgress, ChatRequestError, CompletionUsage
from ryx_desktop.proxy._errors import ProxyError, error_bytes, sse_error
from ryx_desktop.proxy._loading import reasoning_chunk
from tests.support.upstream import free_port

pytestmark = pytest.mark.asyncio

HISTORY = [{"role": "user", "content": "hi"}]


def chunk(delta: dict[str, Any] | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


@dataclass
class FakeProxy:
    """Answers each POST with the next scripted ``(status, content type, body parts)``."""

    answers: list[tuple[int, str, list[bytes]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.json()))
        status, kind, parts = self.answers.pop(0)
        response = web.StreamResponse(status=status, headers={"Content-Type": kind})
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[FakeProxy]:
    fake = FakeProxy()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.port = runner.addresses[0][1]
    yield fake
    await runner.cleanup()


async def collect(client: ProxyChatClient, model: str = "alpha") -> list[Any]:
    try:
        return [item async for item in client.stream(model, HISTORY)]
    finally:
        await client.close()


def client_of(proxy: FakeProxy, api_key: str | None = None) -> ProxyChatClient:
    return ProxyChatClient(f"http://127.0.0.1:{proxy.port}/", api_key)


async def test_it_posts_a_streamed_chat_with_usage_and_the_key(proxy: FakeProxy) -> None:
    proxy.answers.append((200, "text/event-stream", [chunk({"content": "ok"}), DONE]))
    items = await collect(client_of(proxy, "k3y"), "alpha-served")
    headers, body = proxy.requests[0]
    assert items == [ChatDelta("ok")]
    assert body == {
        "model": "alpha-served",
        "messages": HISTORY,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert headers["Authorization"] == "Bearer k3y"


async def test_comment_style_loading_becomes_progress(proxy: FakeProxy) -> None:
    parts = [
        b": loading alpha 40%\n\n",
        b": waiting\n\n",  # a keep-alive says nothing
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        DONE,
    ]
    proxy.answers.append((200, "text/event-stream; charset=utf-8", parts))
    items = await collect(client_of(proxy))
    assert items == [
        ChatProgress("loading alpha 40%"),
        ChatDelta("Hel"),
        ChatDelta("lo"),
        CompletionUsage(completion_tokens=2, prompt_tokens=3),
    ]


async def test_reasoning_style_loading_becomes_progress(proxy: FakeProxy) -> None:
    wait_id = "chatcmpl-ryx-wait-0123456789abcdef01234567"
    parts = [
        reasoning_chunk(wait_id, "alpha-served", "starting alpha…\n", first=True),
        reasoning_chunk(wait_id, "alpha-served", "loading alpha 50 %: weights 2/4\n", first=False),
        chunk({"reasoning_content": "the model thinking"}),  # the model's own: not progress
        chunk({"content": "done"}),
        DONE,
    ]
    proxy.answers.append((200, "text/event-stream", parts))
    items = await collect(client_of(proxy))
    assert items == [
        ChatProgress("starting alpha…"),
        ChatProgress("loading alpha 50 %: weights 2/4"),
        ChatDelta("done"),
    ]


async def test_an_error_answer_says_the_proxys_message_and_hint(proxy: FakeProxy) -> None:
    error = ProxyError(503, "alpha could not start: no GPU", "model_start_failed", hint="Fix it")
    proxy.answers.append((503, "application/json", [error_bytes(error)]))
    with pytest.raises(ChatRequestError) as caught:
        await collect(client_of(proxy))
    assert caught.value.message == "alpha could not start: no GPU"
    assert caught.value.hint == "Fix it"
    assert caught.value.status == 503


async def test_an_upstream_error_without_a_hint_keeps_a_hint(proxy: FakeProxy) -> None:
    body = {"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}
    proxy.answers.append((400, "application/json", [json.dumps(body).encode()]))
    with pytest.raises(ChatRequestError) as caught:
        await collect(client_of(proxy))
    assert (caught.value.message, caught.value.status) == ("max_tokens is too large", 400)
    assert caught.value.hint


async def test_an_error_event_mid_stream_raises(proxy: FakeProxy) -> None:
    error = ProxyError(502, "alpha's server broke off its answer", "upstream_error", hint="Logs")
    parts = [chunk({"content": "par"}), sse_error(error)]
    proxy.answers.append((200, "text/event-stream", parts))
    items: list[Any] = []
    client = client_of(proxy)

    async def read() -> None:
        async for item in client.stream("alpha", HISTORY):
            items.append(item)

    with pytest.raises(ChatRequestError) as caught:
        await read()
    await client.close()
    assert items == [ChatDelta("par")]
    assert caught.value.message == "alpha's server broke off its answer"
    assert caught.value.hint == "Logs"


async def test_a_stream_without_done_is_incomplete(proxy: FakeProxy) -> None:
    proxy.answers.append((200, "text/event-stream", [chunk({"content": "par"})]))
    with pytest.raises(ChatRequestError) as caught:
        await collect(client_of(proxy))
    assert "before it was complete" in caught.value.message


async def test_a_proxy_that_is_not_there_is_said_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChatRequestError) as caught:
        await collect(ProxyChatClient(url, None))
    assert caught.value.message == f"ryx-desktop's proxy is not answering at {url}"
    assert caught.value.hint and caught.value.status is None
