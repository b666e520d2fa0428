"""SSH tunnels to remote hosts, opened and watched with the system ``ssh`` client.

Containers on a remote host publish on that host's ``127.0.0.1`` only; ryx-desktop reaches
them through local forwards it opens itself. :class:`SshTunnel` runs
``ssh -N -o ExitOnForwardFailure=yes -o BatchMode=yes -L ...`` as an asyncio subprocess for one
forward:

* to a TCP port on the remote's loopback (``remote=8001``): the local end is
  ``127.0.0.1:<local_port>``, :attr:`SshTunnel.url` is ``http://127.0.0.1:<local_port>``;
* to a unix socket there (``remote="/var/run/docker.sock"``, the remote Docker engine): the
  local end is a socket in a private folder, :attr:`SshTunnel.url` is ``unix://<path>``, a
  ``base_url`` for the docker SDK (``DockerRuntime(tunnel.url, address=target.url)``).

``open()`` returns once the local end accepts connections (ssh binds it only after the login
succeeded), or raises :class:`HostUnreachableError` naming the host and ssh's own reason. Then a
task watches the process: when ssh exits (the connection dropped, the keepalives went
unanswered, the process was killed) the tunnel is down and is reopened with backoff, on the same
local port, until ``close()``. Listeners hear every change of :attr:`SshTunnel.up`.

:class:`TunnelSet` shares one tunnel per (target, remote end) between its users, counting them.

Nothing here blocks the event loop. A tunnel's ``ssh`` gets ``PR_SET_PDEATHSIG`` (Linux), so it
ends with the thread that started it (the event loop's) even when ryx-desktop is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.core.errors import HostUnreachableError

#: Where a Docker engine listens on a host when nothing else is said.
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"

#: How often the local end is tried while a tunnel opens.
_POLL = 0.05
#: How long one try of the local end may take.
_PROBE_TIMEOUT = 1.0
#: How long ssh gets to exit on SIGTERM before SIGKILL.
_END_TIMEOUT = 3.0
#: How long the rest of ssh's stderr is read after it exited.
_DRAIN_TIMEOUT = 1.0
_STDERR_LINES = 20
_MAX_REASON = 300

Listener = Callable[["SshTunnel"], None]


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the forked child, before exec: SIGTERM when the thread that started it ends."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _SshProcess:
    """One running ``ssh``: its exit as a future, the last lines of its stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: deque[str] = deque(maxlen=_STDERR_LINES)
        self.exited: asyncio.Future[int] = asyncio.ensure_future(process.wait())
        self._reader = asyncio.ensure_future(self._read())

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        stream = self.process.stderr
        if stream is None:
            return
        pending = b""
        while chunk := await stream.read(4096):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self._keep(complete)
            pending = pending[-4096:]
        self._keep([pending])

    def _keep(self, raw_lines: list[bytes]) -> None:
        for raw in raw_lines:
            text = raw.decode(errors="replace").strip()
            if text:
                self.lines.append(text)

    async def drained(self) -> None:
        """Wait (briefly) until ssh's stderr is read to its end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), _DRAIN_TIMEOUT)

    def reason(self) -> str:
        """Why ssh failed, in its own words (its last lines, channel chatter left out)."""
        said = [
            line.removeprefix("ssh: ")
            for line in self.lines
            if not line.startswith(("channel ", "Warning: Permanently added"))
        ]
        if said:
            text = "; ".join(said[-3:]).rstrip(".")
        elif self.process.returncode is not None and self.process.returncode < 0:
            text = f"ssh was ended by signal {-self.process.returncode}"
        elif self.process.returncode is not None:
            text = f"ssh exited with status {self.process.returncode}"
        else:
            text = "ssh gave no reason"
        return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"

    async def end(self) -> None:
        """SIGTERM ssh (and its process group: a ProxyCommand), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), _END_TIMEOUT)
        await asyncio.shield(self.exited)
        await self.drained()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass(eq=False)
class _Shared:
    tunnel: SshTunnel
    users: int = 0


