"""HTTP protocol details: the status for each malformed request, the Authorization scheme, the
errors counted in ``/metrics``, a body nested too deeply, and upstream errors that are not JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from ryx_desktop.config import Config
from tests.proxy.helpers import (
    answer_probe,
    assert_error,
    chat,
    check_error_payload,
    client_for,
    external,
    make_config,
    raw_request,
    read_request,
    request_bytes,
    serve,
)
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.asyncio

KEY = "s3cret-key"


def config(upstream: FakeUpstream, **proxy: object) -> Config:
    return make_config({"alpha": external(upstream, upstream.served_name, "a1")}, **proxy)


def posted(upstream: FakeUpstream) -> list[dict]:
    return [r for r in upstream.requests() if r["method"] == "POST"]


def counted(metrics: bytes, status: int, model: str = "-") -> float:
    """``ryx_proxy_requests_total`` for ``model`` and ``status`` (0 when absent)."""
    line = f'ryx_proxy_requests_total{{model="{model}",status="{status}"}} '
    for text in metrics.decode().splitlines():
        if text.startswith(line):
            return float(text[len(line) :])
    return 0.0


# --------------------------------------------------------------------------- request line


async def test_a_url_over_the_limit_is_414(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha)) as proxy:
        fits = await raw_request(
            proxy.port, request_bytes(proxy.port, path="/v1/models?" + "a" * 8000)
        )
        too_long = await raw_request(
            proxy.port, request_bytes(proxy.port, path="/v1/models?" + "a" * 8300), closes=True
        )
        header = await raw_request(
            proxy.port, request_bytes(proxy.port, headers=[("X-Big", "a" * 8300)]), closes=True
        )
    assert fits.status == 200
    assert too_long.status == 414
    assert too_long.headers["content-type"].startswith("application/json")
    check_error_payload(too_long.json(), "url_too_long")
    assert header.status == 431  # a long header is still "headers too large"
    check_error_payload(header.json(), "headers_too_large")


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"])
async def test_an_http_version_other_than_1_is_505(alpha: FakeUpstream, version: str) -> None:
    async with running_proxy(config(alpha)) as proxy:
        data = request_bytes(proxy.port, path="/health").replace(b"HTTP/1.1", version.encode())
        response = await raw_request(proxy.port, data, closes=True)
    assert response.status == 505, response
    assert response.headers["content-type"].startswith("application/json")
    check_error_payload(response.json(), "http_version_not_supported")


async def test_http_1_0_is_served(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha)) as proxy:
        data = request_bytes(proxy.port, path="/health").replace(b"HTTP/1.1", b"HTTP/1.0")
        response = await raw_request(proxy.port, data)
    assert response.status == 200


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "x-custom, chunked"])
async def test_a_transfer_coding_other_than_chunked_is_501(
    alpha: FakeUpstream, coding: str
) -> None:
    body = json.dumps(chat()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with running_proxy(config(alpha)) as proxy:
        headers = [("Content-Type", "application/json"), ("Transfer-Encoding", coding)]
        data = request_bytes(
            proxy.port, method="POST", path="/v1/chat/completions", headers=headers, body=chunked
        )
        refused = await raw_request(proxy.port, data, closes=True)
        plain = request_bytes(
            proxy.port,
            method="POST",
            path="/v1/chat/completions",
            headers=[("Content-Type", "application/json"), ("Transfer-Encoding", "Chunked")],
            body=chunked,
        )
        served = await raw_request(proxy.port, plain)
    assert refused.status == 501, refused
    check_error_payload(refused.json(), "transfer_encoding_not_supported")
    assert served.status == 200  # plain chunked, any case, is fine
    assert len(posted(alpha)) == 1


# --------------------------------------------------------------------------- Authorization


@pytest.mark.parametrize(
    "value", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}", f"bEaReR  {KEY}"]
)
async def test_the_bearer_scheme_is_case_insensitive(alpha: FakeUpstream, value: str) -> None:
    async with serve(config(alpha, api_key=KEY), headers={"Authorization": value}) as client:
        models = await client.get("/v1/models")
        completion = await client.post("/v1/chat/completions", json=chat())
    assert models.status_code == 200
    assert completion.status_code == 200
    # The key is never passed on to the model.
    assert all("authorization" not in {h.lower() for h in r["headers"]} for r in posted(alpha))


@pytest.mark.parametrize(
    "value", [f"Basic {KEY}", "bearer wrong", f"bearer{KEY}", f"bearer {KEY}x", "bearer", KEY]
)
async def test_other_credentials_are_still_refused(alpha: FakeUpstream, value: str) -> None:
    async with serve(config(alpha, api_key=KEY), headers={"Authorization": value}) as client:
        response = await client.get("/v1/models")
    assert_error(response, 401, "invalid_api_key")


async def test_a_key_that_is_not_utf8_is_refused(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha, api_key=KEY)) as proxy:
        data = request_bytes(proxy.port, headers=[("Authorization", "bearer \xff\xfe")])
        response = await raw_request(proxy.port, data)
    assert response.status == 401, response
    check_error_payload(response.json(), "invalid_api_key")


# --------------------------------------------------------------------------- metrics


async def test_parser_errors_and_500s_are_counted_in_metrics(
    alpha: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_proxy(config(alpha)) as proxy:
        port = proxy.port
        malformed = await raw_request(port, b"GARBAGE\r\n\r\n", closes=True)
        long_url = await raw_request(port, request_bytes(port, path="/" + "a" * 9000))
        big_header = await raw_request(port, request_bytes(port, headers=[("X", "a" * 9000)]))
        version = await raw_request(
            port, request_bytes(port, path="/health").replace(b"HTTP/1.1", b"HTTP/3.0")
        )

        def broken() -> list[object]:
            raise RuntimeError("a bug")

        monkeypatch.setattr(proxy.supervisor, "instances", broken)
        failed = await raw_request(port, request_bytes(port, path="/health"), closes=True)
        metrics = proxy.server.metrics.render()
    assert [r.status for r in (malformed, long_url, big_header, version, failed)] == [
        400,
        414,
        431,
        505,
        500,
    ]
    check_error_payload(failed.json(), "internal_error")
    for status in (400, 414, 431, 505, 500):
        assert counted(metrics, status) == 1, (status, metrics.decode())


# --------------------------------------------------------------------------- bodies


DEEP = 100_000


@pytest.mark.parametrize("padding", [0, 1 << 20], ids=["small", "large"])
async def test_a_body_nested_too_deeply_is_400(alpha: FakeUpstream, padding: int) -> None:
    body = b'{"pad": "' + b"p" * padding + b'", "x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    async with serve(config(alpha)) as client:
        headers = {"Content-Type": "application/json"}
        response = await client.post("/v1/chat/completions", content=body, headers=headers)
    error = assert_error(response, 400, "invalid_json")
    assert "nested too deeply" in error["message"]
    assert posted(alpha) == []


# --------------------------------------------------------------------------- upstream errors


class ErrorUpstream:
    """A raw upstream that answers probes (GET) and refuses every POST with ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ErrorUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._handlers:  # the proxy closed its connections: they end on their own
            await asyncio.wait(self._handlers, timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await read_request(reader)
                if head.startswith(b"POST"):
                    writer.write(self.answer)
                    await writer.drain()
                else:
                    await answer_probe(writer)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        self._handlers.discard(task)


@contextlib.asynccontextmanager
async def error_upstream(answer: bytes) -> AsyncIterator[ErrorUpstream]:
    async with ErrorUpstream(answer) as upstream:
        yield upstream


PLAIN_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 21\r\n\r\nInternal Server Error"
)
HTML = b"<html>gateway is down</html>"
CHUNKED_HTML_502 = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(HTML), HTML)
)


@pytest.mark.parametrize(
    ("answer", "status", "text"),
    [(PLAIN_500, 500, "Internal Server Error"), (CHUNKED_HTML_502, 502, "gateway is down")],
    ids=["text-500", "chunked-html-502"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_error_that_is_not_json_is_wrapped(
    answer: bytes, status: int, text: str, stream: bool
) -> None:
    async with error_upstream(answer) as upstream:
        config = make_config({"plain": external(upstream.url, "plain-served")})
        async with running_proxy(config) as proxy, client_for(proxy) as client:
            response = await client.post("/v1/chat/completions", json=chat(stream=stream))
            metrics = proxy.server.metrics.render()
    error = assert_error(response, status, "upstream_error")
    assert text in error["message"]
    assert "plain" in error["message"]
    assert response.headers["X-Ryx-Model"] == "plain"
    assert counted(metrics, status, "plain") == 1


async def test_an_upstream_json_error_is_relayed_as_it_is() -> None:
    body = b'{"object": "error", "message": "bad input", "type": "BadRequestError", "code": 400}'
    answer = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    async with error_upstream(answer) as upstream:
        config = make_config({"plain": external(upstream.url, "plain-served")})
        async with serve(config) as client:
            response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 400
    assert response.content == body
