"""Bad input and overload: sizes, malformed bodies and requests, slow clients, limits, routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from ryx_desktop.config import Config
from tests.proxy.helpers import (
    Chunks,
    assert_error,
    chat,
    check_error_payload,
    external,
    make_config,
    raw_request,
    read_response,
    request_bytes,
    serve,
    slow_chat,
)
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

TINY_MB = 0.001  # 1048 bytes


def config(upstream: FakeUpstream, **proxy: object) -> Config:
    return make_config({"alpha": external(upstream, upstream.served_name, "a1")}, **proxy)


def posted(upstream: FakeUpstream) -> list[dict]:
    return [r for r in upstream.requests() if r["method"] == "POST"]


def post_bytes(port: int, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    return request_bytes(
        port, method="POST", path="/v1/chat/completions", headers=headers, body=body
    )


# --------------------------------------------------------------------------- bodies


@pytest.mark.asyncio
async def test_body_over_the_limit_is_413(alpha: FakeUpstream) -> None:
    big = chat("x" * 2000)
    small = chat("x" * 100)
    async with serve(config(alpha, max_body_mb=TINY_MB)) as client:
        too_big = await client.post("/v1/chat/completions", json=big)
        fits = await client.post("/v1/chat/completions", json=small)
    error = assert_error(too_big, 413, "body_too_large")
    assert "0.001 MB" in error["message"]
    assert fits.status_code == 200
    assert [r["json"]["messages"] for r in posted(alpha)] == [small["messages"]]


@pytest.mark.asyncio
async def test_chunked_body_over_the_limit_is_413(alpha: FakeUpstream) -> None:
    async def pieces(total: int) -> AsyncIterator[bytes]:
        data = json.dumps(chat("y" * total)).encode()
        for start in range(0, len(data), 256):
            yield data[start : start + 256]

    async with serve(config(alpha, max_body_mb=TINY_MB)) as client:
        too_big = await client.post("/v1/chat/completions", content=pieces(3000))
        fits = await client.post("/v1/chat/completions", content=pieces(100))
    assert too_big.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in too_big.request.headers
    assert_error(too_big, 413, "body_too_large")
    assert fits.status_code == 200
    assert len(posted(alpha)) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "a1", "messages": [', "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'"a string"', "invalid_body"),
        (b"null", "invalid_body"),
        (b'{"model": 5, "messages": []}', "invalid_model"),
        (b'{"model": ["a1"], "messages": []}', "invalid_model"),
    ],
    ids=[
        "truncated",
        "empty",
        "not-utf8",
        "array",
        "string",
        "null",
        "model-number",
        "model-list",
    ],
)
async def test_bad_body_is_400(alpha: FakeUpstream, body: bytes, code: str) -> None:
    async with serve(config(alpha)) as client:
        headers = {"Content-Type": "application/json"}
        response = await client.post("/v1/chat/completions", content=body, headers=headers)
    assert_error(response, 400, code)
    assert posted(alpha) == []


# --------------------------------------------------------------------------- HTTP framing


@pytest.mark.asyncio
async def test_content_length_and_transfer_encoding_together_is_400(alpha: FakeUpstream) -> None:
    body = json.dumps(chat()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with running_proxy(config(alpha)) as proxy:
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Transfer-Encoding", "chunked"),
        ]
        data = post_bytes(proxy.port, chunked, headers)
        response = await raw_request(proxy.port, data, closes=True)  # no smuggled second request
    assert response.status == 400
    assert response.headers["content-type"].startswith("application/json")
    check_error_payload(response.json(), "bad_request")
    assert posted(alpha) == []


@pytest.mark.asyncio
async def test_header_line_over_the_limit_is_431(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha)) as proxy:
        fits = await raw_request(
            proxy.port, request_bytes(proxy.port, headers=[("X-Big", "a" * 8000)])
        )
        too_long = await raw_request(
            proxy.port, request_bytes(proxy.port, headers=[("X-Big", "a" * 8200)]), closes=True
        )
    assert fits.status == 200
    assert too_long.status == 431
    assert too_long.headers["content-type"].startswith("application/json")
    check_error_payload(too_long.json(), "headers_too_large")


@pytest.mark.asyncio
async def test_too_many_headers_is_431(alpha: FakeUpstream) -> None:
    def headers(count: int) -> list[tuple[str, str]]:
        return [(f"X-H{i}", "v") for i in range(count)]

    async with running_proxy(config(alpha)) as proxy:
        fits = await raw_request(proxy.port, request_bytes(proxy.port, headers=headers(100)))
        too_many = await raw_request(
            proxy.port, request_bytes(proxy.port, headers=headers(200)), closes=True
        )
    assert fits.status == 200
    assert too_many.status == 431
    check_error_payload(too_many.json(), "headers_too_large")


@pytest.mark.asyncio
async def test_client_sending_headers_slowly_is_dropped(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha), header_timeout=0.3) as proxy:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            began = loop.time()
            writer.write(b"GET /v1/mod")  # and never the rest
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 3.0)
            took = loop.time() - began
        finally:
            writer.close()
            await writer.wait_closed()
    assert closed == b""  # the server closed the connection, answering nothing
    assert 0.25 <= took < 2.0


@pytest.mark.asyncio
async def test_client_completing_its_headers_in_time_is_not_dropped(alpha: FakeUpstream) -> None:
    """The deadline covers the headers only: a body may come later, a response may take long."""
    body = json.dumps(chat("late body")).encode()
    head = post_bytes(
        0, b"", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    async with running_proxy(config(alpha), header_timeout=0.3) as proxy:
        head = head.replace(b"Host: 127.0.0.1:0", b"Host: 127.0.0.1:%d" % proxy.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(head)  # complete headers, no body yet
            await writer.drain()
            slow_writer.write(b"GET /v1/mod")
            await slow_writer.drain()
            # The trickling connection, opened after ours, is dropped: our deadline passed too.
            assert await asyncio.wait_for(slow_reader.read(), 3.0) == b""
            writer.write(body)
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 5.0)
            # Kept alive: a second request on the same connection is served too.
            writer.write(request_bytes(proxy.port, path="/health"))
            await writer.drain()
            again = await asyncio.wait_for(read_response(reader), 5.0)
        finally:
            for w in (writer, slow_writer):
                w.close()
                await w.wait_closed()
    assert response.status == 200, response
    assert json.loads(response.body)["choices"][0]["message"]["content"].endswith("late body")
    assert again.status == 200


# --------------------------------------------------------------------------- limits


@pytest.mark.asyncio
async def test_requests_over_the_concurrency_limit_are_429(slow: FakeUpstream) -> None:
    async with (
        serve(config(slow, concurrency_limit=1)) as client,
        client.stream("POST", "/v1/chat/completions", json=slow_chat()) as first,
        Chunks(first) as chunks,
    ):
        assert first.status_code == 200
        await chunks.read()  # the first request is in flight, streaming
        second = await client.post("/v1/chat/completions", json=chat())
        models = await client.get("/v1/models")  # not a forwarded request
    error = assert_error(second, 429, "too_many_requests")
    assert "alpha" in error["message"]
    assert second.headers["Retry-After"] == "1"
    assert second.headers["X-Ryx-Model"] == "alpha"
    assert models.status_code == 200
    assert len(posted(slow)) == 1


@pytest.mark.asyncio
async def test_concurrency_limit_frees_its_slot_when_a_request_ends(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, concurrency_limit=1)) as client:
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=chat())
            assert response.status_code == 200
    assert len(posted(alpha)) == 3


# --------------------------------------------------------------------------- routes


#: Paths that do not exist, vLLM's own admin endpoints among them.
UNKNOWN_PATHS = (
    "/",
    "/v1",
    "/v1/chat",
    "/v1/responses",
    "/sleep",
    "/wake_up",
    "/reset_prefix_cache",
)


@pytest.mark.asyncio
async def test_unknown_path_is_404(alpha: FakeUpstream) -> None:
    async with serve(config(alpha)) as client:
        responses = {
            (method, path): await client.request(method, path, json=chat())
            for path in (*UNKNOWN_PATHS, "/api/instances/alpha/kill", "/api/instances//start")
            for method in ("GET", "POST")
        }
    for case, response in responses.items():
        assert response.status_code == 404, case
        assert_error(response, 404, "not_found")
    assert posted(alpha) == []  # vLLM's own endpoints are never reached


@pytest.mark.asyncio
async def test_unknown_model_path_is_404(alpha: FakeUpstream) -> None:
    async with serve(config(alpha)) as client:
        response = await client.get("/v1/models/nope")
    assert_error(response, 404, "model_not_found")


#: (method, path, what Allow must say) for routes that exist with other methods.
WRONG_METHODS = (
    ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/completions", "POST"),
    ("DELETE", "/v1/embeddings", "POST"),
    ("POST", "/v1/models", "GET"),
    ("POST", "/health", "GET"),
    ("DELETE", "/metrics", "GET"),
    ("POST", "/api/instances", "GET"),
    ("GET", "/api/instances/alpha/start", "POST"),
    ("PATCH", "/api/instances/alpha/stop", "POST"),
)


@pytest.mark.asyncio
async def test_wrong_method_is_405_with_allow(alpha: FakeUpstream) -> None:
    async with serve(config(alpha)) as client:
        responses = [
            (method, path, allow, await client.request(method, path))
            for method, path, allow in WRONG_METHODS
        ]
    for method, path, allow, response in responses:
        assert response.status_code == 405, (method, path)
        error = assert_error(response, 405, "method_not_allowed")
        assert method in error["message"]
        assert response.headers["Allow"] == allow, (method, path)
    assert posted(alpha) == []
