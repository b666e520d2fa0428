"""Forwarding a generation request: route it, make its model ready, relay the answer.

The hot path: read and check the body (within ``body_timeout``; large bodies are parsed in a
worker thread, see ``_body``), find the model, rewrite ``model`` only when it differs from the
served name, and relay the upstream's bytes as they arrive. Streams go through aiohttp's client;
answers the client asked for whole go through ``_upstream_pool``, which costs a fraction of it
and fails with the same errors. Those errors are turned into :class:`ProxyError` here, once. A
client that goes away cancels the handler (aiohttp's ``handler_cancellation``), which closes the
upstream connection so vLLM aborts the generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from ryx_desktop.config import ProxyConfig
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.spec import ANY_HOST, LOCAL_HOST
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy._body import (
    LARGE_BODY,
    RequestBody,
    parse_large,
    parse_small,
    read_body,
)
from ryx_desktop.proxy._errors import ProxyError, sse_error
from ryx_desktop.proxy._loading import LoadingNotes, loading_style
from ryx_desktop.proxy._metrics import ProxyMetrics
from ryx_desktop.proxy._upstream_pool import (
    Target,
    UpstreamAnswer,
    UpstreamConnectError,
    UpstreamPool,
    request_head,
)

log = logging.getLogger("ryx_desktop.proxy")

#: Never forwarded either way (RFC 9110 7.6.1), plus what the proxy sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "origin",
        "cookie",
    }
)
_RESPONSE_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
    }
)
_READY_STATES = (InstanceState.READY, InstanceState.UNHEALTHY)
#: Answers up to this size are read whole and sent with a Content-Length; larger ones stream.
_SMALL_BODY = 1 << 20
#: Request bodies larger than this are sent from a BytesIO (aiohttp's TOO_LARGE_BYTES_BODY).
_BYTES_BODY = 1 << 20
_DONE = b"data: [DONE]"


class Forwarder:
    """Forwards the generation endpoints to the routed model's server."""

    def __init__(
        self,
        config: ProxyConfig,
        supervisor: Supervisor,
        metrics: ProxyMetrics,
        *,
        loading_interval: float,
        body_timeout: float,
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._metrics = metrics
        self._loading_interval = loading_interval
        self._body_timeout = body_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: UpstreamPool | None = None  # for answers asked for whole
        self._names = _name_table(supervisor)
        self._unsubscribe_config: Callable[[], None] | None = None
        self._urls: dict[tuple[str, str], URL] = {}
        self._targets: dict[tuple[str, str], Target | None] = {}
        self._in_flight: dict[str, int] = {}
        self._upstreams: set[UpstreamAnswer] = set()
        self._starts: set[asyncio.Task[Any]] = set()  # waiting for their model to be ready
        self._shut: set[asyncio.Task[Any]] = set()  # ...whose wait the shutdown cut
        self._parser: ThreadPoolExecutor | None = None  # for large bodies
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        # With a proxy key, Authorization carries our key: never pass it on to the model.
        self._dropped_request_headers = (
            _HOP_BY_HOP | {"authorization"} if config.api_key is not None else _HOP_BY_HOP
        )
        self._deadlines = _Deadlines(config.read_timeout)

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0, force_close=False)
        # No sock_read: aiohttp re-arms that timer on every packet. _Deadlines watches the wait
        # for an answer and _Silence a stream's gaps, at a fraction of the cost.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
        )
        self._pool = UpstreamPool(connect_timeout=10.0, keepalive_timeout=30.0)
        # One thread: parsing holds the GIL, more threads would only take turns.
        self._parser = ThreadPoolExecutor(1, thread_name_prefix="ryx-proxy-json")
        # Models added, removed or renamed in the settings are routed without a proxy restart.
        self._names = _name_table(self._supervisor)
        self._unsubscribe_config = self._supervisor.subscribe_config(self._rebuild_names)

    def _rebuild_names(self, config: object) -> None:
        self._names = _name_table(self._supervisor)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for requests in flight, then cut the rest cleanly: those
        still waiting for their model (a start, or the first byte of its answer) get a 503,
        streams whose 200 went out an error event."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        for task in self._starts:
            self._shut.add(task)
            task.cancel()
        self._deadlines.cut_all()
        for upstream in list(self._upstreams):
            upstream.close()

    async def close(self) -> None:
        if self._unsubscribe_config is not None:
            self._unsubscribe_config()
            self._unsubscribe_config = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._parser is not None:
            self._parser.shutdown(wait=False, cancel_futures=True)
            self._parser = None

    # ---- the request ------------------------------------------------------------------------

    async def forward(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        body = await self._read_json(request)
        key = self._route(body.model)
        extra["X-Ryx-Model"] = key
        supervisor = self._supervisor
        inst = supervisor.get(key)
        raw = body.raw
        if body.model != inst.served_name:
            raw = body.with_model(inst.served_name)
        count = self._in_flight.get(key, 0)
        if count >= self._config.concurrency_limit:
            raise ProxyError(
                429,
                f"{key} already has {count} requests in flight",
                "too_many_requests",
                hint="Retry shortly, or raise proxy.concurrency_limit",
                headers={"Retry-After": "1"},
            )
        self._in_flight[key] = count + 1
        self._idle.clear()
        self._metrics.forwarding(key, 1)
        supervisor.request_started(key)
        try:
            stream = body.stream
            if inst.external or inst.state in _READY_STATES:
                return await self._relay(request, extra, inst, raw, stream, None)
            if stream and self._config.auto_start:
                return await self._relay_after_start(request, extra, key, raw)
            inst = await self._ready(key)
            return await self._relay(request, extra, inst, raw, stream, None)
        finally:
            supervisor.request_finished(key)
            self._metrics.forwarding(key, -1)
            left = self._in_flight[key] - 1
            self._in_flight[key] = left
            if left == 0 and not any(self._in_flight.values()):
                self._idle.set()

    async def _read_json(self, request: web.BaseRequest) -> RequestBody:
        length = request.content_length
        limit = self._config.max_body_mb * 1024 * 1024
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=int(limit), actual_size=length)
        raw = await read_body(request, self._body_timeout)
        if len(raw) <= LARGE_BODY:
            return parse_small(raw)
        # Parsing 20 MB takes ~300 ms: a worker thread does it while the loop serves others.
        assert self._parser is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._parser, parse_large, raw)

    def _route(self, name: object) -> str:
        if name is None or name == "":
            return self._selected("the request names no model")
        if not isinstance(name, str):
            raise ProxyError(400, "the 'model' field must be a string", "invalid_model")
        key = self._names.get(name)  # every key, served name and alias
        if key is not None:
            return key
        if self._config.fallback_unknown:
            return self._selected(f"no model is called {name!r}")
        known = ", ".join(sorted(self._names))
        raise ProxyError(
            404,
            f"no model is called {name!r}",
            "model_not_found",
            hint=f"Use one of: {known}",
        )

    def _selected(self, why: str) -> str:
        key = self._supervisor.selected
        if key is None:
            raise ProxyError(
                404,
                f"{why}, and no model is selected",
                "model_not_found",
                hint="Name a model in the request, or select one (default_model)",
            )
        return key

    # ---- readiness --------------------------------------------------------------------------

    async def _ready(self, key: str) -> Instance:
        """The model's snapshot once it is ready; ProxyError 503 when it cannot be."""
        supervisor = self._supervisor
        inst = supervisor.get(key)
        if inst.external or inst.state in _READY_STATES:
            return inst
        if not self._config.auto_start:
            raise ProxyError(
                503,
                f"{key} is {inst.state.value}",
                "model_not_running",
                hint=f"Start it (ryx-desktop start {key}), or set proxy.auto_start: true",
            )
        failed = supervisor.recent_failure(key, self._config.start_cooldown)
        if failed is not None:  # a retry: the same answer at once, not another load
            raise _start_failed(key, failed.message, failed.hint, failed.log_tail)
        timeout = self._config.start_timeout
        task = asyncio.current_task()
        assert task is not None
        self._starts.add(task)  # the shutdown cuts the wait (see drain)
        try:
            inst = await asyncio.wait_for(supervisor.ensure_ready(key), timeout)
        except asyncio.CancelledError:
            if self._was_shut(task):
                raise _shutting_down() from None
            raise  # the client left; the start itself goes on
        except TimeoutError:
            state = supervisor.get(key).state.value
            raise ProxyError(
                503,
                f"{key} was not ready within {timeout:g} s (it is {state})",
                "model_start_timeout",
                hint="Retry later, or raise proxy.start_timeout",
            ) from None
        except RyxError as error:
            tail = tuple(getattr(error, "log_tail", ()))
            raise _start_failed(key, error.message, error.hint, tail) from None
        finally:
            self._starts.discard(task)
        if self._was_shut(task):  # cut as the start ended: the shutdown came first
            raise _shutting_down()
        return inst

    def _was_shut(self, task: asyncio.Task[Any]) -> bool:
        """Whether the shutdown cancelled ``task`` (and nothing else did); undoes that cancel."""
        if task not in self._shut:
            return False
        self._shut.discard(task)
        return task.uncancel() == 0

    async def _relay_after_start(
        self, request: web.BaseRequest, extra: dict[str, str], key: str, raw: bytes
    ) -> web.StreamResponse:
        """A stream that waits for a cold start: 200 now, loading messages until the model is up
        (in the style of ``proxy.loading_messages``, see ``_loading``)."""
        response = web.StreamResponse(status=200, headers={**_SSE_HEADERS, **extra})
        await response.prepare(request)
        notes = LoadingNotes(loading_style(self._config.loading_messages, request.path))
        waiter = asyncio.ensure_future(self._ready(key))
        try:
            await self._tell_wait(response, waiter, key, notes)
        finally:
            if not waiter.done():
                waiter.cancel()  # the client left; the start itself goes on
        try:
            inst = waiter.result()
        except ProxyError as error:
            return await self._end_stream(request, response, error, key)
        return await self._relay(request, extra, inst, raw, True, response)

    async def _tell_wait(
        self,
        response: web.StreamResponse,
        waiter: asyncio.Future[Instance],
        key: str,
        notes: LoadingNotes,
    ) -> None:
        """Write ``notes``'s messages until ``waiter`` is done: one per ``loading_interval``,
        and (reasoning style) one as soon as the model's snapshot says something new."""
        supervisor = self._supervisor
        changed = asyncio.Event()
        unsubscribe = None
        if notes.follows_changes:
            unsubscribe = supervisor.subscribe(
                lambda inst: changed.set() if inst.key == key else None
            )
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while not waiter.done():
                inst = supervisor.get(key)
                if loop.time() >= next_tick:
                    next_tick = loop.time() + self._loading_interval
                    data = notes.tick(inst)
                else:
                    data = notes.changed(inst)
                changed.clear()  # after reading the snapshot, before any await
                if data:
                    await response.write(data)
                watch = asyncio.ensure_future(changed.wait())
                either: set[asyncio.Future[Any]] = {waiter, watch}
                try:
                    await asyncio.wait(
                        either,
                        timeout=max(0.0, next_tick - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    watch.cancel()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    # ---- upstream ---------------------------------------------------------------------------

    async def _relay(
        self,
        request: web.BaseRequest,
        extra: dict[str, str],
        inst: Instance,
        raw: bytes,
        stream: bool,
        response: web.StreamResponse | None,
    ) -> web.StreamResponse:
        """Send ``raw`` to the model and relay its answer (into ``response`` if already sent)."""
        key = inst.key
        assert self._session is not None and self._pool is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        target = None if stream else self._target(inst, request.path)
        headers = self._headers(request)
        deadlines = self._deadlines
        task = deadlines.begin()
        upstream: UpstreamAnswer
        try:
            if target is not None:
                upstream = await self._pool.request(
                    target, request_head(target, headers, len(raw)), raw
                )
            else:
                # aiohttp warns of bytes over 1 MiB (sent whole); a BytesIO goes in 64 KiB pieces.
                data = raw if len(raw) <= _BYTES_BODY else io.BytesIO(raw)
                url = self._url(inst, request.path)
                upstream = await self._session.post(url, data=data, headers=headers)
        except BaseException as exc:
            cause = deadlines.end(task, exc)
            error = _upstream_error(
                cause,
                inst,
                self._config.read_timeout,
                before_headers=True,
                closing=self._closing,
            )
            if response is None:
                raise error from None
            return await self._end_stream(request, response, error, key)
        self._upstreams.add(upstream)
        try:
            self._metrics.upstream_headers(key, loop.time() - began)
            if response is None:
                length = upstream.content_length
                if (length is not None and length <= _SMALL_BODY) or _plain_error(upstream):
                    return await self._relay_small(upstream, extra, inst, task)
                deadlines.end(task)
                response = web.StreamResponse(
                    status=upstream.status, headers=self._response_headers(upstream, extra)
                )
                await response.prepare(request)
            else:
                deadlines.end(task)
                if upstream.status != 200:
                    # The 200 went out while the model loaded: the upstream's refusal is an event.
                    async with asyncio.timeout(self._config.read_timeout):
                        text = (await upstream.read()).decode("utf-8", "replace")
                    error = ProxyError(upstream.status, _upstream_message(text), "upstream_error")
                    return await self._end_stream(request, response, error, key)
            return await self._stream(request, response, upstream, inst)
        finally:
            self._upstreams.discard(upstream)
            # aiohttp pooled the connection after a complete read already; the pool takes it back
            # here when the answer was complete. An answer cut short closes its connection.
            upstream.close()
            self._metrics.upstream_done(key, loop.time() - began)

    async def _relay_small(
        self,
        upstream: UpstreamAnswer,
        extra: dict[str, str],
        inst: Instance,
        task: asyncio.Task[Any],
    ) -> web.StreamResponse:
        deadlines = self._deadlines
        try:
            if upstream.content_length is None:  # a refusal that is not JSON, of unknown length
                data = await _read_at_most(upstream.content, _SMALL_BODY)
            else:
                data = await upstream.read()
        except BaseException as exc:
            cause = deadlines.end(task, exc)
            raise _upstream_error(
                cause, inst, self._config.read_timeout, closing=self._closing
            ) from None
        deadlines.end(task)
        if _plain_error(upstream):  # a bare text (or HTML) page: said in OpenAI's error shape
            text = _upstream_message(data.decode("utf-8", "replace"))
            raise ProxyError(
                upstream.status,
                f"{inst.key}'s server answered {upstream.status}: {text}",
                "upstream_error",
                hint=f"See the model's log: ryx-desktop logs {inst.key}",
            )
        self._metrics.request_done(inst.key, upstream.status)
        response = web.Response(
            status=upstream.status,
            body=data,
            headers=self._response_headers(upstream, extra, streamed=False),
        )
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        upstream: UpstreamAnswer,
        inst: Instance,
    ) -> web.StreamResponse:
        content = upstream.content
        event_stream = upstream.content_type == "text/event-stream"
        last = previous = b""
        silence = _Silence(self._config.read_timeout, upstream.close)
        try:
            while True:
                try:
                    chunk = await content.readany()
                except Exception as exc:
                    cause = TimeoutError() if silence.expired else exc
                    error = _upstream_error(
                        cause, inst, self._config.read_timeout, closing=self._closing
                    )
                    return await self._end_stream(request, response, error, inst.key)
                if not chunk:
                    break
                silence.progress += 1
                await response.write(chunk)  # a client that left raises here, or is cancelled
                previous, last = last, chunk
        finally:
            silence.cancel()
        if event_stream and upstream.status == 200 and _DONE not in previous[-32:] + last:
            error = ProxyError(
                502,
                f"{inst.key}'s server ended the stream before it was complete",
                "upstream_incomplete",
                hint=f"See the model's log: ryx-desktop logs {inst.key}",
            )
            return await self._end_stream(request, response, error, inst.key)
        await response.write_eof()
        self._metrics.request_done(inst.key, upstream.status)
        return response

    async def _end_stream(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        error: ProxyError,
        key: str,
    ) -> web.StreamResponse:
        """End a stream whose status went out already: an SSE error event, no ``[DONE]``."""
        log.warning("%s %s -> stream ended: %s", request.method, request.path, error.text)
        self._metrics.request_done(key, error.status)
        await response.write(sse_error(error))
        await response.write_eof()
        return response

    # ---- helpers ----------------------------------------------------------------------------

    def _url(self, inst: Instance, path: str) -> URL:
        base = inst.url or ""
        url = self._urls.get((base, path))
        if url is None:
            url = URL(base.rstrip("/") + path)
            self._urls[(base, path)] = url
        return url

    def _target(self, inst: Instance, path: str) -> Target | None:
        """Where the pool sends ``path`` of ``inst``; None: through aiohttp (https, say)."""
        base = inst.url or ""
        try:
            return self._targets[(base, path)]
        except KeyError:
            target = self._targets[(base, path)] = Target.of(self._url(inst, path))
            return target

    def _headers(self, request: web.BaseRequest) -> dict[str, str]:
        dropped = _hop_by_hop(request.headers, self._dropped_request_headers)
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in dropped
        }
        # Answers are relayed as they come (not decompressed): ask for an encoding the client takes.
        if "Accept-Encoding" not in request.headers:
            headers["Accept-Encoding"] = "identity"
        return headers

    @staticmethod
    def _response_headers(
        upstream: UpstreamAnswer, extra: dict[str, str], *, streamed: bool = True
    ) -> Any:
        dropped = _hop_by_hop(upstream.headers, _RESPONSE_DROPPED)
        headers = {
            name: value for name, value in upstream.headers.items() if name.lower() not in dropped
        }
        if streamed:  # tells a reverse proxy in front (nginx) not to hold the pieces back
            headers["X-Accel-Buffering"] = "no"
        headers.update(extra)
        return headers


