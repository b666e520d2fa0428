"""aiohttp's connection handler with two additions: a header deadline and JSON parse errors.

aiohttp's C parser already enforces the header size and count limits and rejects a request
with both Content-Length and Transfer-Encoding; its own error page is plain text, so
``handle_error`` is overridden to answer in OpenAI's JSON shape. aiohttp has no deadline for
reading a request's headers, so a client that trickles them (slowloris) is dropped here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ryx_desktop.proxy._errors import ProxyError, error_response

log = logging.getLogger("ryx_desktop.proxy")


class _Connection(RequestHandler):
    """One client connection."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self.in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self.in_request and self._deadline is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def request_began(self) -> None:
        self.in_request = True
        self._disarm()

    def request_ended(self) -> None:
        self.in_request = False

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.in_request:
            log.warning(
                "dropped a client that sent no complete request within %g s",
                self._header_timeout,
            )
            self.force_close()

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
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "headers" in (exc.message or "")
        ):
            status, code = 431, "headers_too_large"
            text = "the request's headers are too large"
        elif status == 500:
            code, text = "internal_error", "the proxy failed to handle the request"
            log.error("internal error handling %s %s", request.method, request.path, exc_info=exc)
        else:
            text = f"malformed HTTP request: {message or exc}"
        if status != 500:
            log.warning("%s -> %d %s", request.remote, status, text)
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
        **connection_args: Any,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, handler_cancellation=True)
        self._header_timeout = header_timeout
        self._connection_args = connection_args

    def __call__(self) -> _Connection:
        return _Connection(
            self,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            **self._connection_args,
        )


def connection_of(request: web.BaseRequest) -> _Connection | None:
    protocol = request.protocol
    return protocol if isinstance(protocol, _Connection) else None
