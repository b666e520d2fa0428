"""Shutting the proxy down while a stream is in flight."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.proxy.helpers import (
    Chunks,
    check_error_payload,
    client_for,
    external,
    make_config,
    slow_chat,
    sse_events,
)
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

GRACE = 0.2


@pytest.mark.asyncio
async def test_close_ends_a_running_stream_with_a_shutting_down_event(slow: FakeUpstream) -> None:
    config = make_config({"slow": external(slow)})
    async with (
        running_proxy(config, shutdown_grace=GRACE) as proxy,
        client_for(proxy) as client,
    ):
        loop = asyncio.get_running_loop()
        async with client.stream("POST", "/v1/chat/completions", json=slow_chat()) as response:
            assert response.status_code == 200
            async with Chunks(response) as chunks:
                await chunks.read(2)
                began = loop.time()
                closing = asyncio.create_task(proxy.server.close())
                body = await chunks.read_to_end()  # a clean end of the chunked body
                await asyncio.wait_for(closing, 5.0)
                took = loop.time() - began
        # It no longer listens.
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
    assert GRACE <= took < GRACE + 1.5
    events = sse_events(body.decode())
    assert len(events) > 2  # some tokens came through before the end
    assert ("message", "[DONE]") not in events
    name, data = events[-1]
    assert name == "error"
    error = check_error_payload(json.loads(data), "shutting_down")
    assert error["type"] == "service_unavailable"


@pytest.mark.asyncio
async def test_close_lets_a_short_stream_finish_within_the_grace(slow: FakeUpstream) -> None:
    config = make_config({"slow": external(slow)})
    async with (
        running_proxy(config, shutdown_grace=5.0) as proxy,
        client_for(proxy) as client,
    ):
        body = {"messages": [{"role": "user", "content": "short"}], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async with Chunks(response) as chunks:
                await chunks.read()
                closing = asyncio.create_task(proxy.server.close())
                whole = await chunks.read_to_end()
                await asyncio.wait_for(closing, 5.0)
    events = sse_events(whole.decode())
    assert events[-1] == ("message", "[DONE]")  # finished normally, not cut
    assert all(name == "message" for name, _ in events)