class _Deadlines:
    """Cuts requests that wait on an upstream for more than ``timeout`` seconds, with one timer.

    Arming a timer per request (``asyncio.timeout``, or aiohttp's sock_read, which re-arms on
    every packet) costs more than the rest of a small request's bookkeeping. Here a waiting
    request is one dict entry, and a single timer sweeps them four times per ``timeout``: a wait
    is cut (its task cancelled) between 1 and 1.25 times ``timeout`` after it began.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._step = timeout / 4
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None

    def begin(self) -> asyncio.Task[Any]:
        """The current task starts waiting on an upstream; returns it for ``end``."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        self._waiting[task] = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(self._step, self._sweep, loop)
        return task

    def end(self, task: asyncio.Task[Any], exc: BaseException | None = None) -> Exception:
        """The wait is over: returns the cause to report for ``exc``.

        A wait the sweep cut reports ``TimeoutError``; any other cancellation (the client left)
        is raised again. Call it right after the awaited call returns or raises: the sweep's
        cancellation is always delivered at that await, never later.
        """
        self._waiting.pop(task, None)
        if task in self._cut:
            self._cut.discard(task)
            if task.uncancel() == 0 and exc is not None:
                return TimeoutError()
        if exc is None:
            return TimeoutError()
        if not isinstance(exc, Exception):
            raise exc
        return exc

    def cut_all(self) -> None:
        """Cut every wait now (the proxy shuts down)."""
        for task in self._waiting:
            self._cut.add(task)
            task.cancel()
        self._waiting.clear()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, since in list(self._waiting.items()):
            if now - since >= self._timeout:
                del self._waiting[task]
                self._cut.add(task)
                task.cancel()
        self._handle = loop.call_later(self._step, self._sweep, loop) if self._waiting else None