class SshTunnel:
    """One local forward to ``remote`` on ``target``, reopened while it is wanted.

    ``remote`` is a TCP port on the remote's ``remote_host`` (its loopback by default) or the
    absolute path of a unix socket there. ``local_port`` (TCP) or ``local_socket`` (unix) fix
    the local end; by default a free port, or a socket in a private folder made at ``open()``.
    ``open_timeout`` bounds one try to open; ``keepalive`` is ssh's ``ServerAliveInterval``
    (three unanswered ones end the connection); reopening waits ``backoff[0]`` seconds, doubling
    up to ``backoff[1]``, back to the first once a tunnel stayed up ``stable_after`` seconds.
    """

    def __init__(
        self,
        target: SshTarget,
        remote: int | str,
        *,
        remote_host: str = "127.0.0.1",
        local_port: int | None = None,
        local_socket: str | os.PathLike[str] | None = None,
        open_timeout: float = 15.0,
        keepalive: int = 5,
        backoff: tuple[float, float] = (0.5, 15.0),
        stable_after: float = 10.0,
    ) -> None:
        self.target = target
        self.remote = remote
        self._own_folder: Path | None = None
        if isinstance(remote, int):
            if not 1 <= remote <= 65535:
                raise ValueError(f"remote port {remote} must be from 1 to 65535")
            if local_socket is not None:
                raise ValueError("a forward to a port has a local port, not a local socket")
            self._local_port: int | None = local_port or free_local_port()
            self._local_socket: Path | None = None
            self._spec = f"127.0.0.1:{self._local_port}:{remote_host}:{remote}"
        else:
            if not remote.startswith("/") or ":" in remote:
                raise ValueError(f"remote socket {remote!r} must be an absolute path without ':'")
            if local_port is not None:
                raise ValueError("a forward to a socket has a local socket, not a local port")
            self._local_port = None
            if local_socket is None:
                self._own_folder = Path(tempfile.gettempdir()) / f"ryx-ssh-{secrets.token_hex(6)}"
                self._local_socket = self._own_folder / "forward.sock"
            else:
                self._local_socket = Path(local_socket)
            if ":" in str(self._local_socket):
                raise ValueError(f"local socket {self._local_socket} must not contain ':'")
            self._spec = f"{self._local_socket}:{remote}"
        self._open_timeout = open_timeout
        self._keepalive = keepalive
        self._backoff = backoff
        self._stable_after = stable_after
        self._lock = asyncio.Lock()
        self._process: _SshProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closed = False
        self._up = False
        self._up_event = asyncio.Event()
        self._last_error: HostUnreachableError | None = None
        self._listeners: list[Listener] = []
        #: How many times ssh was started and its forward came up (1 after ``open()``).
        self.opens = 0

    # ---- what it is ---------------------------------------------------------------------------

    @property
    def local_port(self) -> int | None:
        """The local TCP port (None for a forward to a socket)."""
        return self._local_port

    @property
    def local_socket(self) -> Path | None:
        """The local unix socket (None for a forward to a port)."""
        return self._local_socket

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` for a port, ``unix://<path>`` for a socket."""
        if self._local_socket is not None:
            return f"unix://{self._local_socket}"
        return f"http://127.0.0.1:{self._local_port}"

    @property
    def what(self) -> str:
        """The remote end for messages: ``port 8001`` or ``/var/run/docker.sock``."""
        return f"port {self.remote}" if isinstance(self.remote, int) else str(self.remote)

    @property
    def up(self) -> bool:
        """Whether the forward is open now."""
        return self._up

    @property
    def last_error(self) -> HostUnreachableError | None:
        """Why the tunnel is down (None while up, or before the first try)."""
        return self._last_error

    @property
    def pid(self) -> int | None:
        """The running ``ssh``'s pid (None while none runs)."""
        process = self._process
        return None if process is None or process.process.returncode is not None else process.pid

    @property
    def closed(self) -> bool:
        return self._closed

    def argv(self) -> list[str]:
        """The ``ssh`` command line this tunnel runs."""
        options = [
            "ExitOnForwardFailure=yes",
            f"ServerAliveInterval={self._keepalive}",
            "ServerAliveCountMax=3",
            f"ConnectTimeout={max(1, int(self._open_timeout))}",
            "ControlMaster=no",  # our own connection, not a multiplexed one that outlives us
            "ControlPath=none",
            "StreamLocalBindUnlink=yes",  # a socket left by an ended ssh is replaced
        ]
        return [*self.target.base_argv(*options), "-N", "-L", self._spec, "--", self.target.host]

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(tunnel)`` whenever it goes up or down; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # ---- opening and closing ------------------------------------------------------------------

    async def open(self) -> None:
        """Open the forward and watch it; ``HostUnreachableError`` when it cannot be opened.

        Opening an open tunnel does nothing; a failed open leaves nothing running, and may be
        tried again.
        """
        async with self._lock:
            if self._closed:
                raise RuntimeError("this tunnel was closed; make a new one")
            if self._watch is not None:
                return
            if self._own_folder is not None:
                await asyncio.to_thread(self._own_folder.mkdir, mode=0o700)
            try:
                self._process = await self._start()
            except HostUnreachableError as error:
                self._set_down(error)
                if self._own_folder is not None:
                    await asyncio.to_thread(shutil.rmtree, self._own_folder, True)
                raise
            self._set_up()
            self._watch = asyncio.create_task(
                self._watch_and_reopen(), name=f"ssh tunnel {self.target.name} {self.what}"
            )

    async def wait_up(self, timeout: float) -> None:
        """Return once the tunnel is up; ``HostUnreachableError`` (why it is down) after
        ``timeout`` seconds, or at once when it was never opened or is closed."""
        if self._up:
            return
        if self._watch is None:
            raise self._copy(self._last_error) or self._error(
                f"the SSH tunnel to {self.target.name} for {self.what} is not open"
            )
        try:
            await asyncio.wait_for(self._up_event.wait(), timeout)
        except TimeoutError:
            raise self._copy(self._last_error) or self._error(
                f"the SSH tunnel to {self.target.name} for {self.what} did not come back "
                f"within {timeout:g} s"
            ) from None

    async def close(self) -> None:
        """Stop watching and end ssh; the private socket folder is removed. Idempotent."""
        self._closed = True
        async with self._lock:
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            process, self._process = self._process, None
            if process is not None:
                await process.end()
            if self._own_folder is not None:
                await asyncio.to_thread(shutil.rmtree, self._own_folder, True)
            was_up = self._up
            self._up = False
            self._up_event.clear()
            if was_up:
                self._tell()

    # ---- inside -------------------------------------------------------------------------------

    async def _start(self) -> _SshProcess:
        """Run ssh and wait until the local end accepts; ends it again on any failure."""
        argv = self.argv()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # signals for the terminal are not its
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError:
            raise self._error(
                f"cannot reach {self.target.name}: the ssh client {argv[0]!r} is not installed",
                "Install the OpenSSH client (`sudo apt install openssh-client`).",
            ) from None
        except OSError as exc:
            raise self._error(
                f"cannot reach {self.target.name}: running {argv[0]!r} failed ({exc.strerror})"
            ) from None
        ssh = _SshProcess(process)
        try:
            await self._wait_forwarding(ssh)
        except BaseException:
            await ssh.end()
            raise
        return ssh

    async def _wait_forwarding(self, ssh: _SshProcess) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._open_timeout
        while True:
            if ssh.exited.done():
                await ssh.drained()
                raise self._error(f"cannot reach {self.target.name} over SSH: {ssh.reason()}")
            if await self._accepts() and not ssh.exited.done():
                return
            if loop.time() > deadline:
                raise self._error(
                    f"cannot reach {self.target.name} over SSH: no forward to {self.what} within "
                    f"{self._open_timeout:g} s ({ssh.reason()})"
                )
            await asyncio.wait({ssh.exited}, timeout=_POLL)

    async def _accepts(self) -> bool:
        """Whether the local end takes a connection now."""
        try:
            if self._local_socket is not None:
                _, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self._local_socket)), _PROBE_TIMEOUT
                )
            else:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self._local_port), _PROBE_TIMEOUT
                )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _watch_and_reopen(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff[0]
        while True:
            process = self._process
            assert process is not None
            began = loop.time()
            await asyncio.shield(process.exited)
            await process.drained()
            self._process = None
            if loop.time() - began >= self._stable_after:
                delay = self._backoff[0]
            self._set_down(
                self._error(
                    f"the SSH tunnel to {self.target.name} for {self.what} dropped: "
                    f"{process.reason()}"
                )
            )
            while self._process is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                try:
                    self._process = await self._start()
                except HostUnreachableError as error:
                    self._set_down(error)
            self._set_up()

    def _set_up(self) -> None:
        self.opens += 1
        self._up = True
        self._last_error = None
        self._up_event.set()
        self._tell()

    def _set_down(self, error: HostUnreachableError) -> None:
        changed = self._up or self._last_error is None or error.message != self._last_error.message
        self._up = False
        self._last_error = error
        self._up_event.clear()
        if changed:
            self._tell()

    def _tell(self) -> None:
        for listener in list(self._listeners):
            listener(self)

    def _error(self, message: str, hint: str | None = None) -> HostUnreachableError:
        if hint is None:
            hint = (
                f"Check that {self.target.name} is up and that `{self.target.manual_command()}` "
                "works without a prompt (its host key in known_hosts, our key in its "
                "authorized_keys)."
            )
        return HostUnreachableError(message, hint, host=self.target.name)

    @staticmethod
    def _copy(error: HostUnreachableError | None) -> HostUnreachableError | None:
        if error is None:
            return None
        return HostUnreachableError(error.message, error.hint, host=error.host)


class TunnelSet:
    """Tunnels shared by ``(target, remote)``: :meth:`acquire` opens one or hands out the open
    one, :meth:`release` closes it when its last user let go, :meth:`close` closes them all.

    ``factory(target, remote)`` makes a tunnel (default: :class:`SshTunnel` with its defaults).
    """

    def __init__(self, factory: Callable[[SshTarget, int | str], SshTunnel] = SshTunnel) -> None:
        self._factory = factory
        self._shared: dict[tuple[SshTarget, int | str], _Shared] = {}

    def find(self, target: SshTarget, remote: int | str) -> SshTunnel | None:
        shared = self._shared.get((target, remote))
        return None if shared is None else shared.tunnel

    def tunnels(self) -> list[SshTunnel]:
        return [shared.tunnel for shared in self._shared.values()]

    async def acquire(self, target: SshTarget, remote: int | str) -> SshTunnel:
        """The open tunnel to ``remote`` on ``target``, opened first when there is none;
        ``HostUnreachableError`` when it cannot be opened (then nothing is kept)."""
        key = (target, remote)
        shared = self._shared.get(key)
        if shared is None:
            shared = _Shared(self._factory(target, remote))
            self._shared[key] = shared
        shared.users += 1
        try:
            await shared.tunnel.open()
        except BaseException:
            await self._let_go(key, shared)
            raise
        return shared.tunnel

    async def release(self, tunnel: SshTunnel) -> None:
        """One user less of ``tunnel``; closed with the last one."""
        key = (tunnel.target, tunnel.remote)
        shared = self._shared.get(key)
        if shared is None or shared.tunnel is not tunnel:
            return
        await self._let_go(key, shared)

    async def _let_go(self, key: tuple[SshTarget, int | str], shared: _Shared) -> None:
        shared.users -= 1
        if shared.users > 0:
            return
        if self._shared.get(key) is shared:
            del self._shared[key]
        await shared.tunnel.close()

    async def close(self) -> None:
        """Close every tunnel, whoever still uses it."""
        shared, self._shared = list(self._shared.values()), {}
        await asyncio.gather(*(entry.tunnel.close() for entry in shared))
