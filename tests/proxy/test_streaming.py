"""Streams and upstream failures: disconnects, a dying or silent upstream, refused connections."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.proxy.helpers import (
    Chunks,
    StallingUpstream,
    assert_error,
    chat,
    check_error_payload,
    external,
    free_port_url,
    make_config,
    serve,
    slow_chat,
    sse_events,
)
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for


def assert_ends_with_error_event(body: bytes, code: str) -> dict:
    """The stream's last event is an SSE ``error`` event with this code, and no ``[DONE]``."""
    events = sse_events(body.decode())
    assert events, body
    assert ("message", "[DONE]") not in events, body
    name, data = events[-1]
    assert name == "error", body
    return check_error_payload(json.loads(data), code)


@pytest.mark.asyncio
async def test_stream_is_relayed_with_no_buffering_headers(slow: FakeUpstream) -> None:
    async with serve(make_config({"slow": external(slow)})) as client:
        body = chat("one two", stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            headers = response.headers
            async with Chunks(response) as chunks:
                first = await chunks.read()
                # The role chunk comes before any token: relayed while the fake still generates.
                assert b'"role": "assistant"' in first
                assert b"[DONE]" not in first
                whole = await chunks.read_to_end()
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["X-Ryx-Model"] == "slow"
    assert "content-length" not in headers
    events = sse_events(whole.decode())
    assert events[-1] == ("message", "[DONE]")
    assert all(name == "message" for name, _ in events)


@pytest.mark.asyncio
async def test_hop_by_hop_headers_are_not_forwarded(alpha: FakeUpstream) -> None:
    headers = {
        "Connection": "keep-alive, X-Foo",
        "X-Foo": "named by Connection",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "X-Custom": "kept",
        "OpenAI-Organization": "org-kept",
    }
    async with serve(make_config({"alpha": external(alpha)})) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert response.status_code == 200
    [received] = [r for r in alpha.requests() if r["method"] == "POST"]
    sent = received["headers"]
    for name in ("x-foo", "keep-alive", "proxy-authorization", "te"):
        assert name not in sent, f"{name} was forwarded: {sent}"
    assert sent.get("connection", "keep-alive").lower() == "keep-alive"
    assert sent["x-custom"] == "kept"
    assert sent["openai-organization"] == "org-kept"
    assert sent["host"] == f"127.0.0.1:{alpha.port}"  # the upstream's own host, not ours
    assert int(sent["content-length"]) > 0


@pytest.mark.asyncio
async def test_client_disconnect_closes_the_upstream_at_once(
    new_upstream: Callable[..., FakeUpstream],
) -> None:
    upstream = new_upstream(slow=True)
    async with serve(make_config({"own": external(upstream)})) as client:
        async with client.stream("POST", "/v1/chat/completions", json=slow_chat()) as response:
            assert response.status_code == 200
            async with Chunks(response) as chunks:
                await chunks.read(2)
            assert upstream.disconnects() == 0
        # Leaving the block closed the client's connection mid-stream (about 100 tokens to go).
        took = await wait_for(lambda: upstream.disconnects() == 1, "the upstream abort", 1.0)
    assert took < 1.0
    assert upstream.disconnects() == 1


@pytest.mark.asyncio
async def test_upstream_dying_mid_stream_ends_with_an_error_event(
    new_upstream: Callable[..., FakeUpstream],
) -> None:
    upstream = new_upstream(slow=True)
    async with (
        serve(make_config({"own": external(upstream)})) as client,
        client.stream("POST", "/v1/chat/completions", json=slow_chat()) as response,
        Chunks(response) as chunks,
    ):
        assert response.status_code == 200
        await chunks.read(2)
        upstream.kill()
        body = await chunks.read_to_end()  # ends cleanly: no exception here
    error = assert_ends_with_error_event(body, "upstream_error")
    assert "own" in error["message"]
    assert error["type"] == "upstream_error"


@pytest.mark.asyncio
async def test_upstream_refusing_connections_is_502() -> None:
    config = make_config({"gone": external(free_port_url(), "gone-served")})
    async with serve(config) as client:
        plain = await client.post("/v1/chat/completions", json=chat())
        stream = await client.post("/v1/chat/completions", json=chat(stream=True))
    for response in (plain, stream):
        error = assert_error(response, 502, "upstream_unreachable")
        assert "refused" in error["message"]
        assert response.headers["X-Ryx-Model"] == "gone"


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_silent_past_read_timeout_is_504(
    stalling: StallingUpstream, stream: bool
) -> None:
    config = make_config({"mute": external(stalling.url, "mute-served")}, read_timeout=0.5)
    async with serve(config) as client:
        began = time.monotonic()
        response = await client.post("/v1/chat/completions", json=chat(stream=stream))
        waited = time.monotonic() - began
    assert stalling.stalled == 1  # the request did reach it
    error = assert_error(response, 504, "upstream_timeout")
    assert "0.5 s" in error["message"]
    assert response.headers["X-Ryx-Model"] == "mute"
    assert 0.5 <= waited < 5  # cut after read_timeout (plus at most a quarter), not hung


@pytest.mark.asyncio
async def test_upstream_silent_mid_answer_is_504_and_the_next_request_works(
    stalling_mid_body: StallingUpstream, alpha: FakeUpstream
) -> None:
    models = {
        "mute": external(stalling_mid_body.url, "mute-served"),
        "fine": external(alpha.url, "alpha-served"),
    }
    async with serve(make_config(models, read_timeout=0.5)) as client:
        response = await client.post("/v1/chat/completions", json=chat(model="mute"))
        after = await client.post("/v1/chat/completions", json=chat(model="fine"))
    assert stalling_mid_body.stalled == 1
    assert_error(response, 504, "upstream_timeout")
    assert after.status_code == 200  # the cut wait left the handler and the loop in order


@pytest.mark.asyncio
async def test_upstream_silent_mid_stream_ends_with_a_timeout_event(
    stalling_mid_stream: StallingUpstream,
) -> None:
    url = stalling_mid_stream.url
    config = make_config({"mute": external(url, "mute-served")}, read_timeout=0.5)
    async with serve(config) as client:
        body = chat(stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            whole = await response.aread()
    events = sse_events(whole.decode())
    assert events[0][0] == "message"
    assert json.loads(events[0][1])["choices"][0]["delta"]["content"] == "one"  # relayed first
    assert_ends_with_error_event(whole, "upstream_timeout")
