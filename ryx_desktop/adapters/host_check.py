"""Checking each Docker engine of the config for ``ryx-desktop hosts``: reachable, version, GPUs.

:func:`check_hosts` checks the local engine and every host of ``hosts:`` at once, each within
its own deadline, so that one dead host holds up none of the others; :func:`check_host` checks
one. Neither raises for a host that cannot be reached: that is a :class:`HostReport` with
``reachable=False``, the reason in one sentence and a hint.

How each engine is reached:

* ``local``: the engine of the ``docker:`` section, as the app reaches it (``docker.host``, else
  ``DOCKER_HOST``, else the default socket); GPUs from NVML when that engine is on this machine.
* ``ssh://`` hosts: the system ``ssh`` client. One command reads ``DOCKER_HOST`` there (what
  ``docker`` over SSH honours; unset: ``/var/run/docker.sock``), which also tells whether the
  host answers at all; then an :class:`SshTunnel` forwards a private local socket to that
  engine's socket for a :class:`DockerRuntime` (closed afterwards), while ``nvidia-smi`` runs
  there through the same client (:class:`CommandGpuProbe`).
* ``unix://`` hosts: an engine on this machine, so its GPUs are this machine's (NVML).
* ``tcp://`` hosts: directly when ``insecure: true``; with ``tls:`` they are not checked yet
  (``DockerRuntime`` takes no TLS settings), and the report says so. Their GPUs are not read:
  GPUs are read over SSH.
* ``context:`` hosts: ``docker context inspect NAME`` gives the endpoint, then as above (an
  ``ssh://`` endpoint with the user's own ssh config).

The blocking docker SDK calls run on daemon threads of their own, so a call stuck on a host
that stopped answering keeps neither the event loop nor the process's exit waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ryx_desktop.adapters._docker_errors import DEFAULT_DOCKER_HOST
from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.adapters.remote_gpu import CommandGpuProbe, CommandRunner, local_runner
from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import DEFAULT_DOCKER_SOCKET, SshTunnel
from ryx_desktop.config import Config, HostConfig
from ryx_desktop.core.errors import DockerUnavailableError, HostUnreachableError, RyxError
from ryx_desktop.core.gpu import GpuReading
from ryx_desktop.core.host_report import (
    HostReport,
    gpus_of,
    has_gpu_runtime,
    host_names,
    models_on,
)
from ryx_desktop.core.nvidia_smi import NOT_FOUND_STATUS
from ryx_desktop.core.ports import ContainerStatus
from ryx_desktop.core.spec import LOCAL_HOST as LOCAL

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: How long one host may take to answer everything (seconds).
DEFAULT_TIMEOUT = 15.0
#: What ssh exits with when it failed itself (not the remote command).
SSH_FAILED = 255
_SSH_HINT = (
    "Check that {name} is up and that `{command}` works without a prompt "
    "(its host key in known_hosts, our key in its authorized_keys)."
)
_NO_SSH_GPUS = "GPUs are read over SSH; this host is reached over {scheme}://"
_MAX_REASON = 300

#: Reads this machine's GPUs.
LocalGpus = Callable[[], Awaitable[GpuReading]]


class _DaemonThreads(concurrent.futures.Executor):
    """Runs each call on a daemon thread of its own: a call stuck on a dead host is left
    behind when its host's deadline passes, and does not keep the process from exiting."""

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name="ryx-host-check", daemon=True).start()
        return future


@dataclasses.dataclass(frozen=True, slots=True)
class _EngineFacts:
    """What the engine told."""

    version: str
    runtimes: tuple[str, ...]
    gpu_runtime: bool
    containers_running: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Reach:
    """How an engine is reached: its url, and for ``ssh://`` the ssh client's target."""

    url: str
    shown: str
    target: SshTarget | None = None
    tls: bool = False

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0]


class _Once:
    """One reading of this machine's GPUs, shared by every host that needs it."""

    def __init__(self, read: LocalGpus) -> None:
        self._read = read
        self._task: asyncio.Future[GpuReading] | None = None

    async def __call__(self) -> GpuReading:
        if self._task is None:
            self._task = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._task)


async def read_local_gpus() -> GpuReading:
    """This machine's GPUs from NVML (a reading that says why when there are none)."""
    probe = NvmlGpuProbe(retry_every=None)
    try:
        return await probe.read()
    finally:
        await probe.close()


