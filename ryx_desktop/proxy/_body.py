"""A generation request's JSON body: the two fields the proxy reads, and the ``model`` rewrite.

Small bodies (up to :data:`LARGE_BODY` bytes, nearly all of them) are parsed on the event loop
with ``json.loads`` and, when ``model`` must change, dumped again: a few microseconds.

A large body is parsed by :func:`parse_large` in a worker thread. A thread alone would not keep
the loop responsive: ``json``'s C parser holds the GIL for a whole ``loads`` (334 ms for a
22.7 MiB chat with 700k messages). So the worker checks the body with a decoder that calls a
Python hook for every JSON object and number: the hook drops the value (nothing is kept but
``model`` and ``stream``), and between hooks the worker hands the GIL to the loop's thread at
least every millisecond (:class:`_Pacer`). The worker walks the top-level object itself (the C
scanner checks each member's value) to learn where the ``model`` value lies in the bytes, and
:meth:`RequestBody.with_model` splices the served name in there: no dump of the whole body,
and the rest of it is forwarded byte for byte. The loop's longest wait while a 23 MiB body is
parsed: ~10 ms (the copies of the body it makes itself), against 300-750 ms on the loop.

Either way a body nested too deeply for the parser is ``invalid_json``, as any other body that
is not JSON.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.decoder import JSONDecodeError
from typing import Any

from aiohttp import web

from ryx_desktop.proxy._errors import ProxyError

#: Bodies larger than this are parsed in a worker thread (json.loads takes ~7 ms per MiB here).
LARGE_BODY = 512 * 1024
#: Decoding and encoding of large bodies go in slices this long, so the loop gets turns.
_SLICE = 1 << 20
#: The worker thread runs at most this long (seconds) before it sleeps _PAUSE, see _Pacer.
_BURST = 0.001
_PAUSE = 0.0001
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_UTF8 = ("utf-8", "utf-8-sig")
#: The top-level members the proxy reads; the others are only checked.
_READ = frozenset({"model", "stream"})


@dataclass(frozen=True, slots=True)
class RequestBody:
    """A request's JSON object as the proxy sees it.

    ``model`` is the top-level ``model`` value (None when absent), ``stream`` whether
    ``stream`` is ``true``. A small body keeps its parsed ``fields``; a large one the byte span
    of its ``model`` value in ``raw`` (where one goes, right after ``{``, when it has none).
    """

    raw: bytes
    model: object
    stream: bool
    fields: dict[str, Any] | None = None
    span: tuple[int, int] = (0, 0)
    #: Around the new value: ``"model": `` and a comma when the body had no ``model`` field.
    before: bytes = b""
    after: bytes = b""

    def with_model(self, name: str) -> bytes:
        """The body with ``model`` set to ``name``; everything else as the client sent it."""
        if self.fields is not None:
            self.fields["model"] = name
            return json.dumps(self.fields).encode()
        start, end = self.span
        view = memoryview(self.raw)
        value = json.dumps(name).encode()
        return b"".join((view[:start], self.before, value, self.after, view[end:]))


def invalid_json(*, nested: bool = False) -> ProxyError:
    """The 400 for a body that is not JSON (or nested deeper than the parser goes)."""
    what = "is nested too deeply" if nested else "is not valid JSON"
    return ProxyError(
        400,
        f"the request body {what}",
        "invalid_json",
        hint="Send a JSON object with Content-Type: application/json",
    )


def not_an_object() -> ProxyError:
    """The 400 for JSON that is not an object."""
    return ProxyError(400, "the request body must be a JSON object", "invalid_body")


async def read_body(request: web.BaseRequest, timeout: float) -> bytes:
    """The whole body; a 408 ProxyError (closing the connection) when it takes over ``timeout``
    seconds to arrive. No deadline is armed when it is all here already (most bodies)."""
    if request.content.is_eof():
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise ProxyError(
            408,
            f"the request body did not arrive within {timeout:g} s",
            "body_timeout",
            hint="Send the whole body at once, right after the headers",
            close=True,
        ) from None


def parse_small(raw: bytes) -> RequestBody:
    """Parse ``raw`` on the calling thread: for bodies up to :data:`LARGE_BODY`."""
    try:
        fields = json.loads(raw)
    except RecursionError:
        raise invalid_json(nested=True) from None
    except ValueError:
        raise invalid_json() from None
    if type(fields) is not dict:
        raise not_an_object()
    return RequestBody(raw, fields.get("model"), fields.get("stream") is True, fields)


def parse_large(raw: bytes) -> RequestBody:
    """Parse ``raw`` in a worker thread, letting the event loop's thread run in between."""
    pacer = _Pacer()
    try:
        text, encoding = _decode(raw, pacer)
        found = _top_level(text, pacer.checker())
    except RecursionError:
        raise invalid_json(nested=True) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise invalid_json() from None
    start, end = found.span
    if encoding not in _UTF8:  # UTF-16 or UTF-32: forwarded as UTF-8, which every server reads
        raw = b"".join(_encode(text, 0, len(text), pacer))
    if encoding != "utf-8" or not raw.isascii():  # byte positions differ from text positions
        base = 3 if encoding == "utf-8-sig" else 0  # its BOM
        if text.isascii():
            start, end = base + start, base + end
        else:
            start = base + _utf8_length(text, 0, start, pacer)
            end = start + _utf8_length(text, found.span[0], found.span[1], pacer)
    before, after = b"", b""
    if not found.has_model:
        before, after = b'"model": ', b", " if found.members else b""
    return RequestBody(
        raw, found.model, found.stream, span=(start, end), before=before, after=after
    )


# ---- the worker's parser ------------------------------------------------------------------


class _Pacer:
    """Makes the worker thread hand the GIL over at least every ``_BURST`` seconds.

    Python passes the GIL between threads every 5 ms (``sys.getswitchinterval``) when one asks;
    the event loop's thread may need it several times to run one loop iteration (once per call
    from Qt into Python in the desktop app), and would wait 5 ms each time. So the worker,
    between two pieces of work, sleeps ``_PAUSE`` once every ``_BURST``: the loop's thread
    waits 1 ms at most, and the parse takes about 10 % longer.
    """

    def __init__(self) -> None:
        self._calls = 0
        self._until = time.perf_counter() + _BURST

    def pause(self) -> None:
        """Between two pieces of work: sleep a moment if the burst is over."""
        if time.perf_counter() >= self._until:
            time.sleep(_PAUSE)
            self._until = time.perf_counter() + _BURST

    def drop(self, value: object) -> None:
        """The checking decoder's hook for every object and number: it drops them (freed one
        by one as they are parsed, not all at once at the end, which would hold the GIL as
        long), and every 256 calls it may pause."""
        self._calls += 1
        if not self._calls & 0xFF:
            self.pause()

    def checker(self) -> Callable[[str, int], tuple[Any, int]]:
        """Checks a JSON value at a position (``None`` for objects and numbers, which it drops),
        calling :meth:`drop` for each: ``(value, end)``."""
        drop = self.drop
        decoder = json.JSONDecoder(object_hook=drop, parse_int=drop, parse_float=drop)
        return decoder.scan_once  # type: ignore[attr-defined, no-any-return]


#: Parses a value the proxy reads (``model``, ``stream``): small, at once.
_parse: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
#: json's own string scanner (C): ``(text, position after the quote) -> (string, end)``.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _decode(raw: bytes, pacer: _Pacer) -> tuple[str, str]:
    """``raw`` as text, as ``json.loads`` would decode it, in slices."""
    encoding = json.detect_encoding(raw)
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    view = memoryview(raw)
    parts = []
    for i in range(0, len(raw), _SLICE):
        parts.append(decoder.decode(view[i : i + _SLICE]))
        pacer.pause()
    parts.append(decoder.decode(b"", True))
    return "".join(parts), encoding


def _encode(text: str, start: int, end: int, pacer: _Pacer) -> Iterator[bytes]:
    for i in range(start, end, _SLICE):
        yield text[i : min(i + _SLICE, end)].encode("utf-8", "surrogatepass")
        pacer.pause()


def _utf8_length(text: str, start: int, end: int, pacer: _Pacer) -> int:
    return sum(len(piece) for piece in _encode(text, start, end, pacer))


@dataclass(frozen=True, slots=True)
class _TopLevel:
    model: object
    stream: bool
    span: tuple[int, int]  # in the text; empty, right after "{", when has_model is false
    has_model: bool
    members: int


def _skip(text: str, idx: int) -> int:
    """The position of the first non-whitespace character at or after ``idx``."""
    match = _WHITESPACE.match(text, idx)
    return match.end() if match else idx


def _top_level(text: str, check: Callable[[str, int], tuple[Any, int]]) -> _TopLevel:
    """What the proxy needs of the JSON object in ``text``; raises JSONDecodeError where
    ``json.loads`` would, ProxyError for JSON that is not an object."""
    idx = _skip(text, 0)
    if text[idx : idx + 1] != "{":
        _check_all(text, idx, check)  # JSONDecodeError when it is not JSON at all
        raise not_an_object()
    model: object = None
    span = (idx + 1, idx + 1)
    has_model = False
    stream: object = None
    members = 0
    idx = _skip(text, idx + 1)
    if text[idx : idx + 1] == "}":
        idx += 1
    else:
        while True:
            if text[idx : idx + 1] != '"':
                raise JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, idx
                )
            key, idx = _scanstring(text, idx + 1)
            idx = _skip(text, idx)
            if text[idx : idx + 1] != ":":
                raise JSONDecodeError("Expecting ':' delimiter", text, idx)
            idx = _skip(text, idx + 1)
            read = key in _READ
            try:
                value, end = (_parse if read else check)(text, idx)
            except StopIteration as stop:
                raise JSONDecodeError("Expecting value", text, stop.value) from None
            members += 1
            if key == "model":  # the last one counts, as in json.loads
                model, span, has_model = value, (idx, end), True
            elif key == "stream":
                stream = value
            idx = _skip(text, end)
            delimiter = text[idx : idx + 1]
            if delimiter == "}":
                idx += 1
                break
            if delimiter != ",":
                raise JSONDecodeError("Expecting ',' delimiter", text, idx)
            idx = _skip(text, idx + 1)
    if _skip(text, idx) != len(text):
        raise JSONDecodeError("Extra data", text, idx)
    return _TopLevel(model, stream is True, span, has_model, members)


def _check_all(text: str, idx: int, check: Callable[[str, int], tuple[Any, int]]) -> None:
    try:
        _, end = check(text, idx)
    except StopIteration as stop:
        raise JSONDecodeError("Expecting value", text, stop.value) from None
    if _skip(text, end) != len(text):
        raise JSONDecodeError("Extra data", text, end)
