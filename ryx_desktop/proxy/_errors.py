"""OpenAI-shaped error responses, and the one exception handlers raise to produce them."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

#: OpenAI's ``error.type`` for each status we answer with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    501: "invalid_request_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
    505: "invalid_request_error",
}


class ProxyError(Exception):
    """A request that ends in an error response: status, one sentence, a code, maybe a hint.

    ``close``: the connection is closed after the response (its request was not read whole).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        hint: str = "",
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.hint = hint
        self.headers = dict(headers or {})
        self.close = close

    @property
    def text(self) -> str:
        """The message with its hint, as users read it."""
        return f"{self.message}. {self.hint}" if self.hint else self.message


def error_payload(error: ProxyError) -> dict[str, object]:
    """``{"error": {"message", "type", "code"}}`` (plus ``hint`` when there is one)."""
    body: dict[str, object] = {
        "message": error.text,
        "type": _TYPES.get(error.status, "server_error"),
        "param": None,
        "code": error.code,
    }
    if error.hint:
        body["hint"] = error.hint
    return {"error": body}


def error_bytes(error: ProxyError) -> bytes:
    return json.dumps(error_payload(error)).encode()


def error_response(error: ProxyError, extra: Mapping[str, str] | None = None) -> web.Response:
    """The JSON response for ``error``, with ``extra`` headers (CORS, X-Ryx-Model)."""
    headers = {**(extra or {}), **error.headers}
    return web.Response(
        status=error.status,
        body=error_bytes(error),
        content_type="application/json",
        headers=headers,
    )


def sse_error(error: ProxyError) -> bytes:
    """The SSE ``error`` event that ends a stream which can no longer change its status."""
    return b"event: error\ndata: " + error_bytes(error) + b"\n\n"
