"""The keep-alive client for non-streaming forwards (``proxy._upstream_pool``).

Against a scripted raw upstream that counts its connections: kept-alive connections are reused,
every way of delimiting a body is read, a connection the upstream closed while it sat idle is
retried once on a fresh one (and only then), and an error or a cancel closes the connection. The
last tests go through the proxy: its non-streaming forwards share one upstream connection and
send the same head that aiohttp's client sends for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from ryx_desktop.proxy._upstream_pool import (
    PooledResponse,
    Target,
    UpstreamConnectError,
    UpstreamPool,
    request_head,
)
from tests.proxy.helpers import (
    answer_probe,
    chat,
    client_for,
    external,
    free_port_url,
    make_config,
    read_request,
    request_bytes,
    serve,
)
from tests.support.proxy import running_proxy

BODY = b'{"id": "cmpl-1", "object": "chat.completion"}'
PATH = "/v1/chat/completions"


def json_answer(body: bytes = BODY, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def chunked_answer(*parts: bytes) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    return head + b"\r\n" + chunks + b"0\r\n\r\n"


@dataclass
class Step:
    """What the scripted upstream does with one POST: write ``answer``, then close the
    connection if ``close``, or leave it silent if ``hang`` (until the client closes it)."""

    answer: bytes = b""
    close: bool = False
    hang: bool = False


class ScriptedUpstream:
    """A raw HTTP/1.1 upstream that plays ``steps`` in order, one per POST (GETs get an empty
    model list), and records which connection carried each request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.port = 0
        self.posts: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.closed: set[int] = set()  # connections the client closed (or that we closed)
        self._opened = 0
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> set[int]:
        """The connections that carried a POST."""
        return {number for number, _ in self.posts}

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers.values():
            writer.close()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)

    async def wait_for(self, predicate: object) -> None:
        """Until ``predicate()`` holds (it is checked after each event of the upstream)."""
        assert callable(predicate)
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), 5.0)

    def push(self, number: int, data: bytes) -> None:
        """Write ``data`` on connection ``number`` now, unasked."""
        self._writers[number].write(data)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._opened += 1
        number = self._opened
        self._writers[number] = writer
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._answer(number, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed.add(number)
            self._handlers.discard(task)
            await self._notify()

    async def _answer(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            head = await read_request(reader)
            if not head.startswith(b"POST"):
                await answer_probe(writer)
                continue
            self.posts.append((number, head))
            await self._notify()
            step = self.steps.pop(0)
            writer.write(step.answer)
            await writer.drain()
            if step.close:
                return
            if step.hang:
                await reader.read()  # until the client closes
                return


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    made = UpstreamPool(connect_timeout=5.0)
    yield made
    made.close()


@contextlib.asynccontextmanager
async def scripted(*steps: Step) -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream(*steps) as upstream:
        yield upstream


def target_of(upstream: ScriptedUpstream | str) -> Target:
    base = upstream if isinstance(upstream, str) else upstream.url
    target = Target.of(URL(base + "/v1/chat/completions"))
    assert target is not None
    return target


async def ask(pool: UpstreamPool, target: Target, body: bytes = b"{}") -> PooledResponse:
    head = request_head(target, {"Content-Type": "application/json"}, len(body))
    return await pool.request(target, head, body)


async def fetch(pool: UpstreamPool, target: Target) -> tuple[int, bytes]:
    """One request, its whole answer read, the answer closed (its connection released)."""
    response = await ask(pool, target)
    try:
        return response.status, await response.read()
    finally:
        response.close()


# --------------------------------------------------------------------------- bodies, reuse


@pytest.mark.asyncio
async def test_a_kept_alive_connection_carries_the_next_requests(pool: UpstreamPool) -> None:
    steps = [Step(json_answer(b'{"n": %d}' % i)) for i in range(3)]
    async with scripted(*steps) as upstream:
        target = target_of(upstream)
        answers = [await fetch(pool, target) for _ in range(3)]
    assert answers == [(200, b'{"n": %d}' % i) for i in range(3)]
    assert upstream.connections == {1}


@pytest.mark.asyncio
async def test_a_host_name_is_resolved(pool: UpstreamPool) -> None:
    async with scripted(Step(json_answer()), Step(json_answer())) as upstream:
        target = target_of(f"http://localhost:{upstream.port}")
        assert not target.literal
        answers = [await fetch(pool, target) for _ in range(2)]
    assert answers == [(200, BODY)] * 2
    assert upstream.connections == {1}


@pytest.mark.asyncio
async def test_an_unknown_host_is_an_upstream_connect_error(
    pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unknown(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", unknown)
    with pytest.raises(UpstreamConnectError):
        await ask(pool, target_of("http://gpu-box:8000"))


@pytest.mark.asyncio
async def test_the_request_goes_out_whole_with_its_length(pool: UpstreamPool) -> None:
    async with scripted(Step(json_answer())) as upstream:
        target = target_of(upstream)
        response = await ask(pool, target, b'{"model": "m"}')
        response.close()
    head = upstream.posts[0][1].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{upstream.port}\r\n" in head
    assert "Content-Length: 14\r\n" in head


@pytest.mark.asyncio
async def test_a_chunked_answer_is_read_and_the_connection_kept(pool: UpstreamPool) -> None:
    async with scripted(Step(chunked_answer(b'{"a": ', b"1}")), Step(json_answer())) as upstream:
        target = target_of(upstream)
        first = await fetch(pool, target)
        second = await fetch(pool, target)
    assert first == (200, b'{"a": 1}')
    assert second == (200, BODY)
    assert upstream.connections == {1}


@pytest.mark.asyncio
async def test_an_answer_that_ends_with_the_connection_is_read_whole(pool: UpstreamPool) -> None:
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY
    async with scripted(Step(until_close, close=True), Step(json_answer())) as upstream:
        target = target_of(upstream)
        first = await fetch(pool, target)
        second = await fetch(pool, target)
    assert first == (200, BODY)
    assert second == (200, BODY)
    assert upstream.connections == {1, 2}  # the first one ended with its answer


@pytest.mark.asyncio
async def test_connection_close_in_the_answer_is_honoured(pool: UpstreamPool) -> None:
    closing = json_answer(BODY, b"Connection: close\r\n")
    async with scripted(Step(closing), Step(json_answer())) as upstream:
        target = target_of(upstream)
        await fetch(pool, target)
        await fetch(pool, target)
        await upstream.wait_for(lambda: 1 in upstream.closed)
    assert upstream.connections == {1, 2}


@pytest.mark.asyncio
async def test_headers_status_and_type_of_the_answer(pool: UpstreamPool) -> None:
    refusal = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    refusal += b"X-Extra: 1\r\nContent-Length: 4\r\n\r\nbusy"
    async with scripted(Step(refusal)) as upstream:
        response = await ask(pool, target_of(upstream))
        try:
            assert response.status == 503
            assert response.content_type == "text/plain"
            assert response.content_length == 4
            assert response.headers["x-extra"] == "1"
            assert await response.read() == b"busy"
        finally:
            response.close()


@pytest.mark.asyncio
async def test_unasked_bytes_on_an_idle_connection_close_it(pool: UpstreamPool) -> None:
    async with scripted(Step(json_answer()), Step(json_answer())) as upstream:
        target = target_of(upstream)
        await fetch(pool, target)
        upstream.push(1, json_answer(b'{"stray": true}'))
        await upstream.wait_for(lambda: 1 in upstream.closed)
        assert await fetch(pool, target) == (200, BODY)  # not the stray answer
    assert upstream.connections == {1, 2}


# --------------------------------------------------------------------------- stale connections


@pytest.mark.asyncio
async def test_a_pooled_connection_closed_by_the_upstream_is_retried_once(
    pool: UpstreamPool,
) -> None:
    async with scripted(Step(json_answer()), Step(close=True), Step(json_answer())) as upstream:
        target = target_of(upstream)
        await fetch(pool, target)
        assert await fetch(pool, target) == (200, BODY)
    assert [number for number, _ in upstream.posts] == [1, 1, 2]


@pytest.mark.asyncio
async def test_the_retry_happens_only_once(pool: UpstreamPool) -> None:
    async with scripted(Step(json_answer()), Step(close=True), Step(close=True)) as upstream:
        target = target_of(upstream)
        await fetch(pool, target)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await ask(pool, target)
    assert [number for number, _ in upstream.posts] == [1, 1, 2]


@pytest.mark.asyncio
async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(
    pool: UpstreamPool,
) -> None:
    async with scripted(Step(close=True), Step(json_answer())) as upstream:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await ask(pool, target_of(upstream))
    assert len(upstream.posts) == 1


@pytest.mark.asyncio
async def test_a_connection_that_began_to_answer_is_not_retried(pool: UpstreamPool) -> None:
    broken = Step(b"HTTP/1.1 200 OK\r\nContent-Ty", close=True)
    async with scripted(Step(json_answer()), broken, Step(json_answer())) as upstream:
        target = target_of(upstream)
        await fetch(pool, target)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await ask(pool, target)
    assert [number for number, _ in upstream.posts] == [1, 1]


# --------------------------------------------------------------------------- errors, cancels


@pytest.mark.asyncio
async def test_a_refused_connection_is_an_upstream_connect_error(pool: UpstreamPool) -> None:
    with pytest.raises(UpstreamConnectError):
        await ask(pool, target_of(free_port_url()))


@pytest.mark.asyncio
async def test_an_answer_cut_mid_body_fails_and_its_connection_is_not_reused(
    pool: UpstreamPool,
) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    async with scripted(Step(cut, close=True), Step(json_answer())) as upstream:
        target = target_of(upstream)
        response = await ask(pool, target)
        try:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        finally:
            response.close()
        assert await fetch(pool, target) == (200, BODY)
    assert upstream.connections == {1, 2}


@pytest.mark.asyncio
async def test_a_cancel_while_waiting_for_the_answer_closes_the_connection(
    pool: UpstreamPool,
) -> None:
    async with scripted(Step(hang=True), Step(json_answer())) as upstream:
        target = target_of(upstream)
        waiting = asyncio.create_task(ask(pool, target))
        await upstream.wait_for(lambda: len(upstream.posts) == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await upstream.wait_for(lambda: 1 in upstream.closed)  # the upstream sees it go
        assert await fetch(pool, target) == (200, BODY)
    assert upstream.connections == {1, 2}


@pytest.mark.asyncio
async def test_closing_an_answer_mid_body_closes_the_connection_and_wakes_its_reader(
    pool: UpstreamPool,
) -> None:
    part = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    async with scripted(Step(part, hang=True), Step(json_answer())) as upstream:
        target = target_of(upstream)
        response = await ask(pool, target)
        assert await response.content.readany() == b"{"
        reader = asyncio.create_task(response.content.readany())
        await asyncio.sleep(0)  # let it wait for more
        response.close()
        with pytest.raises(aiohttp.ClientConnectionError):
            await reader
        await upstream.wait_for(lambda: 1 in upstream.closed)
        assert await fetch(pool, target) == (200, BODY)
    assert upstream.connections == {1, 2}


@pytest.mark.asyncio
async def test_a_closed_pool_keeps_no_connection(pool: UpstreamPool) -> None:
    async with scripted(Step(json_answer())) as upstream:
        await fetch(pool, target_of(upstream))
        pool.close()
        await upstream.wait_for(lambda: 1 in upstream.closed)


# --------------------------------------------------------------------------- heads and targets


def test_request_head_adds_what_aiohttp_adds_only_when_missing() -> None:
    target = target_of("http://127.0.0.1:9000")
    bare = request_head(target, {}, 2).decode()
    assert "Accept: */*\r\n" in bare
    assert "User-Agent: Python/" in bare
    assert "Content-Type: application/octet-stream\r\n" in bare
    assert bare.endswith("Content-Length: 2\r\n\r\n")
    given = {"accept": "text/plain", "USER-AGENT": "me", "content-type": "application/json"}
    head = request_head(target, given, 2).decode()
    assert head.count("ccept:") == 1 and "accept: text/plain" in head
    assert head.count("SER-AGENT") + head.count("ser-Agent") == 1
    assert "content-type: application/json" in head and "octet-stream" not in head


def test_request_head_refuses_control_characters() -> None:
    target = target_of("http://127.0.0.1:9000")
    with pytest.raises(ValueError, match="control character"):
        request_head(target, {"X-Evil": "a\r\nInjected: 1"}, 0)


@pytest.mark.parametrize(
    ("url", "host", "start"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", "POST /p HTTP/1.1\r\nHost: 127.0.0.1:8000"),
        ("http://[::1]:8000", "::1", "POST /p HTTP/1.1\r\nHost: [::1]:8000"),
        ("http://gpu-box/base", "gpu-box", "POST /base/p HTTP/1.1\r\nHost: gpu-box"),
    ],
)
def test_targets(url: str, host: str, start: str) -> None:
    target = Target.of(URL(url + "/p"))
    assert target is not None
    assert (target.host, target.start) == (host, start)
    assert target.literal == (host != "gpu-box")


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:8000/p", "http://user:pw@127.0.0.1/p", "http://127.0.0.1/p?x=1"]
)
def test_what_the_pool_does_not_do_goes_through_aiohttp(url: str) -> None:
    assert Target.of(URL(url)) is None


# --------------------------------------------------------------------------- through the proxy


SSE = b'data: {"choices": []}\n\ndata: [DONE]\n\n'


@pytest.mark.asyncio
async def test_the_proxy_forwards_answers_asked_for_whole_over_one_connection() -> None:
    steps = [Step(json_answer(b'{"n": %d}' % i)) for i in range(3)]
    async with scripted(*steps) as upstream:
        config = make_config({"own": external(upstream.url, "own-served")})
        async with serve(config) as client:
            answers = [await client.post("/v1/chat/completions", json=chat()) for _ in range(3)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"n": i}) for i in range(3)]
    assert len(upstream.connections) == 1  # (the model's probes came on their own)


@pytest.mark.asyncio
async def test_the_pool_sends_the_head_aiohttp_sends() -> None:
    stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    async with scripted(Step(json_answer()), Step(stream % len(SSE) + SSE)) as upstream:
        config = make_config({"own": external(upstream.url, "own-served")})
        async with serve(config, headers={"X-Trace": "t1"}) as client:
            whole = await client.post("/v1/chat/completions", json=chat())  # the pool
            streamed = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert (whole.status_code, streamed.status_code) == (200, 200)
    assert json.loads(whole.content) == json.loads(BODY)
    pool_head, aiohttp_head = (_fields(head) for _, head in upstream.posts)
    del pool_head["content-length"], aiohttp_head["content-length"]  # the bodies differ
    assert pool_head == aiohttp_head
    assert pool_head["x-trace"] == "t1"


def _fields(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")[1:]
    pairs = [line.split(":", 1) for line in lines if line]
    return {name.strip().lower(): value.strip() for name, value in pairs}


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_a_large_answer_asked_for_whole_is_relayed_whole(chunked: bool) -> None:
    large = b'{"pad": "' + b"p" * (3 << 20) + b'"}'  # over the proxy's 1 MiB for reading whole
    answer = chunked_answer(large[: 1 << 20], large[1 << 20 :]) if chunked else json_answer(large)
    async with scripted(Step(answer), Step(json_answer())) as upstream:
        config = make_config({"own": external(upstream.url, "own-served")})
        async with serve(config) as client:
            first = await client.post("/v1/chat/completions", json=chat())
            second = await client.post("/v1/chat/completions", json=chat())
    assert (first.status_code, first.content) == (200, large)
    assert (second.status_code, second.content) == (200, BODY)
    assert len(upstream.connections) == 1


@pytest.mark.asyncio
async def test_a_client_leaving_before_the_answer_closes_the_upstream_connection() -> None:
    """As with a stream: the upstream (vLLM) sees the connection go and aborts the request."""
    async with scripted(Step(hang=True), Step(json_answer())) as upstream:
        config = make_config({"own": external(upstream.url, "own-served")})
        async with running_proxy(config) as proxy:
            body = json.dumps(chat(model="own")).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            data = request_bytes(proxy.port, method="POST", path=PATH, headers=headers, body=body)
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(data)
            await upstream.wait_for(lambda: len(upstream.posts) == 1)
            writer.close()  # the client leaves
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            [(number, _)] = upstream.posts
            await upstream.wait_for(lambda: number in upstream.closed)
            async with client_for(proxy) as client:  # and the next request is served
                after = await client.post(PATH, json=chat())
    assert after.status_code == 200
    assert upstream.posts[1][0] != number