async def check_hosts(
    config: Config,
    environ: Mapping[str, str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    runner: CommandRunner = local_runner,
    local_gpus: LocalGpus = read_local_gpus,
) -> list[HostReport]:
    """Every engine of ``config`` checked at once: ``local`` first, then ``hosts:`` in order.

    ``runner`` runs ``ssh`` and ``docker context`` here; ``local_gpus`` reads this machine's
    GPUs (once, whichever hosts need them).
    """
    executor = _DaemonThreads()
    shared = _Once(local_gpus)
    checks = [
        check_host(
            name,
            None if name == LOCAL else config.hosts[name],
            environ=environ,
            docker_host=config.docker.host,
            models=models_on(config, name),
            timeout=timeout,
            runner=runner,
            local_gpus=shared,
            executor=executor,
        )
        for name in host_names(config)
    ]
    return list(await asyncio.gather(*checks))


async def check_host(
    name: str,
    host: HostConfig | None,
    *,
    environ: Mapping[str, str],
    docker_host: str | None = None,
    models: tuple[str, ...] = (),
    timeout: float = DEFAULT_TIMEOUT,
    runner: CommandRunner = local_runner,
    local_gpus: LocalGpus = read_local_gpus,
    executor: concurrent.futures.Executor | None = None,
) -> HostReport:
    """The report of one engine: ``host`` None is the local one (at ``docker_host``, else
    ``DOCKER_HOST``, else the default socket). Never raises for the host; after ``timeout``
    seconds the host counts as unreachable."""
    shown = _local_url(docker_host, environ) if host is None else _config_url(host)
    checker = _Checker(name, timeout, runner, local_gpus, executor or _DaemonThreads())
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            if host is None:
                report = await checker.local(docker_host, shown)
            else:
                report = await checker.remote(host, shown)
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError) and deadline.expired()
        report = _cut_short(name, shown, exc, timeout if timed_out else None)
    return dataclasses.replace(report, models=models)


def _cut_short(name: str, shown: str, exc: Exception, timeout: float | None) -> HostReport:
    """The report of a check that ended early: past its deadline (``timeout``), or a bug."""
    if timeout is not None:
        return HostReport(
            name,
            shown,
            False,
            reason=f"{name} did not answer within {timeout:g} s",
            hint=f"Check that {shown} is up and reachable from this machine.",
        )
    log.debug("checking host %s failed", name, exc_info=exc)
    return HostReport(
        name,
        shown,
        False,
        reason=f"checking {name} failed: {_one_line(str(exc)) or type(exc).__name__}",
        hint="This is a bug in ryx-desktop: please report it with this message.",
    )


def _local_url(docker_host: str | None, environ: Mapping[str, str]) -> str:
    return docker_host or environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def _config_url(host: HostConfig) -> str:
    return host.url if host.url is not None else f"context {host.context}"


