"""aiohttp's connection handler with two additions: a header deadline and JSON parse errors.

aiohttp's C parser already enforces the URL, header size and count limits and rejects a request
with both Content-Length and Transfer-Encoding; its own error page is plain text, so
``handle_error`` is overridden to answer in OpenAI's JSON shape, with the status that fits
(414 for a long URL, 431 for long headers, 505 for an HTTP version it does not speak), and to
count the answer in the metrics. aiohttp has no deadline for reading a request's headers, so a
client that trickles them (slowloris) is dropped here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ryx_desktop.proxy._errors import ProxyError, error_response

log = logging.getLogger("ryx_desktop.proxy")

#: The longest URL and the longest header line. They differ by design: a LineTooLong error says
#: only which limit it hit, and that tells a long URL (414) from a long header (431).
MAX_URL = 8192
MAX_HEADER_LINE = 8190


class _Connection(RequestHandler):
    """One client connection."""

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        on_error: Callable[[int], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._on_error = on_error
        self._check_handle: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # when the request we wait for began to arrive
        self.in_request = False

    # One timer per connection, re-armed every header_timeout, rather than one per request:
    # on a kept-alive connection the per-request cost is an attribute write.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._waiting_since = loop.time()  # a new connection owes us a request
        self._check_handle = loop.call_later(self._header_timeout, self._check)

    def data_received(self, data: bytes) -> None:
        if self._waiting_since is None and not self.in_request:
            self._waiting_since = asyncio.get_running_loop().time()  # the next request starts
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._check_handle is not None:
            self._check_handle.cancel()
            self._check_handle = None
        super().connection_lost(exc)

    def request_began(self) -> None:
        self.in_request = True
        self._waiting_since = None

    def request_ended(self) -> None:
        self.in_request = False

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        since, now = self._waiting_since, loop.time()
        if since is not None and not self.in_request:
            if now - since >= self._header_timeout:
                self._check_handle = None
                log.warning(
                    "dropped a client that sent no complete request within %g s",
                    self._header_timeout,
                )
                self.force_close()
                return
            delay = self._header_timeout - (now - since)
        else:
            delay = self._header_timeout
        self._check_handle = loop.call_later(delay, self._check)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        code = "bad_request"
        if isinstance(exc, LineTooLong) and exc.args[1:2] == (MAX_URL,):
            status, code = 414, "url_too_long"
            text = f"the request's URL is longer than {MAX_URL} bytes"
        elif isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "headers" in (exc.message or "")
        ):
            status, code = 431, "headers_too_large"
            text = "the request's headers are too large"
        elif isinstance(exc, BadStatusLine) and "HTTP version" in (exc.message or ""):
            status, code = 505, "http_version_not_supported"
            text = "the request's HTTP version is not supported: send HTTP/1.1 (or 1.0)"
        elif status == 504:  # a handler's TimeoutError that nothing caught
            code, text = "timeout", "the proxy timed out handling the request"
        elif status == 500:
            code, text = "internal_error", "the proxy failed to handle the request"
            log.error("internal error handling %s %s", request.method, request.path, exc_info=exc)
        else:
            text = f"malformed HTTP request: {message or exc}"
        if status != 500:
            log.warning("%s -> %d %s", request.remote, status, text)
        self._on_error(status)
        response = error_response(ProxyError(status, text, code))
        response.force_close()
        return response


class ProxyHttpServer(web.Server):
    """``web.Server`` whose connections are :class:`_Connection`."""

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: float,
        request_factory: Any,
        on_error: Callable[[int], None],
        **connection_args: Any,
    ) -> None:
        """``on_error(status)`` is called for each error answered outside the handler: the
        parser's refusals and the 500 of a handler that failed."""
        super().__init__(handler, request_factory=request_factory, handler_cancellation=True)
        self._header_timeout = header_timeout
        self._on_error = on_error
        self._connection_args = connection_args

    def __call__(self) -> _Connection:
        return _Connection(
            self,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            on_error=self._on_error,
            max_line_size=MAX_URL,
            max_field_size=MAX_HEADER_LINE,
            **self._connection_args,
        )


def connection_of(request: web.BaseRequest) -> _Connection | None:
    protocol = request.protocol
    return protocol if isinstance(protocol, _Connection) else None
