"""Composition root: builds the engine (Docker runtime, health probe, supervisor) from a Config.

The only module that knows every layer. The CLI, ``serve`` and the tray app
build on the same ``Engine`` (and ``ProxyServer``) so they behave alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

from ryx_desktop.adapters.chat_client import ProxyChatClient
from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.adapters.host import LocalHostFacts
from ryx_desktop.adapters.host_engines import HostsRuntime, build_hosts_runtime
from ryx_desktop.adapters.vllm_sleep import HttpSleepControl
from ryx_desktop.config import Config, save_config
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import ConfigError
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.ports import Clock, ContainerRuntime
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer, resolve_api_key


@dataclass
class Engine:
    """The running parts that manage models, opened and closed together."""

    config: Config
    runtime: ContainerRuntime
    health: HttpHealthProbe
    supervisor: Supervisor
    watch: bool = True
    sleep: HttpSleepControl | None = None
    #: Other hosts' engines, tunnels and GPU probes (None without ``hosts:``).
    hosts: HostsRuntime | None = None
    #: The local engine (what the setup page checks); None: ``runtime`` is it.
    local: DockerRuntime | None = None

    @property
    def local_runtime(self) -> DockerRuntime:
        """This machine's Docker engine (the ``docker:`` section)."""
        if self.local is not None:
            return self.local
        return cast(DockerRuntime, self.runtime)  # one host: the runtime is the local engine

    @property
    def gpu_probes(self) -> Mapping[str, GpuProbe]:
        """The GPUs of the other hosts (nvidia-smi over SSH), by host name."""
        return self.hosts.gpu_probes if self.hosts is not None else {}

    async def __aenter__(self) -> Engine:
        try:
            await self.supervisor.open(watch=self.watch)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching and release connections; models keep running."""
        await self.supervisor.close()
        await self.health.close()
        if self.sleep is not None:
            await self.sleep.close()
        if self.hosts is not None:
            await self.hosts.close()  # closes every engine, the local one too
        else:
            await self.runtime.close()


def build_engine(
    config: Config,
    environ: Mapping[str, str],
    *,
    watch: bool = True,
    clock: Clock | None = None,
    probe_interval: float = 2.0,
    gpu_probe: GpuProbe | None = None,
) -> Engine:
    """Wire the real adapters into a supervisor for ``config``.

    With ``hosts:`` in the config the supervisor drives one runtime over every host's engine
    (``adapters.host_engines``); otherwise the local engine alone, as it always did.
    """
    host = config.docker.host or environ.get("DOCKER_HOST")
    # Weights can only be checked on disk when the engine runs on this machine.
    local_engine = host is None or host.startswith("unix://")
    local = DockerRuntime(config.docker.host, check_model_paths=local_engine)
    health = HttpHealthProbe()
    sleep = HttpSleepControl()
    clock = clock or MonotonicClock()
    hosts: HostsRuntime | None = None
    runtime: ContainerRuntime = local
    supervisor: Supervisor | None = None

    def on_host(name: str, problem: str | None) -> None:
        if supervisor is not None:
            supervisor.host_changed(name, problem)

    if config.hosts:
        hosts = build_hosts_runtime(config, local, on_host=on_host, clock=clock)
        runtime = hosts.runtime
    supervisor = Supervisor(
        config,
        runtime,
        health,
        clock,
        environ=environ,
        probe_interval=probe_interval,
        sleep_control=sleep,
        # RAM and model sizes are this machine's only when the engine is local.
        host_facts=LocalHostFacts() if local_engine else None,
        # NVML reads this machine's GPUs: measured memory only for a local engine.
        gpu_probe=gpu_probe if local_engine else None,
        gpu_probes=hosts.gpu_probes if hosts is not None else None,
    )
    return Engine(
        config,
        runtime,
        health,
        supervisor,
        watch=watch,
        sleep=sleep,
        hosts=hosts,
        local=local,
    )


def build_proxy(
    engine: Engine,
    environ: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    chat: ChatService | None = None,
) -> ProxyServer:
    """The proxy in front of ``engine``'s models (``host``/``port`` override the config);
    ``chat`` answers its sessions API (``/api/sessions``)."""
    return ProxyServer(
        engine.config, engine.supervisor, environ=environ, host=host, port=port, chat=chat
    )


@dataclass
class Chat:
    """Conversations kept in SQLite, and the service that sends them through the proxy.

    The chat tab and the proxy's sessions API share it: one store, one client.
    """

    store: SqliteConversationStore
    client: ProxyChatClient
    service: ChatService

    async def close(self) -> None:
        """Close the client, then the store (after the proxy: its answers write to the store)."""
        await self.client.close()
        await self.store.close()


def build_chat(
    engine: Engine, environ: Mapping[str, str], path: Path, proxy_root: Callable[[], str]
) -> Chat:
    """The chat over the store at ``path``, talking to the proxy whose root URL (no ``/v1``)
    ``proxy_root`` returns once it listens: a stopped or sleeping model starts or wakes, with
    its progress, exactly as for any other client of the proxy."""
    store = SqliteConversationStore(path)
    client = ProxyChatClient(proxy_root, resolve_api_key(engine.config.proxy.api_key, environ))
    supervisor = engine.supervisor
    service = ChatService(
        store, client, resolve=lambda name: resolve_model(supervisor.config, name)
    )
    return Chat(store, client, service)


def make_config_applier(supervisor: Supervisor, path: Path) -> Callable[[Config], Awaitable[None]]:
    """The settings dialogs' save: write ``config`` to ``path`` atomically, then apply it.

    The file is written in an executor (it fsyncs); a failure raises ConfigError and leaves the
    running engine as it was. Proxy settings take effect when the proxy is restarted.
    """
    save_hint = f"Check that you may write to {path.parent}, or start with --config PATH."

    async def apply(config: Config) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, save_config, config, path)
        except OSError as exc:
            raise ConfigError(f"cannot save {path}: {exc.strerror or exc}", save_hint) from exc
        except ConfigError as exc:
            # save_config's own refusals carry their hint; a failed write gets the generic one.
            hint = save_hint if exc.hint == ConfigError.hint else exc.hint
            raise ConfigError(exc.message, hint) from exc
        await supervisor.reconfigure(config)

    return apply