class _Checker:
    """The checks of one host, with what they share (deadline, runner, GPU reading, threads)."""

    def __init__(
        self,
        name: str,
        timeout: float,
        runner: CommandRunner,
        local_gpus: LocalGpus,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.runner = runner
        self.local_gpus = local_gpus
        self.executor = executor
        #: ssh's ConnectTimeout: within the host's deadline, leaving time to say why.
        self.connect_timeout = max(1, int(timeout * 2 / 3))

    # ---- per kind ------------------------------------------------------------------------------

    async def local(self, docker_host: str | None, shown: str) -> HostReport:
        # As the app does: docker.host, else the docker SDK's own reading of the environment.
        runtime = DockerRuntime(docker_host, executor=self.executor, check_model_paths=False)
        if shown.startswith("unix://"):
            gpus: Awaitable[GpuReading] = self.local_gpus()
        else:
            gpus = _note(
                f"GPUs are read on this machine; the local engine at {shown} may be on another"
            )
        facts, reading = await asyncio.gather(self._facts(runtime), gpus)
        return self._report(shown, facts, reading)

    async def remote(self, host: HostConfig, shown: str) -> HostReport:
        try:
            reach = await self._reach(host)
        except RyxError as error:
            return self._unreachable(shown, error)
        if reach.target is not None:
            return await self._over_ssh(reach, reach.target)
        if reach.scheme == "tcp" and reach.tls:
            return HostReport(
                self.name,
                reach.shown,
                False,
                reason="checking a tcp:// engine with TLS is not supported by `hosts` yet",
                hint=f"Reach {self.name} over SSH instead (url: ssh://user@host), or check it "
                f"by hand with `docker --tlsverify -H {reach.url} info`.",
                gpus_note=_NO_SSH_GPUS.format(scheme=reach.scheme),
            )
        runtime = DockerRuntime(reach.url, executor=self.executor, check_model_paths=False)
        if reach.scheme == "unix":  # an engine on this machine: its GPUs are this machine's
            gpus: Awaitable[GpuReading] = self.local_gpus()
        else:
            gpus = _note(_NO_SSH_GPUS.format(scheme=reach.scheme))
        facts, reading = await asyncio.gather(self._facts(runtime), gpus)
        return self._report(reach.shown, facts, reading)

    async def _over_ssh(self, reach: _Reach, target: SshTarget) -> HostReport:
        try:
            socket_path = await remote_docker_socket(target, self.runner, self._ssh_options())
        except RyxError as error:
            return self._unreachable(reach.shown, error)
        facts, reading = await asyncio.gather(
            self._facts_through_tunnel(target, socket_path, reach.url), self._ssh_gpus(target)
        )
        return self._report(reach.shown, facts, reading)

    # ---- the pieces --------------------------------------------------------------------------

    async def _reach(self, host: HostConfig) -> _Reach:
        if host.url is None:
            assert host.context is not None  # the config allows url or context
            return await self._context(host.context)
        target = None
        if host.kind == "ssh":
            ssh = host.ssh
            target = SshTarget.from_url(
                host.url,
                identity_file=None if ssh is None else ssh.identity_file,
                config_file=None if ssh is None else ssh.config_file,
                options=() if ssh is None else ssh.options,
            )
        return _Reach(host.url, host.url, target, tls=host.tls is not None)

    async def _context(self, context: str) -> _Reach:
        """The endpoint of a Docker context, from ``docker context inspect``."""
        code, out, err = await self.runner(["docker", "context", "inspect", context])
        if code == NOT_FOUND_STATUS:
            raise RyxError(
                f"the docker command is not installed, so context {context!r} cannot be read",
                "Install the Docker CLI, or give the host a url: instead of context:.",
            )
        endpoint, tls = _context_endpoint(out) if code == 0 else (None, False)
        if endpoint is None:
            said = _last_line(err)
            if code != 0 and "not found" in said:
                reason = f"Docker has no context {context!r}"
            else:
                reason = f"the Docker context {context!r} could not be read ({said or 'no answer'})"
            raise RyxError(
                reason,
                "`docker context ls` lists the contexts; fix context: in the config, or give "
                "the host a url:.",
            )
        shown = f"context {context} ({endpoint})"
        scheme = endpoint.partition("://")[0]
        if scheme == "ssh":
            try:
                target = SshTarget.from_url(endpoint)
            except ValueError as exc:
                raise RyxError(
                    f"the Docker context {context!r} points at {endpoint}, which ssh cannot use "
                    f"({exc})",
                    "Fix the context (`docker context update`), or give the host a url:.",
                ) from None
            return _Reach(endpoint, shown, target)
        if scheme not in ("unix", "tcp"):
            raise RyxError(
                f"the Docker context {context!r} points at {endpoint}, which `hosts` cannot "
                "reach (only ssh://, unix:// and tcp://)",
                "Give the host a url: instead of context:.",
            )
        return _Reach(endpoint, shown, tls=tls)

    async def _facts_through_tunnel(
        self, target: SshTarget, socket_path: str, address: str
    ) -> _EngineFacts | RyxError:
        tunnel = SshTunnel(target, socket_path, open_timeout=self.connect_timeout)
        try:
            try:
                await tunnel.open()
            except HostUnreachableError as error:
                return error
            runtime = DockerRuntime(
                tunnel.url, address=address, executor=self.executor, check_model_paths=False
            )
            facts = await self._facts(runtime)
        finally:
            await tunnel.close()
        if isinstance(facts, DockerUnavailableError):
            # SSH works, so the engine is what is missing: name its socket, not the SDK's words.
            return DockerUnavailableError(
                f"no Docker engine answers at unix://{socket_path} on {target.name}",
                f"Start Docker on {self.name} (`sudo systemctl start docker` there); the socket "
                "is DOCKER_HOST there, else /var/run/docker.sock.",
            )
        return facts

    async def _facts(self, runtime: DockerRuntime) -> _EngineFacts | RyxError:
        """What the engine tells, or why it did not; the runtime is closed after an answer (a
        call cut by the deadline leaves it to its thread)."""
        result: _EngineFacts | RyxError
        try:
            info = await runtime.engine_info()
            containers = await runtime.list_models()
        except RyxError as error:
            result = error
        else:
            result = _EngineFacts(
                version=info.version,
                runtimes=info.runtimes,
                gpu_runtime=has_gpu_runtime(info.runtimes, info.cdi_devices),
                containers_running=sum(
                    1 for c in containers if c.status is ContainerStatus.RUNNING
                ),
            )
        await runtime.close()
        return result

    async def _ssh_gpus(self, target: SshTarget) -> GpuReading:
        options = self._ssh_options()

        async def run(argv: list[str]) -> tuple[int, str, str]:
            return await self.runner(target.command_argv(*argv, options=options))

        probe = CommandGpuProbe(run, timeout=self.timeout)
        try:
            return await probe.read()
        finally:
            await probe.close()

    def _ssh_options(self) -> tuple[str, ...]:
        return (f"ConnectTimeout={self.connect_timeout}",)

    # ---- the report --------------------------------------------------------------------------

    def _report(
        self, shown: str, facts: _EngineFacts | RyxError, reading: GpuReading
    ) -> HostReport:
        gpus, note = gpus_of(reading)
        if isinstance(facts, RyxError):
            return dataclasses.replace(self._unreachable(shown, facts), gpus=gpus, gpus_note=note)
        return HostReport(
            self.name,
            shown,
            True,
            engine_version=facts.version,
            runtimes=facts.runtimes,
            gpu_runtime=facts.gpu_runtime,
            gpus=gpus,
            gpus_note=note,
            containers_running=facts.containers_running,
        )

    def _unreachable(self, shown: str, error: RyxError) -> HostReport:
        hint = error.hint
        if (
            isinstance(error, DockerUnavailableError)
            and self.name != LOCAL
            and error.hint == DockerUnavailableError.hint  # the local engine's hint
        ):
            hint = (
                f"Start Docker on {self.name} (`sudo systemctl start docker` there), or check "
                f"its url: in the config."
            )
        return HostReport(
            self.name,
            shown,
            False,
            reason=error.message,
            hint=hint,
        )


async def remote_docker_socket(
    target: SshTarget, runner: CommandRunner, options: tuple[str, ...] = ()
) -> str:
    """The path of the engine's socket on ``target``: its ``DOCKER_HOST`` there (what
    ``docker`` over SSH honours), else ``/var/run/docker.sock``.

    ``runner`` runs the ``ssh`` command here; ``options`` are more ``-o`` values. This is the
    first SSH connection to a host, so ``HostUnreachableError`` (ssh's reason, a hint) says the
    host cannot be reached at all; ``RyxError`` when ``DOCKER_HOST`` there is not a unix socket.
    """
    argv = target.command_argv("printenv", "DOCKER_HOST", options=options)
    code, out, err = await runner(argv)
    if code == NOT_FOUND_STATUS and err.startswith(f"{argv[0]}: "):
        raise HostUnreachableError(
            f"cannot reach {target.name}: the ssh client {argv[0]!r} is not installed",
            "Install the OpenSSH client (`sudo apt install openssh-client`).",
            host=target.name,
        )
    if code == SSH_FAILED:
        raise HostUnreachableError(
            f"cannot reach {target.name} over SSH: {_ssh_reason(err)}",
            _SSH_HINT.format(name=target.name, command=target.manual_command()),
            host=target.name,
        )
    value = out.strip() if code == 0 else ""
    if not value:
        return DEFAULT_DOCKER_SOCKET
    path = value.removeprefix("unix://")
    if value.startswith("unix://") and path.startswith("/") and ":" not in path:
        return path
    raise RyxError(
        f"DOCKER_HOST on {target.name} is {value}: `hosts` reaches an engine over SSH "
        "through its unix socket only",
        f"Unset DOCKER_HOST for that user on {target.name}, or point it at the engine's "
        "unix socket (unix:///var/run/docker.sock).",
    )


async def _note(message: str) -> GpuReading:
    """A reading with no GPUs that says why."""
    return GpuReading(message=message)


def _context_endpoint(out: str) -> tuple[str | None, bool]:
    """The docker endpoint of ``docker context inspect``'s JSON, and whether it uses TLS."""
    try:
        data: Any = json.loads(out)
    except ValueError:
        return None, False
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None, False
    context = data[0]
    endpoint = (context.get("Endpoints") or {}).get("docker") or {}
    host = endpoint.get("Host") if isinstance(endpoint, dict) else None
    if not isinstance(host, str) or not host:
        return None, False
    material = context.get("TLSMaterial") or {}
    tls = bool(isinstance(material, dict) and material.get("docker"))
    return host, tls


def _ssh_reason(stderr: str) -> str:
    """Why ssh failed, in its own words (its last lines, warnings left out)."""
    said = [
        line.strip().removeprefix("ssh: ")
        for line in stderr.splitlines()
        if line.strip() and not line.strip().startswith("Warning: Permanently added")
    ]
    text = "; ".join(said[-2:]).rstrip(".") if said else "ssh gave no reason"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _one_line(lines[-1]) if lines else ""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
