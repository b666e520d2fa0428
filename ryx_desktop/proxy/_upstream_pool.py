"""A minimal keep-alive HTTP/1.1 client for the non-streaming forwards.

Why it exists: for a small JSON answer, aiohttp's ``ClientSession.post`` (its request and
response objects, payload writers, connector, timers and tracing hooks) costs more CPU than the
whole rest of a forward, about 70 µs of a request against 15 µs here. This client does only what
a forward needs: per ``(host, port)`` a stack of idle connections, the request written at once
(request line, headers and a ``Content-Length`` body), and the answer parsed by aiohttp's own
protocol and C parser (``ResponseHandler``), so that its body is the same ``StreamReader`` and its
errors the same exceptions (``ServerDisconnectedError``, ``ClientOSError``,
``ClientPayloadError``) as through ``ClientSession``. Only a connection that could not be made
raises an error of its own, :class:`UpstreamConnectError`.

A connection goes back to its stack only after an answer that arrived whole, on a connection the
upstream keeps open with nothing left to write; any error or cancellation closes it, which is
how vLLM learns that a client left. A request that meets a kept-alive connection the upstream
closed meanwhile (no byte of an answer came back) is sent once more on a fresh connection.

``ResponseHandler`` is aiohttp's client protocol, internal but unchanged in what is used here
since aiohttp 3.0; ``tests/proxy/test_upstream_pool.py`` would notice if that changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol

import aiohappyeyeballs
from aiohttp import ClientConnectionError, ClientOSError, ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import HeadersMixin, set_exception
from aiohttp.http import SERVER_SOFTWARE, RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

#: What aiohttp reads into a body's buffer before it pauses the socket (its ``read_bufsize``).
_READ_BUFSIZE = 1 << 16
#: Bodies up to this size go out in one write together with the head.
_JOINED_BODY = 1 << 16
#: A control character (other than TAB) that must not appear in a header (RFC 9110 5.5).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DEFAULTS = (
    ("accept", "Accept: */*"),
    ("user-agent", f"User-Agent: {SERVER_SOFTWARE}"),
    ("content-type", "Content-Type: application/octet-stream"),
)


class UpstreamConnectError(ConnectionError):
    """No connection to the upstream could be made (refused, unreachable, unknown host)."""


class UpstreamAnswer(Protocol):
    """An upstream's answer as the relay reads it: aiohttp's ``ClientResponse`` or
    :class:`PooledResponse`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> StreamReader: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where one forwarded path goes: the pool's key and the start of the request's head."""

    host: str
    port: int
    literal: bool  # ``host`` is an IP address: no name to resolve
    start: str  # "POST /path HTTP/1.1\r\nHost: host:port"

    @classmethod
    def of(cls, url: URL, method: str = "POST") -> Target | None:
        """The target for ``url``; None for what this client does not do (https, credentials
        or a query in the URL): those go through aiohttp."""
        host = url.raw_host
        if url.scheme != "http" or not host or url.raw_query_string:
            return None
        if url.raw_user is not None or url.raw_password is not None:
            return None
        port = url.port or 80
        try:
            literal = ipaddress.ip_address(host.strip("[]")) is not None
        except ValueError:
            literal = False
        shown = f"[{host}]" if ":" in host else host
        if port != 80:
            shown += f":{port}"
        return cls(host, port, literal, f"{method} {url.raw_path} HTTP/1.1\r\nHost: {shown}")


def request_head(target: Target, headers: dict[str, str], length: int) -> bytes:
    """The head of a request with a ``length``-byte body: ``headers`` plus the ones aiohttp's
    client adds when they are missing (Accept, User-Agent, Content-Type), as aiohttp sends it.

    Raises ValueError for a control character in a header, as aiohttp does.
    """
    lines = []
    present = set()
    for name, value in headers.items():
        present.add(name.lower())
        lines.append(f"{name}: {value}")
    if _CONTROL.search("\t".join(lines)):
        raise ValueError("a request header holds a control character")
    lines.insert(0, target.start)
    for lower, line in _DEFAULTS:
        if lower not in present:
            lines.append(line)
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class _Connection(ResponseHandler):
    """aiohttp's client protocol, and whether an answer has begun to arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.busy = True  # False while in the idle stack
        self.answered = False  # a byte of an answer arrived since the request went out
        self.idle_since = 0.0

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: a broken upstream; never reuse this connection
            self.close()
            return
        self.answered = True
        super().data_received(data)


