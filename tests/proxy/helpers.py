"""Helpers for the proxy tests: configs, clients, raw sockets, SSE and error-body checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ryx_desktop.config import Config
from tests.support.proxy import RunningProxy, running_proxy
from tests.support.upstream import FakeUpstream, free_port

ERROR_KEYS = ("message", "type", "code")


def external(upstream: FakeUpstream | str, served_name: str = "", *aliases: str) -> dict[str, Any]:
    """An external (``url:``) model entry for ``upstream`` (a fake, or a bare URL)."""
    if isinstance(upstream, FakeUpstream):
        url, served = upstream.url, served_name or upstream.served_name
    else:
        url, served = upstream, served_name
    return {"url": url, "served_name": served, "aliases": list(aliases)}


def free_port_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


def make_config(
    models: dict[str, dict[str, Any]], *, default_model: str | None = None, **proxy: Any
) -> Config:
    """A validated config with these models; ``default_model`` defaults to the first one."""
    return Config.model_validate(
        {
            "proxy": proxy,
            "default_model": default_model if default_model is not None else next(iter(models)),
            "models": models,
        }
    )


#: One TLS context for every test client: httpx would load the CA bundle for each (~35 ms),
#: and the proxy is plain HTTP anyway.
_TLS = ssl.create_default_context()


def client_for(proxy: RunningProxy, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for the proxy (never through an environment proxy)."""
    kwargs.setdefault("timeout", 10.0)
    return httpx.AsyncClient(base_url=proxy.base, trust_env=False, verify=_TLS, **kwargs)


@contextlib.asynccontextmanager
async def serve(
    config: Config,
    *,
    environ: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **server_args: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client (``headers`` on each request) for a proxy running this config."""
    async with (
        running_proxy(config, environ=environ, **server_args) as proxy,
        client_for(proxy, headers=headers) as client,
    ):
        yield client


def chat(prompt: str = "hi", *, model: Any = None, stream: bool = False, **extra: Any) -> dict:
    """A chat completions body; ``model`` is left out when None."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], **extra}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
    return body


#: A prompt long enough that the fake streams about a hundred tokens.
LONG_PROMPT = " ".join(f"word{i}" for i in range(100))


def slow_chat(model: str | None = None) -> dict:
    """A streaming chat that takes seconds on a fake with a token delay."""
    return chat(LONG_PROMPT, model=model, stream=True, max_tokens=200)


def check_error_payload(payload: Any, code: str) -> dict[str, Any]:
    """``payload`` is ``{"error": {"message", "type", "code"}}`` with this ``code``."""
    assert isinstance(payload, dict), payload
    error = payload.get("error")
    assert isinstance(error, dict), payload
    for key in ERROR_KEYS:
        assert key in error, f"{key!r} missing from {payload}"
    assert isinstance(error["message"], str) and error["message"], payload
    assert isinstance(error["type"], str) and error["type"], payload
    assert error["code"] == code, payload
    return error


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An OpenAI-shaped JSON error with this status and code; returns its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return check_error_payload(response.json(), code)


def sse_events(text: str) -> list[tuple[str, str]]:
    """``(event, data)`` for each event of an SSE body (event is ``message`` when unnamed)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


class Chunks:
    """Reads a streamed response's body a few chunks at a time, then maybe to its end."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self.data = b""

    async def read(self, count: int = 1) -> bytes:
        """The next ``count`` chunks (fewer at the end of the body)."""
        got = b""
        for _ in range(count):
            chunk = await anext(self._chunks, b"")
            if not chunk:
                break
            got += chunk
        self.data += got
        return got

    async def read_to_end(self) -> bytes:
        """The rest of the body; returns the whole body read so far."""
        async for chunk in self._chunks:
            self.data += chunk
        return self.data

    async def __aenter__(self) -> Chunks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._chunks.aclose()


# --------------------------------------------------------------------------- raw sockets


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(status, headers, body)


async def raw_request(
    port: int, data: bytes, *, closes: bool = False, timeout: float = 5.0
) -> RawResponse:
    """Send ``data`` as it is on a fresh connection and read one response.

    ``closes``: also check that the server then closes the connection (nothing more follows).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        response = await asyncio.wait_for(read_response(reader), timeout)
        if closes:
            rest = await asyncio.wait_for(reader.read(), timeout)
            assert rest == b"", f"the server sent more after the response: {rest!r}"
        return response
    finally:
        writer.close()
        await writer.wait_closed()


def request_bytes(
    port: int,
    *,
    method: str = "GET",
    path: str = "/v1/models",
    host: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    """A request's bytes; ``Host`` is ``127.0.0.1:port`` unless given (``""`` leaves it out)."""
    host = f"127.0.0.1:{port}" if host is None else host
    lines = [f"{method} {path} HTTP/1.1"]
    if host:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- a stalling upstream


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request (its ``Content-Length`` body included); its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head


async def answer_probe(writer: asyncio.StreamWriter) -> None:
    """What a raw upstream answers the proxy's GET probes: an empty model list."""
    body = b'{"object": "list", "data": []}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()


class StallingUpstream:
    """A raw upstream that answers probes (GET) but stalls on generation requests (POST).

    ``mid_stream=False``: it reads the request and never answers. ``mid_stream=True``: it sends
    the headers of an event stream and one event, then nothing more. ``mid_body=True``: it sends
    a JSON answer's headers and the first bytes of its body, then nothing more.
    """

    def __init__(self, *, mid_stream: bool, mid_body: bool = False) -> None:
        self._mid_stream = mid_stream
        self._mid_body = mid_body
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.stalled = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request(reader)
            if not head.startswith(b"POST"):
                await answer_probe(writer)
                continue
            if self._mid_stream:
                event = b'data: {"choices": [{"index": 0, "delta": {"content": "one"}}]}\n\n'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(event), event)
                )
                await writer.drain()
            if self._mid_body:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n{"id": "cmpl-1", '
                )
                await writer.drain()
            self.stalled += 1
            await self._release.wait()
            return
