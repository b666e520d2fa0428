"""The Docker engine of an ``ssh://`` host, as a ``ContainerRuntime``: the SDK through a tunnel.

The docker SDK's own ``ssh://`` needs paramiko and takes neither a key file nor ssh options, so
:class:`SshEngine` asks the host for its engine's socket (its ``DOCKER_HOST`` there, else
``/var/run/docker.sock``), opens an :class:`~ryx_desktop.adapters.ssh_tunnel.SshTunnel` to that
socket (the tunnel watches itself and reopens when it drops) and drives a ``DockerRuntime`` on
the tunnel's local socket. All of that happens on first use, off the caller's path, and again
after a failure to connect: building one never blocks and never fails.

The tunnel's ssh is the host's connection master (``ControlMaster``, with a control socket in a
private folder): :meth:`SshEngine.run` runs commands (``nvidia-smi``) as sessions of that same
connection while it is up, with no new login each time, and over a connection of their own when
it is not.

Errors name the host: an engine that does not answer behind a working SSH connection, or an SSH
connection that cannot be made, are ``HostUnreachableError`` with the host's name and a hint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.host_check import remote_docker_socket
from ryx_desktop.adapters.remote_gpu import CommandRunner, local_runner
from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel
from ryx_desktop.core.errors import DockerUnavailableError, HostUnreachableError, RyxError
from ryx_desktop.core.ports import ContainerInfo, PullProgress, RuntimeEvent
from ryx_desktop.core.spec import LOCAL_HOST, ContainerSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long one try to reach the host over SSH may take.
CONNECT_TIMEOUT = 15.0


class SshEngine:
    """``ContainerRuntime`` of host ``name``'s engine, reached over SSH at ``target``."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        *,
        runner: CommandRunner = local_runner,
        executor: concurrent.futures.Executor | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.name = name
        self.target = target
        self._runner = runner
        self._executor = executor
        self._connect_timeout = connect_timeout
        self._lock = asyncio.Lock()
        self._tunnel: SshTunnel | None = None
        self._inner: DockerRuntime | None = None
        self._closed = False
        # The master's control socket: a short path (unix sockets allow ~107 bytes).
        self._control_dir = tempfile.mkdtemp(prefix="ryx-cm-")
        control = f"ControlPath={Path(self._control_dir, 'cm')}"
        self._master = _with_options(target, "ControlMaster=auto", control, "ControlPersist=no")
        #: Sessions of the master's connection while it is up; a connection of their own if not.
        self._sessions = _with_options(target, "ControlMaster=no", control)

    async def run(self, argv: list[str]) -> tuple[int, str, str]:
        """Run ``argv`` on the host (a ``CommandRunner``): exit status, stdout, stderr."""
        return await self._runner(self._sessions.command_argv(*argv))

    @property
    def tunnel(self) -> SshTunnel | None:
        """The tunnel to the engine's socket, once opened."""
        return self._tunnel

    async def _runtime(self) -> DockerRuntime:
        async with self._lock:
            if self._closed:
                raise HostUnreachableError(f"host {self.name} was let go", host=self.name)
            if self._inner is not None:
                return self._inner
            options = (f"ConnectTimeout={max(1, int(self._connect_timeout))}",)
            socket_path = await remote_docker_socket(self._sessions, self._runner, options)
            tunnel = SshTunnel(self._master, socket_path, open_timeout=self._connect_timeout)
            tunnel.add_listener(self._on_tunnel)
            try:
                await tunnel.open()
            except BaseException:
                await tunnel.close()
                raise
            self._tunnel = tunnel
            self._inner = DockerRuntime(
                tunnel.url,
                address=f"{self.target.url} (unix://{socket_path} there)",
                executor=self._executor,
                check_model_paths=False,
            )
            log.info("host %s: Docker engine reached through %s", self.name, tunnel.what)
            return self._inner

    def _on_tunnel(self, tunnel: SshTunnel) -> None:
        # A master that died (SIGKILL, a dropped link) leaves its control socket behind; the
        # reopened tunnel would find it taken and run without multiplexing.
        if not tunnel.up:
            Path(self._control_dir, "cm").unlink(missing_ok=True)

    def _convert(self, error: RyxError) -> RyxError:
        if isinstance(error, DockerUnavailableError):
            tunnel = self._tunnel
            why = tunnel.last_error.message if tunnel and tunnel.last_error else error.message
            return HostUnreachableError(
                f"the Docker engine of host {self.name} does not answer ({why})",
                f"Check that Docker runs on {self.name} (`sudo systemctl start docker` there) "
                f"and that `{self.target.manual_command()} docker info` works.",
                host=self.name,
            )
        return error

    async def _call(self, use: Callable[[DockerRuntime], Awaitable[T]]) -> T:
        runtime = await self._runtime()
        try:
            return await use(runtime)
        except RyxError as error:
            converted = self._convert(error)
            if converted is error:
                raise
            raise converted from error

    # ---- ContainerRuntime --------------------------------------------------------------------

    async def list_models(self) -> list[ContainerInfo]:
        return await self._call(lambda r: r.list_models())

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        await self._call(lambda r: r.ensure_image(image, on_progress))

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        return await self._call(lambda r: r.start(spec))

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        return await self._call(lambda r: r.inspect(container_id))

    async def stop(self, container_id: str, timeout: float) -> None:
        await self._call(lambda r: r.stop(container_id, timeout))

    async def remove(self, container_id: str) -> None:
        await self._call(lambda r: r.remove(container_id))

    async def logs(self, container_id: str, tail: int) -> list[str]:
        return await self._call(lambda r: r.logs(container_id, tail))

    def follow_logs(self, container_id: str, tail: int = 0) -> AsyncIterator[str]:
        return self._stream(lambda r: r.follow_logs(container_id, tail))

    def events(self) -> AsyncIterator[RuntimeEvent]:
        return self._stream(lambda r: r.events())

    async def _stream(
        self, open_stream: Callable[[DockerRuntime], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        runtime = await self._runtime()
        stream = open_stream(runtime)
        try:
            async for item in stream:
                yield item
        except RyxError as error:
            converted = self._convert(error)
            if converted is error:
                raise
            raise converted from error
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RyxError):
                    await aclose()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            inner, self._inner = self._inner, None
            tunnel, self._tunnel = self._tunnel, None
        if inner is not None:
            await inner.close()
        if tunnel is not None:
            await tunnel.close()
        await asyncio.to_thread(shutil.rmtree, self._control_dir, True)


def _with_options(target: SshTarget, *options: str) -> SshTarget:
    """``target`` with more ``-o`` options (after its own: ssh keeps the first value given)."""
    return dataclasses.replace(target, options=(*target.options, *options))
