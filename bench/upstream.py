"""A fast fake OpenAI upstream for the benchmark: raw ``asyncio.Protocol``, prebuilt bytes.

It is not the test fake (``tests/fake_vllm``): that one imitates vLLM closely, this one only has
to be cheap, so that the proxy, not the upstream, is what a benchmark measures. It serves

* ``GET /health`` 200 with an empty body,
* ``GET /v1/models`` the OpenAI model list with the one served name,
* ``POST /v1/chat/completions`` a JSON completion of ``max_tokens`` tokens (default 16); with
  ``"stream": true`` a ``text/event-stream`` in chunked transfer encoding, one SSE event
  ``data: {chat.completion.chunk}`` per token, each written as its own HTTP chunk with its own
  ``transport.write`` and without any sleep, then ``data: [DONE]``. A burst like this reaches a
  proxy in a few large reads. With ``"bench_interval_ms": T`` in the body (not an OpenAI field)
  the events are paced T ms apart instead, as a model generates them, so that each one arrives on
  its own.

A ``model`` in the body other than the served name is answered 404, as vLLM does. The HTTP/1.1
parser is minimal but keeps connections alive, takes pipelined requests and bodies sent with
``Content-Length`` or in chunked encoding. Every response is written at once from
``data_received``, so pipelined responses keep their order.

Run it with ``python -m bench.upstream --port N --served-name bench-model``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from typing import Any

DEFAULT_MAX_TOKENS = 16
TOKEN = " tok"  # the text of every generated token
MAX_HEAD = 64 * 1024

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
}


def _chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def dechunk(buf: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a whole chunked body that starts at ``buf[start]``.

    Returns the body and the offset just past its end (trailers included), or ``None`` while the
    body is not complete yet. Raises ``ValueError`` on a malformed chunk.
    """
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            # Optional trailers, then an empty line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(parts), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        pos += size + 2


