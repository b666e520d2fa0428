"""Shutting the proxy down while requests wait for their model: a cold start, or its first byte.

``ProxyServer.close`` is what ``serve`` runs on SIGTERM. Requests still waiting when its grace
ends get an OpenAI-shaped 503 ``shutting_down``, or, for a stream whose 200 already went out
(one waiting for a cold start hears loading messages), an SSE ``error`` event: never a
connection closed without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.proxy.helpers import (
    StallingUpstream,
    assert_error,
    chat,
    check_error_payload,
    client_for,
    external,
    make_config,
    sse_events,
)
from tests.support.fakes import FakeHealth, FakeRuntime
from tests.support.proxy import RunningProxy, running_proxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

GRACE = 0.2
KEY = "cold"


@contextlib.asynccontextmanager
async def cold_model() -> AsyncIterator[RunningProxy]:
    """A proxy whose model ``KEY`` is stopped; started, its container runs but never serves."""
    config = make_config({KEY: {"model": "/models/x", "served_name": "cold-served", "port": 1}})
    runtime = FakeRuntime()
    runtime.behaviour[KEY] = "slow"  # running, not serving
    supervisor = Supervisor(
        config, runtime, FakeHealth(runtime), MonotonicClock(), ready_poll_interval=0.02
    )
    await supervisor.open(watch=False)
    server = ProxyServer(config, supervisor, port=0, loading_interval=0.05, shutdown_grace=GRACE)
    try:
        await server.start()
        yield RunningProxy(server, supervisor)
    finally:
        await server.close()
        await supervisor.close()


async def close_while(proxy: RunningProxy, request: asyncio.Task[httpx.Response]) -> float:
    """Close the proxy while ``request`` waits; the seconds ``close`` took."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(proxy.server.close(), 5.0)
    await asyncio.wait_for(asyncio.shield(request), 5.0)
    return loop.time() - began


def assert_shutting_down(response: httpx.Response) -> None:
    error = assert_error(response, 503, "shutting_down")
    assert error["type"] == "service_unavailable"


async def test_a_request_waiting_for_a_cold_start_gets_503() -> None:
    async with cold_model() as proxy, client_for(proxy) as client:
        request = asyncio.create_task(client.post("/v1/chat/completions", json=chat(model=KEY)))
        await wait_for(
            lambda: proxy.supervisor.get(KEY).state is InstanceState.STARTING,
            f"{KEY} to be starting",
        )
        took = await close_while(proxy, request)
        response = request.result()
    assert_shutting_down(response)
    assert response.headers["X-Ryx-Model"] == KEY
    assert GRACE <= took < GRACE + 1.5


async def test_a_stream_waiting_for_a_cold_start_ends_with_an_error_event() -> None:
    async with cold_model() as proxy, client_for(proxy) as client:
        body = chat(model=KEY, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200  # sent at once: loading messages follow
            chunks = response.aiter_raw()
            first = await asyncio.wait_for(anext(chunks), 5.0)
            assert first.startswith(b": loading")
            closing = asyncio.create_task(proxy.server.close())
            rest = b"".join([chunk async for chunk in chunks])  # a clean end of the body
            await asyncio.wait_for(closing, 5.0)
    events = sse_events((first + rest).decode())
    assert events, rest
    name, data = events[-1]
    assert name == "error"
    error = check_error_payload(json.loads(data), "shutting_down")
    assert error["type"] == "service_unavailable"
    assert ("message", "[DONE]") not in events


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_waiting_for_the_first_byte_gets_503(
    stalling: StallingUpstream, stream: bool
) -> None:
    """The model is up but has not answered yet (no headers): no status went out, so a 503."""
    config = make_config({"stall": external(stalling.url, "stall-served")})
    async with (
        running_proxy(config, shutdown_grace=GRACE) as proxy,
        client_for(proxy) as client,
    ):
        request = asyncio.create_task(client.post("/v1/chat/completions", json=chat(stream=stream)))
        await wait_for(lambda: stalling.stalled == 1, "the upstream to hold the request")
        took = await close_while(proxy, request)
        response = request.result()
    assert_shutting_down(response)
    assert response.headers["X-Ryx-Model"] == "stall"
    assert GRACE <= took < GRACE + 1.5
    metrics = proxy.server.metrics.render().decode()
    assert 'ryx_proxy_requests_total{model="stall",status="503"} 1.0' in metrics
