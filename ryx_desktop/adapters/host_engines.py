"""One runtime over every host of the config: how each host's engine, ports and GPUs are reached.

:func:`build_hosts_runtime` makes the :class:`~ryx_desktop.adapters.multi_engine.MultiEngineRuntime`
the supervisor drives when the config names other hosts:

* ``local``: the engine of the ``docker:`` section (the runtime given);
* an ``ssh://`` host: :class:`~ryx_desktop.adapters.ssh_engine.SshEngine` (the SDK through a
  tunnel to the engine's socket); its models' ports reach this machine through SSH tunnels of a
  shared :class:`~ryx_desktop.adapters.ssh_tunnel.TunnelSet` (same port here as there); its
  GPUs are read with ``nvidia-smi`` over SSH;
* a ``unix://`` host: an engine on this machine (no tunnel, GPUs read here);
* a ``tcp://`` or ``context:`` host: not driven by the app yet (``ryx-desktop hosts`` checks
  it): it shows unreachable with a sentence saying so, and its models do not start.

Building starts nothing: each engine connects on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.multi_engine import HostListener, MultiEngineRuntime
from ryx_desktop.adapters.remote_gpu import CommandGpuProbe, CommandRunner, local_runner
from ryx_desktop.adapters.ssh_engine import SshEngine
from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel, TunnelSet
from ryx_desktop.config import Config, HostConfig
from ryx_desktop.core.errors import HostUnreachableError
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.ports import (
    Clock,
    ContainerInfo,
    ContainerRuntime,
    PullProgress,
    RuntimeEvent,
)
from ryx_desktop.core.spec import LOCAL_HOST, ContainerSpec


@dataclass
class HostsRuntime:
    """The runtime over every host, with what the app needs besides it."""

    runtime: MultiEngineRuntime[SshTunnel]
    tunnels: TunnelSet
    #: nvidia-smi over SSH, by host (ssh hosts only); the app closes them.
    gpu_probes: dict[str, GpuProbe] = field(default_factory=dict)
    #: The engines of the ssh hosts, by host (the runtime owns and closes them).
    ssh_engines: dict[str, SshEngine] = field(default_factory=dict)

    async def close(self) -> None:
        """Close the runtime (its engines and forwards), then any tunnel left."""
        await self.runtime.close()
        await self.tunnels.close()
        for probe in self.gpu_probes.values():
            await probe.close()


def ssh_target_of(host: HostConfig) -> SshTarget:
    """How ssh reaches ``host`` (an ``ssh://`` url), with its key, config file and options."""
    assert host.url is not None
    ssh = host.ssh
    return SshTarget.from_url(
        host.url,
        identity_file=None if ssh is None else ssh.identity_file,
        config_file=None if ssh is None else ssh.config_file,
        options=() if ssh is None else ssh.options,
    )


def _model_tunnel(target: SshTarget, remote: int | str) -> SshTunnel:
    # A model's port is forwarded to the same port here: its URL stays 127.0.0.1:<port>.
    return SshTunnel(target, remote, local_port=remote if isinstance(remote, int) else None)


def build_hosts_runtime(
    config: Config,
    local: ContainerRuntime,
    *,
    on_host: HostListener,
    clock: Clock | None = None,
    runner: CommandRunner = local_runner,
) -> HostsRuntime:
    """The runtime over ``local`` and every host under ``hosts:`` (see the module docstring)."""
    engines: dict[str, ContainerRuntime] = {LOCAL_HOST: local}
    targets: dict[str, SshTarget] = {}
    probes: dict[str, GpuProbe] = {}
    ssh_engines: dict[str, SshEngine] = {}
    for name, host in config.hosts.items():
        if host.kind == "ssh":
            target = ssh_target_of(host)
            targets[name] = target
            engine = SshEngine(name, target, runner=runner)
            engines[name] = ssh_engines[name] = engine
            probes[name] = CommandGpuProbe(engine.run)  # over the engine's SSH connection
        elif host.kind == "unix":
            engines[name] = DockerRuntime(host.url, address=f"{host.url} (host {name})")
        else:
            how = "a tcp:// url" if host.kind == "tcp" else "a Docker context"
            engines[name] = RefusedEngine(name, how)
    tunnels = TunnelSet(_model_tunnel)

    async def open_port(host: str, port: int) -> SshTunnel:
        return await tunnels.acquire(targets[host], port)  # only ssh hosts are tunnelled

    runtime: MultiEngineRuntime[SshTunnel] = MultiEngineRuntime(
        engines,
        open_port,
        tunnels.release,
        on_host=on_host,
        tunnelled=list(targets),  # ssh hosts: unix:// ones are engines on this machine
        clock=clock,
    )
    return HostsRuntime(runtime, tunnels, probes, ssh_engines)


class RefusedEngine:
    """The engine of a host the app does not drive yet: every call says why."""

    def __init__(self, name: str, how: str) -> None:
        self.name = name
        self.how = how

    def _refuse(self) -> NoReturn:
        raise HostUnreachableError(
            f"host {self.name} is reached by {self.how}, which the app does not drive yet "
            "(only ssh:// and unix:// hosts run models)",
            f"Give {self.name} an ssh://user@host url in `hosts:`.",
            host=self.name,
        )

    async def list_models(self) -> list[ContainerInfo]:
        self._refuse()

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        self._refuse()

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        self._refuse()

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self._refuse()

    async def stop(self, container_id: str, timeout: float) -> None:
        self._refuse()

    async def remove(self, container_id: str) -> None:
        self._refuse()

    async def logs(self, container_id: str, tail: int) -> list[str]:
        self._refuse()

    def follow_logs(self, container_id: str, tail: int = 0) -> AsyncIterator[str]:
        return self._refused_stream()

    def events(self) -> AsyncIterator[RuntimeEvent]:
        return self._refused_stream()

    async def _refused_stream(self) -> AsyncIterator[Any]:
        nothing: tuple[Any, ...] = ()
        for item in nothing:  # an async generator that fails when first read
            yield item
        self._refuse()

    async def close(self) -> None:
        return None