class _Silence:
    """Calls ``on_expire`` once an upstream has sent nothing for ``timeout`` seconds.

    The relay loop only bumps ``progress``; a timer checks it a few times per ``timeout``, so
    silence is noticed between 1 and 1.25 times ``timeout`` after the last chunk.
    """

    def __init__(self, timeout: float, on_expire: Callable[[], None]) -> None:
        self.progress = 0
        self.expired = False
        self._timeout = timeout
        self._on_expire = on_expire
        self._loop = asyncio.get_running_loop()
        self._seen = 0
        self._since = self._loop.time()
        self._step = timeout / 4
        self._handle = self._loop.call_later(self._step, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        if self.progress != self._seen:
            self._seen, self._since = self.progress, now
        elif now - self._since >= self._timeout:
            self.expired = True
            self._on_expire()
            return
        self._handle = self._loop.call_later(self._step, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _hop_by_hop(headers: Any, always: frozenset[str]) -> frozenset[str]:
    """``always`` plus the headers the message's ``Connection`` names (RFC 9110 7.6.1)."""
    named = headers.getall("Connection", ())
    if not named:
        return always
    return always | {token.strip().lower() for value in named for token in value.split(",")}


def _name_table(supervisor: Supervisor) -> dict[str, str]:
    """Every name a request may use (keys, served names, aliases) to its model's key."""
    config = supervisor.config
    names: dict[str, str] = {}
    for key, model in config.models.items():
        for name in (key, supervisor.get(key).served_name, *model.aliases):
            found = resolve_model(config, name)
            if found is not None:
                names.setdefault(name, found)
    return names


def _plain_error(upstream: UpstreamAnswer) -> bool:
    """An error answer whose body is not JSON (OpenAI clients read JSON errors only)."""
    if upstream.status < 400:
        return False
    kind = upstream.content_type
    return kind != "application/json" and not kind.endswith("+json")


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _start_failed(key: str, reason: str, hint: str, tail: Sequence[str]) -> ProxyError:
    """503 for a model that could not start, with ``x-should-retry: false``: the openai
    clients honour it, and each retry would only have met the same failure."""
    message = f"{key} could not start: {reason}"
    if tail:  # the CLI prints these lines above its hint; here the last one says most
        message += f" (last log line: {tail[-1].strip()})"
        hint = f"See the model's log: ryx-desktop logs {key}"
    headers = {"x-should-retry": "false"}
    return ProxyError(503, message, "model_start_failed", hint=hint, headers=headers)


def _shutting_down() -> ProxyError:
    return ProxyError(503, "ryx-desktop is shutting down", "shutting_down")


def _upstream_message(text: str) -> str:
    try:
        message = json.loads(text)["error"]["message"]
        return str(message)
    except (ValueError, KeyError, TypeError):
        return text.strip()[:300] or "the model's server refused the request"


def _upstream_error(
    exc: Exception,
    inst: Instance,
    read_timeout: float,
    *,
    before_headers: bool = False,
    closing: bool = False,
) -> ProxyError:
    """The one place the upstream clients' errors (aiohttp's, the pool's) become the proxy's."""
    key, where = inst.key, inst.url
    # A model on another host is reached through an SSH tunnel: a cut may be the tunnel's.
    remote = inst.host not in (LOCAL_HOST, "", ANY_HOST)
    tunnel = (
        f"; if the SSH tunnel to host {inst.host} dropped, it reopens by itself: retry"
        if remote
        else ""
    )
    if remote:
        where = f"{where} (host {inst.host}, through SSH)"
    if closing:
        return _shutting_down()
    if isinstance(exc, (aiohttp.ClientConnectorError, UpstreamConnectError)):
        return ProxyError(
            502,
            f"{key}'s server at {where} refused the connection",
            "upstream_unreachable",
            hint=f"Check that {key} runs: ryx-desktop status{tunnel}",
        )
    if isinstance(exc, TimeoutError):
        return ProxyError(
            504,
            f"{key}'s server sent nothing for {read_timeout:g} s",
            "upstream_timeout",
            hint="The model may be overloaded; raise proxy.read_timeout for very slow answers",
        )
    what = "closed the connection" if before_headers else "broke off its answer"
    return ProxyError(
        502,
        f"{key}'s server at {where} {what}",
        "upstream_error",
        hint=f"See the model's log: ryx-desktop logs {key}{tunnel}",
    )
