"""Running the real proxy inside a test's event loop, in front of a real supervisor.

The supervisor gets the in-memory container runtime (no Docker here) and the real HTTP health
probe; external (``url:``) models, which the proxy forwards to without starting anything, are
what these tests route to. Tests of managed models use the real Docker runtime instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.support.fakes import FakeRuntime


@dataclass
class RunningProxy:
    """A started proxy, its supervisor, and where clients reach it."""

    server: ProxyServer
    supervisor: Supervisor

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.server.port}"


@contextlib.asynccontextmanager
async def running_proxy(
    config: Config, *, environ: dict[str, str] | None = None, **server_args: Any
) -> AsyncIterator[RunningProxy]:
    """Start a supervisor (not watching) and a proxy on port 0 unless the config sets one."""
    health = HttpHealthProbe()
    supervisor = Supervisor(config, FakeRuntime(), health, MonotonicClock(), environ=environ)
    await supervisor.open(watch=False)
    server_args.setdefault("port", 0)
    server: ProxyServer | None = None
    try:
        server = ProxyServer(config, supervisor, environ=environ, **server_args)
        await server.start()
        yield RunningProxy(server, supervisor)
    finally:
        if server is not None:
            await server.close()
        await supervisor.close()
        await health.close()