class Responses:
    """The prebuilt response bytes for one served name, cached per ``max_tokens``."""

    def __init__(self, served_name: str) -> None:
        self.served_name = served_name
        self.created = int(time.time())
        self._json: dict[int, bytes] = {}
        self._stream: dict[int, list[bytes]] = {}
        models = {
            "object": "list",
            "data": [
                {
                    "id": served_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "bench",
                    "root": served_name,
                    "max_model_len": 32768,
                }
            ],
        }
        self.health = self.plain(200, b"", b"text/plain")
        self.models = self.plain(200, _dumps(models), b"application/json")
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"\r\n"
        )

    @staticmethod
    def plain(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
        """A whole response with a ``Content-Length`` body."""
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            status,
            _REASONS.get(status, b"Error"),
            content_type,
            len(body),
            body,
        )

    def error(self, status: int, message: str, kind: str = "BadRequestError") -> bytes:
        """An error response in vLLM's shape: OpenAI's, nested under ``error``."""
        error = {"message": message, "type": kind, "param": None, "code": status}
        return self.plain(status, _dumps({"error": error}))

    def completion(self, max_tokens: int) -> bytes:
        """The non-streaming completion of ``max_tokens`` tokens."""
        cached = self._json.get(max_tokens)
        if cached is None:
            body = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": self.created,
                "model": self.served_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": TOKEN * max_tokens},
                        "logprobs": None,
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": 8,
                    "completion_tokens": max_tokens,
                    "total_tokens": 8 + max_tokens,
                },
            }
            cached = self._json[max_tokens] = self.plain(200, _dumps(body))
        return cached

    def stream(self, max_tokens: int) -> list[bytes]:
        """The HTTP chunks of a stream of ``max_tokens`` events, ``[DONE]`` and the last chunk.

        Only the distinct chunks are built; the list holds references to them.
        """
        cached = self._stream.get(max_tokens)
        if cached is None:
            first = self._event(True, max_tokens == 1)
            if max_tokens == 1:
                events = [first]
            else:
                middle, last = self._event(False, False), self._event(False, True)
                events = [first, *([middle] * (max_tokens - 2)), last]
            cached = [*events, _chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
            self._stream[max_tokens] = cached
        return cached

    def _event(self, first: bool, last: bool) -> bytes:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        delta["content"] = TOKEN
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.served_name,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "length" if last else None,
                }
            ],
        }
        return _chunk(b"data: " + _dumps(chunk) + b"\n\n")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests as they come, answer each at once."""

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.paced: asyncio.TimerHandle | None = None  # the next event of a paced stream
        self.close_after = False  # close once the paced stream is written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.paced is not None:
            self.paced.cancel()
            self.paced = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        self._drain()

    def _drain(self) -> None:
        """Answer the complete requests in the buffer, unless a paced stream is still going."""
        try:
            while self.buf and not self.closing and self.paced is None and self._one():
                pass
        except (ValueError, UnicodeDecodeError):
            self._close_with(self.responses.error(400, "malformed request"))

    def _close_with(self, response: bytes) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(response)
            self.transport.close()

    def _one(self) -> bool:
        """Answer the first request in the buffer; ``False`` while it is incomplete."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ValueError("head too long")
            return False
        lines = bytes(buf[:end]).split(b"\r\n")
        method, target, version = lines[0].split(b" ", 2)
        length = 0
        chunked = False
        close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                close = token == b"close" or (close and token != b"keep-alive")
            elif (
                name == b"expect"
                and value.strip().lower() == b"100-continue"
                and len(buf) == end + 4
                and self.transport is not None
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        start = end + 4
        if chunked:
            decoded = dechunk(buf, start)
            if decoded is None:
                return False
            body, stop = decoded
        else:
            if len(buf) < start + length:
                return False
            body, stop = bytes(buf[start : start + length]), start + length
        del buf[:stop]
        self._answer(method, target.split(b"?", 1)[0], body)
        if close and self.paced is not None:
            self.close_after = True
        elif close:
            self._close()
        return True

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _answer(self, method: bytes, path: bytes, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        responses = self.responses
        if path == b"/health":
            transport.write(responses.health)
        elif path == b"/v1/models":
            transport.write(responses.models)
        elif path == b"/v1/chat/completions":
            if method != b"POST":
                transport.write(responses.error(405, "use POST"))
                return
            try:
                request = json.loads(body)
                stream = bool(request.get("stream", False))
                max_tokens = int(request.get("max_tokens") or DEFAULT_MAX_TOKENS)
                model = request.get("model", responses.served_name)
                interval = float(request.get("bench_interval_ms") or 0) / 1e3
            except (ValueError, TypeError, AttributeError):
                transport.write(responses.error(400, "body is not a JSON chat request"))
                return
            if model != responses.served_name:
                transport.write(
                    responses.error(
                        404,
                        f"The model `{model}` does not exist. "
                        f"Valid aliases: {responses.served_name}.",
                        "NotFoundError",
                    )
                )
            elif max_tokens < 1 or max_tokens > 1_000_000:
                transport.write(responses.error(400, "max_tokens must be in 1..1000000"))
            elif stream and interval > 0:
                transport.write(responses.stream_head)
                loop = asyncio.get_running_loop()
                self._pace(loop, responses.stream(max_tokens), 0, loop.time(), interval)
            elif stream:
                transport.write(responses.stream_head)
                write = transport.write
                for chunk in responses.stream(max_tokens):
                    write(chunk)
            else:
                transport.write(responses.completion(max_tokens))
        else:
            transport.write(responses.error(404, "not found"))

    def _pace(
        self, loop: asyncio.AbstractEventLoop, chunks: list[bytes], i: int, t0: float, every: float
    ) -> None:
        """Write event ``i`` of a paced stream and schedule the next one at ``t0 + i * every``;
        after the last event, ``[DONE]`` and the last chunk follow at once."""
        self.paced = None
        if self.transport is None:
            return
        self.transport.write(chunks[i])
        i += 1
        if i < len(chunks) - 2:
            self.paced = loop.call_at(t0 + i * every, self._pace, loop, chunks, i, t0, every)
            return
        self.transport.writelines(chunks[i:])
        if self.close_after:
            self._close()
        else:
            self._drain()


async def start(host: str, port: int, served_name: str) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port); the caller closes the server."""
    loop = asyncio.get_running_loop()
    responses = Responses(served_name)
    return await loop.create_server(
        lambda: UpstreamProtocol(responses), host, port, reuse_address=True, backlog=1024
    )


async def _serve(host: str, port: int, served_name: str) -> None:
    server = await start(host, port, served_name)
    bound = server.sockets[0].getsockname()[1]
    print(f"bench upstream listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 1.0)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench.upstream --port N --served-name NAME``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--served-name", default="bench-model")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.served_name))


if __name__ == "__main__":
    main()
