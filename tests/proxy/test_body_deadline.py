"""A client that sends its headers, then its body slowly or not at all: 408 after body_timeout.

Without the deadline such a connection (and the part of the body it sent) is held as long as
the client likes; with it the client gets an OpenAI-shaped 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from ryx_desktop.config import Config
from tests.proxy.helpers import (
    chat,
    check_error_payload,
    external,
    make_config,
    read_response,
    request_bytes,
)
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.asyncio

DEADLINE = 0.3
#: The client's pace when it trickles: one byte per PACE, far more bytes than fit in DEADLINE.
PACE = 0.02


def config(upstream: FakeUpstream) -> Config:
    return make_config({"alpha": external(upstream)})


def posted(upstream: FakeUpstream) -> list[dict]:
    return [r for r in upstream.requests() if r["method"] == "POST"]


def head(port: int, framing: str, length: int) -> bytes:
    headers = [("Content-Type", "application/json")]
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(length)))
    return request_bytes(port, method="POST", path="/v1/chat/completions", headers=headers)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` a byte at a time, one per PACE, until done or the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(PACE)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("client", ["stalls", "trickles"])
async def test_a_body_not_sent_in_time_is_408_and_the_connection_closed(
    alpha: FakeUpstream, framing: str, client: str
) -> None:
    body = json.dumps(chat("x" * 500)).encode()
    if framing == "chunked":
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with running_proxy(config(alpha), body_timeout=DEADLINE) as proxy:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        sender: asyncio.Task[None] | None = None
        try:
            writer.write(head(proxy.port, framing, len(body)))
            if client == "stalls":
                writer.write(body[:40])  # and never the rest
            else:
                sender = asyncio.create_task(trickle(writer, body))
            await writer.drain()
            began = loop.time()
            response = await asyncio.wait_for(read_response(reader), 5.0)
            took = loop.time() - began
            rest = await asyncio.wait_for(reader.read(), 5.0)  # the server closed it
            after = loop.time() - began
            metrics = proxy.server.metrics.render().decode()
        finally:
            if sender is not None:
                sender.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert response.status == 408, response
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["connection"].lower() == "close"
    error = check_error_payload(response.json(), "body_timeout")
    assert f"{DEADLINE:g} s" in error["message"]
    assert DEADLINE * 0.9 <= took < DEADLINE + 1.5
    assert rest == b""
    assert after < DEADLINE + 1.5  # closed at once, not after reading on (aiohttp lingers 10 s)
    assert 'ryx_proxy_requests_total{model="-",status="408"} 1.0' in metrics
    assert posted(alpha) == []


async def test_a_body_sent_within_the_deadline_is_served(alpha: FakeUpstream) -> None:
    """The deadline is for the whole body: one that takes a while but arrives in time passes."""
    body = json.dumps(chat("in time")).encode()
    async with running_proxy(config(alpha), body_timeout=5.0) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(head(proxy.port, "content-length", len(body)))
            await trickle(writer, body[:10])  # ten bytes, PACE apart, then the rest
            writer.write(body[10:])
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 5.0)
        finally:
            writer.close()
            await writer.wait_closed()
    assert response.status == 200, response
    assert json.loads(response.body)["choices"][0]["message"]["content"].endswith("in time")
