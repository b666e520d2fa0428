"""Load generator: N concurrent keep-alive clients against an OpenAI chat endpoint.

Each client owns one connection and sends the same prebuilt ``POST /v1/chat/completions`` again
and again, for a duration or until a shared request count is used up. Per request it records the
latency (request written → response complete), for streams the time to first token (request
written → first body bytes, which carry the first SSE event) and the number of SSE
``data:`` events other than ``[DONE]``. An error is a connection failure, a status other than
200, a non-streaming body that is not a chat completion, a stream that does not end in
``data: [DONE]`` or that has an unexpected number of events.

Two clients are built in:

* ``raw`` (default) an ``asyncio.Protocol`` with its own minimal HTTP/1.1 response parser
  (``Content-Length``, chunked, or until EOF). It costs ~25 µs of CPU per request at 32 clients,
  a fifth of the aiohttp client's ~130 µs, and 1-3 µs per streamed chunk (see
  ``bench/README.md``), so on a 2-core box it takes little of the CPU that upstream and proxy
  share with it.
* ``aiohttp`` one ``aiohttp.ClientSession`` with a one-connection ``TCPConnector`` per client,
  streaming with ``iter_any()``; kept to cross-check the raw client.

Run ``python -m bench.load URL [--stream] [--max-tokens N] [-c N] [-d S | -n N]`` for one load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

ClientKind = Literal["raw", "aiohttp"]
MAX_ERROR_SAMPLES = 5
PATH = "/v1/chat/completions"
REQUEST_TIMEOUT = 60.0  # seconds; a request that takes longer is an error


@dataclass(frozen=True)
class Workload:
    """What to send and how hard: ``duration`` seconds, or ``requests`` in all."""

    name: str
    stream: bool
    max_tokens: int = 16
    concurrency: int = 1
    duration: float | None = 2.0
    requests: int | None = None
    warmup: float = 0.3
    model: str = "bench-model"
    interval_ms: float = 0.0  # > 0: ask ``bench.upstream`` to pace the stream's events

    def body(self) -> bytes:
        """The JSON request body every client sends."""
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.interval_ms > 0:
            body["bench_interval_ms"] = self.interval_ms
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class LoadResult:
    """What one load produced; times in seconds."""

    workload: Workload
    url: str
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    chunks: int = 0
    samples: tuple[Any, Any] | None = None  # the ``sample()`` values around the timed window

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.elapsed if self.elapsed else 0.0

    def latency(self, q: float = 0.5) -> float:
        """The ``q`` quantile of request latency (nan without requests)."""
        return _quantile(self.latencies, q)

    def ttft(self, q: float = 0.5) -> float:
        """The ``q`` quantile of time to first token (nan without streams)."""
        return _quantile(self.ttfts, q)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what)

    def summary(self) -> str:
        text = (
            f"{self.workload.name} @ {self.url}: {self.ok} ok, {self.errors} errors in "
            f"{self.elapsed:.2f} s, {self.requests_per_s:.0f} req/s, "
            f"p50 {self.latency(0.5) * 1e3:.3f} ms, p99 {self.latency(0.99) * 1e3:.3f} ms"
        )
        if self.workload.stream:
            text += (
                f", ttft p50 {self.ttft(0.5) * 1e3:.3f} ms, {self.chunks} chunks, "
                f"{self.chunks_per_s:.0f} chunks/s"
            )
        if self.error_samples:
            text += f"; errors e.g. {self.error_samples}"
        return text


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    index = q * (len(ordered) - 1)
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


class ProtocolError(Exception):
    """The server broke HTTP/1.1 (or closed the connection mid-response)."""


@dataclass
class Response:
    """One parsed response; ``first`` is when its first body bytes were decoded."""

    status: int
    body: bytes
    first: float
    keep_alive: bool


class RawConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection with an incremental response parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.in_body = False
        self.status = 0
        self.mode = ""  # "length", "chunked" or "eof"
        self.left = 0  # bytes left of a Content-Length body or of the current chunk's data
        self.chunk_state = "size"  # "size", "data", "crlf" or "trailers"
        self.parts: list[bytes] = []
        self.first = 0.0
        self.keep_alive = True

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.in_body and self.mode == "eof":
                self._finish()
            else:
                self.waiter.set_exception(ProtocolError(f"connection lost: {exc!r}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def request(self, data: bytes) -> Response:
        """Send ``data`` (a whole request) and wait for the whole response."""
        if self.closed or self.transport is None:
            raise ProtocolError("connection closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(REQUEST_TIMEOUT, self._expire, waiter)
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[Response]) -> None:
        if not waiter.done():
            waiter.set_exception(ProtocolError(f"no response within {REQUEST_TIMEOUT:g} s"))
        self.close()

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.buf += data
            return
        try:
            self._parse(data)
        except (ProtocolError, ValueError) as exc:
            waiter.set_exception(ProtocolError(str(exc)))
            self.close()

    def _parse(self, data: bytes) -> None:
        if not self.in_body:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head(bytes(self.buf[:end]))
            data = bytes(self.buf[end + 4 :])
            self.buf.clear()
            self.in_body = True
            if self.mode == "length" and self.left == 0:
                self._finish()
                return
        if data and not self.first:
            self.first = time.perf_counter()
        if self.mode == "length":
            self.parts.append(data)
            self.left -= len(data)
            if self.left <= 0:
                self._finish()
        elif self.mode == "chunked":
            self._chunked(data)
        else:
            self.parts.append(data)

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self.status = int(status_line[1])
        self.keep_alive = status_line[0] == b"HTTP/1.1"
        self.mode = "eof"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length" and self.mode != "chunked":
                self.mode, self.left = "length", int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.mode = "chunked"
            elif name == b"connection":
                self.keep_alive = value.strip().lower() == b"keep-alive" or (
                    self.keep_alive and value.strip().lower() != b"close"
                )
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.mode, self.left = "length", 0
        if self.mode == "eof":
            self.keep_alive = False

    def _chunked(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        size = len(buf)
        while pos < size:
            state = self.chunk_state
            if state == "data":
                take = min(self.left, size - pos)
                self.parts.append(bytes(buf[pos : pos + take]))
                pos += take
                self.left -= take
                if self.left == 0:
                    self.chunk_state = "crlf"
            elif state == "crlf":
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self.chunk_state = "size"
            else:  # "size" or "trailers": one line at a time
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                line = bytes(buf[pos:eol])
                pos = eol + 2
                if state == "trailers":
                    if not line:
                        del buf[:pos]
                        self._finish()
                        return
                    continue
                chunk_size = int(line.split(b";", 1)[0], 16)
                if chunk_size == 0:
                    self.chunk_state = "trailers"
                else:
                    self.chunk_state, self.left = "data", chunk_size
        del buf[:pos]

    def _finish(self) -> None:
        response = Response(self.status, b"".join(self.parts), self.first, self.keep_alive)
        waiter = self.waiter
        self.waiter = None
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not response.keep_alive:
            self.close()


def check(workload: Workload, status: int, body: bytes) -> tuple[int, str | None]:
    """The number of streamed chunks and an error (``None`` when the response is right)."""
    if status != 200:
        return 0, f"status {status}: {body[:120]!r}"
    if workload.stream:
        events = body.split(b"\n\n")
        if len(events) < 2 or events[-1].strip() or events[-2] != b"data: [DONE]":
            return 0, f"stream does not end in [DONE]: {body[-120:]!r}"
        chunks = len(events) - 2
        if not all(event.startswith(b"data: {") for event in events[:-2]):
            return 0, "stream has an event that is not data: {...}"
        if chunks != workload.max_tokens:
            return chunks, f"{chunks} chunks, expected {workload.max_tokens}"
        return chunks, None
    try:
        document = json.loads(body)
        content = document["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return 0, f"not a chat completion: {body[:120]!r}"
    if document.get("object") != "chat.completion" or not isinstance(content, str):
        return 0, f"not a chat completion: {body[:120]!r}"
    return 0, None


class _Budget:
    """When a client stops: at a deadline, or when a shared request count is used up."""

    def __init__(self, duration: float | None, requests: int | None) -> None:
        self.deadline = time.perf_counter() + duration if duration is not None else None
        self.left = requests

    def take(self) -> bool:
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return self.deadline is None or time.perf_counter() < self.deadline


async def _raw_client(
    host: str, port: int, request: bytes, workload: Workload, budget: _Budget, result: LoadResult
) -> None:
    conn: RawConnection | None = None
    try:
        while budget.take():
            start = time.perf_counter()
            try:
                if conn is None or conn.closed:
                    conn = await RawConnection.open(host, port)
                    start = time.perf_counter()
                response = await conn.request(request)
            except (OSError, ProtocolError) as exc:
                result.error(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                continue
            end = time.perf_counter()
            chunks, problem = check(workload, response.status, response.body)
            result.chunks += chunks
            if problem is not None:
                result.error(problem)
                continue
            result.ok += 1
            result.latencies.append(end - start)
            if workload.stream:
                result.ttfts.append(response.first - start)
    finally:
        if conn is not None:
            conn.close()


async def _aiohttp_client(
    url: str, request: bytes, workload: Workload, budget: _Budget, result: LoadResult
) -> None:
    import aiohttp  # only this client needs it

    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        while budget.take():
            start = time.perf_counter()
            first = 0.0
            try:
                async with session.post(url, data=request, headers=headers) as response:
                    parts: list[bytes] = []
                    async for piece in response.content.iter_any():
                        if not first:
                            first = time.perf_counter()
                        parts.append(piece)
                    status = response.status
            except (OSError, aiohttp.ClientError) as exc:
                result.error(f"{type(exc).__name__}: {exc}")
                continue
            end = time.perf_counter()
            chunks, problem = check(workload, status, b"".join(parts))
            result.chunks += chunks
            if problem is not None:
                result.error(problem)
                continue
            result.ok += 1
            result.latencies.append(end - start)
            if workload.stream:
                result.ttfts.append(first - start)


async def run(
    url: str,
    workload: Workload,
    *,
    client: ClientKind = "raw",
    sample: Callable[[], Any] | None = None,
) -> LoadResult:
    """Warm up for ``workload.warmup`` seconds, then run the timed load and return its result.

    ``sample`` (if given) is called right before and right after the timed window; its two values
    end up in ``LoadResult.samples`` (``bench.run`` reads the proxy's CPU time with it).
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    body = workload.body()
    request = (
        f"POST {PATH} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: */*\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    target = url.rstrip("/") + PATH

    async def phase(duration: float | None, requests: int | None, result: LoadResult) -> None:
        budget = _Budget(duration, requests)
        if client == "raw":
            tasks = [
                _raw_client(host, port, request, workload, budget, result)
                for _ in range(workload.concurrency)
            ]
        else:
            tasks = [
                _aiohttp_client(target, body, workload, budget, result)
                for _ in range(workload.concurrency)
            ]
        await asyncio.gather(*tasks)

    if workload.warmup > 0:
        await phase(workload.warmup, None, LoadResult(workload, url))
    result = LoadResult(workload, url)
    before = sample() if sample is not None else None
    start = time.perf_counter()
    await phase(workload.duration, workload.requests, result)
    result.elapsed = time.perf_counter() - start
    after = sample() if sample is not None else None
    if sample is not None:
        result.samples = (before, after)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: one load against one URL, printed as a summary line."""
    parser = argparse.ArgumentParser(description="Run one load against an OpenAI chat endpoint.")
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8001")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=2.0)
    parser.add_argument("-n", "--requests", type=int, default=None, help="instead of -d")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="pace the stream's events")
    args = parser.parse_args(argv)
    workload = Workload(
        name=("stream" if args.stream else "json") + f"-{args.max_tokens}-c{args.concurrency}",
        stream=args.stream,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        duration=None if args.requests else args.duration,
        requests=args.requests,
        warmup=args.warmup,
        model=args.model,
        interval_ms=args.interval_ms,
    )
    result = asyncio.run(run(args.url, workload, client=args.client))
    print(result.summary())


if __name__ == "__main__":
    main()
