"""The proxy server: security checks, routes, the control API, and its start and shutdown.

Requests are dispatched by a dict lookup on the path (no router or middleware chain on the hot
path); every error leaves through :func:`error_response` once, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ryx_desktop.config import Config
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.errors import PortInUseError, RyxError, SleepNotSupportedError
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.states import Instance, InstanceState, instance_json
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy._errors import ProxyError, error_response
from ryx_desktop.proxy._forward import Forwarder
from ryx_desktop.proxy._metrics import CONTENT_TYPE, ProxyMetrics
from ryx_desktop.proxy._protocol import ProxyHttpServer, connection_of
from ryx_desktop.proxy._security import (
    Guard,
    cors_headers,
    preflight_headers,
    require_key_when_exposed,
    resolve_api_key,
)
from ryx_desktop.proxy._sessions import PREFIX as SESSIONS_PREFIX
from ryx_desktop.proxy._sessions import SessionsApi

log = logging.getLogger("ryx_desktop.proxy")

Handler = Callable[[web.BaseRequest, dict[str, str]], Awaitable[web.StreamResponse]]

#: The generation endpoints forwarded to the model's server, unchanged paths.
FORWARDED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_CONTROL_ACTIONS = ("start", "stop", "select", "sleep", "wake")
_CONTROL_PREFIX = "/api/instances/"


class ProxyServer:
    """The OpenAI-compatible proxy for one config and supervisor, on the running loop."""

    def __init__(
        self,
        config: Config,
        supervisor: Supervisor,
        *,
        environ: Mapping[str, str] | None = None,
        host: str | None = None,
        port: int | None = None,
        header_timeout: float = 10.0,
        body_timeout: float | None = None,
        loading_interval: float = 3.0,
        shutdown_grace: float = 2.0,
        chat: ChatService | None = None,
    ) -> None:
        """``header_timeout``: seconds a client has to send a request's headers (then it is
        dropped); ``body_timeout``: seconds to send the body once the headers are in (then
        408), like nginx's ``client_body_timeout`` but for the whole body, so that a body
        trickled a byte at a time cannot hold a connection and its buffer for long;
        ``shutdown_grace``: what ``close`` gives requests in flight before it cuts them;
        ``chat``: what the sessions API (``/api/sessions``) uses, 503 for it when None."""
        self._config = config
        self._supervisor = supervisor
        self._host = host if host is not None else config.proxy.host
        self._port = port if port is not None else config.proxy.port
        self._api_key = resolve_api_key(config.proxy.api_key, environ or {})
        self._header_timeout = header_timeout
        self._shutdown_grace = shutdown_grace
        self.metrics = ProxyMetrics()
        body_timeout = config.proxy.body_timeout if body_timeout is None else body_timeout
        self._forwarder = Forwarder(
            config.proxy,
            supervisor,
            self.metrics,
            loading_interval=loading_interval,
            body_timeout=body_timeout,
        )
        self._sessions = SessionsApi(chat, supervisor, body_timeout=body_timeout)
        self._guard: Guard | None = None
        self._runner: web.ServerRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._bound_port: int | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self._health},
            "/metrics": {"GET": self._metrics},
            "/v1/models": {"GET": self._models},
            "/api/instances": {"GET": self._instances},
            SESSIONS_PREFIX: {
                "GET": self._sessions.list_sessions,
                "POST": self._sessions.create_session,
            },
            **{path: {"POST": self._forward} for path in FORWARDED_PATHS},
        }

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (the configured one, or the one the OS chose for 0)."""
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8420/v1``."""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def local_root(self) -> str:
        """The root URL (no ``/v1``) a client on this machine reaches it at: the loopback
        address when it listens on every interface."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)
        host = host if ":" not in host else f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; PortInUseError when the port is taken, ConfigError for an unsafe setup."""
        require_key_when_exposed(self._host, self._api_key)  # before anything listens
        loop = asyncio.get_running_loop()
        max_body = int(self._config.proxy.max_body_mb * 1024 * 1024)

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_body
            )

        metrics = self.metrics
        server = ProxyHttpServer(
            self._handle,
            header_timeout=self._header_timeout,
            request_factory=make_request,
            on_error=lambda status: metrics.request_done("-", status),
            keepalive_timeout=75.0,
            access_log=None,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"the proxy cannot listen on {self._host}:{self._port}: the port is in use",
                    hint="Stop the program that holds it (another ryx-desktop?), "
                    "or set proxy.port / --port to a free port.",
                ) from None
            raise RyxError(
                f"the proxy cannot listen on {self._host}:{self._port}: {exc.strerror or exc}",
                hint="Check proxy.host: it must be an address of this machine.",
            ) from None
        self._runner = runner
        self._bound_port = _bound_port(runner) or self._port
        self._guard = Guard(
            self._host, self._bound_port, self._config.proxy.allowed_origins, self._api_key
        )
        await self._forwarder.open()
        for inst in self._supervisor.instances():
            self.metrics.observe_instance(inst, loop.time())
        self._unsubscribe = self._supervisor.subscribe(
            lambda inst: self.metrics.observe_instance(inst, loop.time())
        )
        log.info("proxy listening on %s", self.url)

    async def close(self) -> None:
        """Stop listening, let requests in flight finish (briefly), cut the rest cleanly: a 503
        ``shutting_down`` for those still waiting for their model, an SSE error event for
        streams under way."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()
        await self._sessions.cut_all()  # long answers: kept as cut rather than waited for
        await self._forwarder.drain(self._shutdown_grace)
        await runner.cleanup()
        await self._forwarder.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = connection_of(request)
        if connection is not None:
            connection.request_began()
        extra: dict[str, str] = {}
        try:
            return await self._dispatch(request, extra)
        except ProxyError as error:
            response = self._error(request, error, extra)
            if error.close:
                await _send_and_close(request, response)
            return response
        except web.HTTPRequestEntityTooLarge:
            limit = self._config.proxy.max_body_mb
            too_large = ProxyError(
                413,
                f"the request body is larger than {limit:g} MB",
                "body_too_large",
                hint="Send less, or raise proxy.max_body_mb",
            )
            response = self._error(request, too_large, extra)
            response.force_close()
            return response
        finally:
            if connection is not None:
                connection.request_ended()

    async def _dispatch(
        self, request: web.BaseRequest, extra: dict[str, str]
    ) -> web.StreamResponse:
        guard = self._guard
        assert guard is not None
        headers = request.headers
        if request.version.major != 1:
            raise ProxyError(
                505,
                f"HTTP/{request.version.major}.{request.version.minor} is not supported",
                "http_version_not_supported",
                hint="Send HTTP/1.1 (or 1.0) requests",
                close=True,
            )
        if "Transfer-Encoding" in headers:
            _check_transfer_encoding(headers.getall("Transfer-Encoding"))
        guard.check_host(headers)
        origin = guard.check_origin(headers)
        method = request.method
        if origin is not None:
            if method == "OPTIONS":
                return web.Response(status=204, headers=preflight_headers(origin, headers))
            extra.update(cors_headers(origin))
        path = request.path
        if not (path == "/health" and method == "GET"):
            guard.check_key(headers)
        methods = self._routes.get(path)
        if methods is None:
            return await self._control(request, extra)
        handler = methods.get(method)
        if handler is None:
            raise _method_not_allowed(method, path, methods)
        return await handler(request, extra)

    def _error(
        self, request: web.BaseRequest, error: ProxyError, extra: Mapping[str, str]
    ) -> web.Response:
        self.metrics.request_done(extra.get("X-Ryx-Model", "-"), error.status)
        log.warning("%s %s -> %d %s", request.method, request.path, error.status, error.text)
        return error_response(error, extra)

    # ---- OpenAI routes ----------------------------------------------------------------------

    async def _forward(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        return await self._forwarder.forward(request, extra)

    async def _models(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        selected = self._supervisor.selected
        data = [_model_entry(inst, selected) for inst in self._supervisor.instances()]
        return _json({"object": "list", "data": data}, extra)

    async def _health(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        states = {inst.key: inst.state.value for inst in self._supervisor.instances()}
        body = {"status": "ok", "selected": self._supervisor.selected, "models": states}
        return _json(body, extra)

    async def _metrics(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE, **extra}
        )

    # ---- control API ------------------------------------------------------------------------

    async def _instances(
        self, request: web.BaseRequest, extra: dict[str, str]
    ) -> web.StreamResponse:
        selected = self._supervisor.selected
        items = [
            {**instance_json(inst), "selected": inst.key == selected}
            for inst in self._supervisor.instances()
        ]
        return _json({"selected": selected, "instances": items}, extra)

    async def _control(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        path = request.path
        if path.startswith(SESSIONS_PREFIX + "/"):
            return await self._sessions.item(request, extra)
        name, _, action = path[len(_CONTROL_PREFIX) :].rpartition("/")
        if not path.startswith(_CONTROL_PREFIX) or not name or action not in _CONTROL_ACTIONS:
            if path.startswith("/v1/models/") and request.method == "GET":
                return self._one_model(path[len("/v1/models/") :], extra)
            raise ProxyError(404, f"there is no endpoint {path}", "not_found")
        if request.method != "POST":
            raise _method_not_allowed(request.method, path, ("POST",))
        key = resolve_model(self._supervisor.config, name)
        if key is None:
            raise ProxyError(404, f"no model is called {name!r}", "model_not_found")
        extra["X-Ryx-Model"] = key
        sup = self._supervisor
        status = 200
        if action == "select":
            sup.select(key)
        elif action == "stop":
            try:
                await sup.stop(key, reason="stopped through the control API")
            except RyxError as error:
                raise ProxyError(502, error.message, "stop_failed", hint=error.hint) from None
        elif action == "sleep":
            level = request.query.get("level", "1")  # a query parameter, as vLLM takes it
            if level not in ("1", "2"):
                raise ProxyError(
                    400, f"sleep level {level!r} does not exist: use 1 or 2", "bad_level"
                )
            try:
                await sup.sleep(key, int(level), reason="through the control API")
            except SleepNotSupportedError as error:
                raise ProxyError(
                    409, error.message, "sleep_not_supported", hint=error.hint
                ) from None
            except RyxError as error:
                raise ProxyError(502, error.message, "sleep_failed", hint=error.hint) from None
        else:  # start, or wake: one shared start or wake per model
            inst = sup.get(key)
            if not inst.external and (not inst.running or inst.state is InstanceState.SLEEPING):
                status = 202  # the start (or wake) runs on; poll GET /api/instances
                task = asyncio.create_task(self._start_in_background(key))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        inst = sup.get(key)
        body = {**instance_json(inst), "selected": key == sup.selected}
        self.metrics.request_done(key, status)
        return _json(body, extra, status=status)

    async def _start_in_background(self, key: str) -> None:
        try:
            await self._supervisor.ensure_ready(key)
        except RyxError as error:
            log.warning("start of %s through the control API failed: %s", key, error.message)

    def _one_model(self, name: str, extra: dict[str, str]) -> web.StreamResponse:
        key = resolve_model(self._supervisor.config, name)
        if key is None:
            raise ProxyError(404, f"no model is called {name!r}", "model_not_found")
        inst = self._supervisor.get(key)
        return _json(_model_entry(inst, self._supervisor.selected), extra)


def _check_transfer_encoding(values: list[str]) -> None:
    """501 for a body in any transfer coding but plain ``chunked`` (RFC 9112 6.1)."""
    codings = [coding.strip().lower() for value in values for coding in value.split(",")]
    if codings != ["chunked"]:
        raise ProxyError(
            501,
            f"the transfer coding {', '.join(codings)!r} is not supported",
            "transfer_encoding_not_supported",
            hint="Send the body as is (Content-Length) or with Transfer-Encoding: chunked",
            close=True,
        )


async def _send_and_close(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send ``response`` now and close the connection right after, without reading the rest of
    the request (aiohttp would otherwise go on reading it, for up to 10 s)."""
    response.force_close()
    with contextlib.suppress(ConnectionError):  # gone already: closed all the same
        await response.prepare(request)
        await response.write_eof()
    connection = connection_of(request)
    if connection is not None:
        connection.force_close()


def _model_entry(inst: Instance, selected: str | None) -> dict[str, Any]:
    return {
        "id": inst.served_name,
        "object": "model",
        "created": 0,
        "owned_by": "ryx-desktop",
        "key": inst.key,
        "name": inst.name,
        "state": inst.state.value,
        "aliases": list(inst.aliases),
        "selected": inst.key == selected,
    }


def _json(body: object, extra: Mapping[str, str], *, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=extra,
    )


def _method_not_allowed(method: str, path: str, allowed: Any) -> ProxyError:
    methods = ", ".join(sorted(allowed))
    return ProxyError(
        405,
        f"{method} is not allowed on {path} (use {methods})",
        "method_not_allowed",
        headers={"Allow": methods},
    )


def _bound_port(runner: web.ServerRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