class PooledResponse(HeadersMixin):
    """An answer read from a pooled connection; ``close`` returns the connection to the pool
    when the answer arrived whole, and closes it otherwise."""

    def __init__(
        self,
        pool: UpstreamPool,
        target: Target,
        connection: _Connection,
        message: RawResponseMessage,
        payload: StreamReader,
    ) -> None:
        self.status = message.code
        self.reason = message.reason
        self._headers = self._proxy = message.headers
        self.content = payload
        self._pool = pool
        self._target = target
        self._connection: _Connection | None = connection

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._proxy

    async def read(self) -> bytes:
        return await self.content.read()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        content = self.content
        if not content.is_eof() and content.exception() is None:
            # Wakes a reader of the body (the stream relay), as aiohttp's close does.
            set_exception(content, ClientConnectionError("Connection closed"))
        self._pool.release(self._target, connection)


class UpstreamPool:
    """Idle keep-alive connections per ``(host, port)``, and requests sent over them."""

    def __init__(self, *, connect_timeout: float = 10.0, keepalive_timeout: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, target: Target, head: bytes, body: bytes) -> PooledResponse:
        """Send ``head`` and ``body``; the answer once its status and headers are in.

        Raises UpstreamConnectError or TimeoutError when no connection could be made, and
        aiohttp's client errors for what the upstream did after."""
        connection = self._take(target)
        if connection is not None:
            try:
                return await self._exchange(target, connection, head, body)
            except (ServerDisconnectedError, ClientOSError):
                if connection.answered:
                    raise
                # A kept-alive connection the upstream had closed: once more, on a new one.
        connection = await self._connect(target)
        return await self._exchange(target, connection, head, body)

    def release(self, target: Target, connection: _Connection) -> None:
        """Back to the idle stack if the connection can carry another request; closed if not."""
        transport = connection.transport
        if (
            self._closed
            or transport is None
            or connection.should_close
            or transport.is_closing()
            or transport.get_write_buffer_size()  # the upstream answered before it read all
        ):
            connection.close()
            return
        connection.busy = False
        connection.idle_since = self._loop.time()
        self._idle.setdefault((target.host, target.port), []).append(connection)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._keepalive, self._sweep)

    def close(self) -> None:
        """Close the idle connections; those in use close when their answer is done."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()

    # ---- internals ----------------------------------------------------------------------------

    def _take(self, target: Target) -> _Connection | None:
        stack = self._idle.get((target.host, target.port))
        if not stack:
            return None
        oldest = self._loop.time() - self._keepalive
        while stack:
            connection = stack.pop()  # the most recently used: the least likely to be stale
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            if connection.idle_since < oldest:
                connection.close()
                continue
            connection.busy = True
            connection.answered = False
            return connection
        return None

    async def _exchange(
        self, target: Target, connection: _Connection, head: bytes, body: bytes
    ) -> PooledResponse:
        transport = connection.transport
        if transport is None:
            raise ServerDisconnectedError()
        try:
            if len(body) <= _JOINED_BODY:
                transport.write(head + body)
            else:  # not copied into one buffer
                transport.write(head)
                transport.write(body)
            message, payload = await connection.read()
            while 100 <= message.code < 200 and message.code != 101:  # 1xx: the answer follows
                message, payload = await connection.read()
        except BaseException:
            connection.close()  # a cancel (the client left, a deadline) too: vLLM aborts
            raise
        return PooledResponse(self, target, connection, message, payload)

    async def _connect(self, target: Target) -> _Connection:
        loop = self._loop
        try:
            async with asyncio.timeout(self._connect_timeout):
                if target.literal:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), target.host, target.port
                    )
                else:  # several addresses (IPv6 and IPv4): tried as aiohttp tries them
                    infos = await loop.getaddrinfo(
                        target.host, target.port, type=socket.SOCK_STREAM
                    )
                    sock = await aiohappyeyeballs.start_connection(
                        infos, happy_eyeballs_delay=0.25, loop=loop
                    )
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), sock=sock
                    )
        except TimeoutError:
            raise
        except OSError as exc:
            raise UpstreamConnectError(str(exc)) from exc
        connection.set_response_params(
            read_until_eof=True, auto_decompress=False, read_bufsize=_READ_BUFSIZE
        )
        return connection

    def _sweep(self) -> None:
        """Close the connections idle for longer than the keep-alive time."""
        self._sweeper = None
        oldest = self._loop.time() - self._keepalive
        for key, stack in list(self._idle.items()):
            kept = [c for c in stack if c.transport is not None and c.idle_since >= oldest]
            for connection in stack:
                if connection not in kept:
                    connection.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self._loop.call_later(self._keepalive / 4, self._sweep)
