"""A "remote host" for tests: a network namespace with a Docker engine and an sshd of its own.

``RemoteHost(name, workdir)`` makes, at ``start()``:

* the network namespace ``ryxh-<name>`` (``ip netns add``) with its loopback up: the host's own
  ``127.0.0.1``, which this machine's ``127.0.0.1`` is not;
* a veth pair joining it to this machine: ``ryxh-<name>`` here and ``eth0`` there, on a free
  ``/30`` of :data:`LINK_POOL` (this end the first address, :attr:`RemoteHost.address` the
  second), both up;
* an :class:`~tests.support.extra_dockerd.ExtraDockerd` run inside the namespace (its bridge
  too), so that a container publishing ``127.0.0.1:P`` listens on the namespace's loopback only;
* a :class:`~tests.support.sshd.TestSshd` run inside the namespace on :attr:`RemoteHost.address`,
  whose sessions get ``DOCKER_HOST=unix://<the engine's socket>``: ``ssh -L P:127.0.0.1:P``
  through it reaches the container's port, and a forward to the engine's socket reaches the
  engine, as with a real remote host.

The engine's socket is a file on this machine's file system, so tests may also use it directly
(:attr:`RemoteHost.docker_host`) for setup, such as loading the fake image. Commands can be run
in the namespace with :meth:`RemoteHost.run_in_netns` (no ssh involved).

Names hold this machine's limits: ``name`` is 1-9 of ``a-z0-9-`` (interface names have at most
15 characters); callers add their pid to it so that parallel test runs never share one.
``close()`` removes exactly what was made, in reverse order: the sshd, the engine (its
containers, processes, mounts, bridge), the veth pair and the namespace; it checks that no
process is left in the namespace. Every wait is on a condition with a deadline. Root is
needed, as for the engine and the sshd themselves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ryx_desktop.adapters.ssh_target import SshTarget
from tests.support.extra_dockerd import (
    ExtraDockerd,
    host_lock,
    link_exists,
    netns_prefix,
    process_alive,
    used_networks,
    wait_for_condition,
)
from tests.support.sshd import TestSshd

NETNS_PREFIX = "ryxh-"
#: The veth end inside the namespace.
INSIDE_LINK = "eth0"
#: Where the links' networks are taken from, one /30 per host.
LINK_POOL = ipaddress.IPv4Network("10.214.0.0/16")
NETNS_DIR = Path("/run/netns")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,8}")


class RemoteHostError(RuntimeError):
    """The remote host could not be made, or not be cleaned up."""


class RemoteHost:
    """One "remote host": ``start()``, ``kill_engine()``, ``restart_engine()``, ``close()``.

    ``name`` (1-9 of ``a-z0-9-``) names its namespace and this end of its link
    ``ryxh-<name>``, and its engine (bridge ``ryxbr-<name>``, inside the namespace).
    Everything on disk goes under ``workdir`` (``engine/`` and ``sshd/``), which the caller
    removes after ``close()`` (the logs stay there until then). ``live_restore`` is the
    engine's (see :class:`ExtraDockerd`). Also a context manager.
    """

    def __init__(
        self,
        name: str,
        workdir: Path | str,
        *,
        live_restore: bool = False,
        engine_start_timeout: float = 60.0,
        engine_stop_timeout: float = 60.0,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"remote host name {name!r}: 1-9 characters of a-z, 0-9 and '-'")
        self.name = name
        self.netns = f"{NETNS_PREFIX}{name}"
        #: This machine's end of the link (the other end is ``eth0`` in the namespace).
        self.link = f"{NETNS_PREFIX}{name}"
        self.workdir = Path(workdir).resolve()
        self.engine = ExtraDockerd(
            name,
            None,
            self.workdir / "engine",
            live_restore=live_restore,
            start_timeout=engine_start_timeout,
            stop_timeout=engine_stop_timeout,
            netns=self.netns,
        )
        self._network: ipaddress.IPv4Network | None = None
        self._sshd: TestSshd | None = None
        self._made_netns = False
        self._made_link = False
        self._netns_inode: int | None = None

    # ---- where things are --------------------------------------------------------------------

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The link's /30 (chosen at ``start()``)."""
        if self._network is None:
            raise RemoteHostError(f"remote host {self.name} is not started")
        return self._network

    @property
    def address(self) -> str:
        """The host's address, reachable from this machine: the sshd listens there."""
        return str(self.network.network_address + 2)

    @property
    def local_address(self) -> str:
        """This machine's address on the link."""
        return str(self.network.network_address + 1)

    @property
    def sshd(self) -> TestSshd:
        if self._sshd is None:
            raise RemoteHostError(f"remote host {self.name} is not started")
        return self._sshd

    @property
    def ssh_url(self) -> str:
        """``ssh://root@<address>:<port>``."""
        return self.sshd.url

    @property
    def identity_file(self) -> Path:
        """The client key the sshd accepts."""
        return self.sshd.identity_file

    @property
    def ssh_options(self) -> list[str]:
        """``ssh -o`` values (``Name=value``) that trust the sshd's host key without a prompt."""
        return self.sshd.client_options()

    @property
    def socket_path(self) -> Path:
        """The engine's unix socket (on this machine's file system, as on the host)."""
        return self.engine.socket_path

    @property
    def docker_host(self) -> str:
        """``unix://<the engine's socket>``: the engine, reached without ssh."""
        return self.engine.docker_host

    def target(self) -> SshTarget:
        """The :class:`SshTarget` of :attr:`ssh_url` with :attr:`identity_file` and
        :attr:`ssh_options`."""
        return SshTarget.from_url(
            self.ssh_url, identity_file=self.identity_file, options=self.ssh_options
        )

    def run_in_netns(self, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the host's network namespace (not over ssh); its output as text."""
        return subprocess.run(
            [*netns_prefix(self.netns), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def netns_pids(self) -> list[int]:
        """The processes that run in the host's network namespace now."""
        inode = self._netns_inode
        if inode is None:
            return []
        wanted = f"net:[{inode}]"
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                here = os.readlink(entry / "ns" / "net")
            except OSError:
                continue
            if here == wanted and process_alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    # ---- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        """Make the namespace and its link, start the engine, then the sshd."""
        if self._sshd is not None and self._sshd.running:
            raise RemoteHostError(f"remote host {self.name} runs already")
        if os.geteuid() != 0:
            raise RemoteHostError(
                "a remote host (network namespace) needs root: run the engine tests as root "
                "(CI does)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_network()
        self.engine.start()
        self._sshd = TestSshd(
            self.workdir / "sshd",
            env={"DOCKER_HOST": self.engine.docker_host},
            alias=f"ryx-remote-{self.name}",
            netns=self.netns,
            listen_address=self.address,
        )
        self._sshd.start()

    def kill_engine(self) -> None:
        """SIGKILL the host's dockerd, as a crash would (its containers keep running)."""
        self.engine.kill()

    def restart_engine(self) -> None:
        """Stop the engine (when it runs) and start it again; returns once it answers."""
        self.engine.restart()

    def close(self) -> None:
        """Remove everything made, in reverse order; ``RemoteHostError`` listing what failed."""
        problems: list[str] = []
        if self._sshd is not None:
            with _collect(problems, "closing its sshd"):
                self._sshd.close()
        with _collect(problems, "closing its engine"):
            self.engine.close()
        if self._made_netns:
            with _collect(problems, "ending the processes left in its namespace"):
                self._end_netns_processes()
        if self._made_link:
            with _collect(problems, f"deleting link {self.link}"):
                if link_exists(self.link):  # deleting either end deletes both
                    _ip("link", "del", self.link)
                self._made_link = False
        if self._made_netns:
            with _collect(problems, f"deleting namespace {self.netns}"):
                if (NETNS_DIR / self.netns).exists():
                    _ip("netns", "del", self.netns)
                self._made_netns = False
        if problems:
            raise RemoteHostError(
                f"cleaning up remote host {self.name} failed: " + "; ".join(problems)
            )

    def __enter__(self) -> RemoteHost:
        try:
            self.start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- inside ------------------------------------------------------------------------------

    def _end_netns_processes(self) -> None:
        """SIGKILL whatever still runs in the namespace (all of it started here: nothing
        else enters it) and wait until it is gone; a namespace with processes outlives
        ``ip netns del``."""
        leftovers = self.netns_pids()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for_condition(
            lambda: not self.netns_pids(),
            self.engine.stop_timeout,
            f"the processes {leftovers} in namespace {self.netns} to end",
        )

    def _make_network(self) -> None:
        """The namespace with its loopback up, and the veth pair on a free /30; once."""
        if self._made_netns:
            return
        with host_lock():
            if (NETNS_DIR / self.netns).exists():
                raise RemoteHostError(
                    f"network namespace {self.netns} exists already: another test's, or left by "
                    f"a crashed run (remove it with `ip netns del {self.netns}`)"
                )
            if link_exists(self.link):
                raise RemoteHostError(
                    f"link {self.link} exists already: another test's, or left by a crashed run "
                    f"(remove it with `ip link del {self.link}`)"
                )
            self._network = _free_link_network(used_networks())
            _ip("netns", "add", self.netns)
            self._made_netns = True
            self._netns_inode = (NETNS_DIR / self.netns).stat().st_ino
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip(
                "link",
                "add",
                self.link,
                "type",
                "veth",
                "peer",
                "name",
                INSIDE_LINK,
                "netns",
                self.netns,
            )
            self._made_link = True
            prefix = self.network.prefixlen
            _ip("addr", "add", f"{self.local_address}/{prefix}", "dev", self.link)
            _ip("-n", self.netns, "addr", "add", f"{self.address}/{prefix}", "dev", INSIDE_LINK)
            _ip("link", "set", self.link, "up")
            _ip("-n", self.netns, "link", "set", INSIDE_LINK, "up")


# ---- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _collect(problems: list[str], doing: str) -> Iterator[None]:
    """Run a cleanup step; note its failure and go on with the others."""
    try:
        yield
    except Exception as exc:
        problems.append(f"{doing}: {exc}")


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RemoteHostError("`ip` (iproute2) is needed to make a remote host") from None
    except subprocess.CalledProcessError as exc:
        raise RemoteHostError(f"`ip {' '.join(args)}` failed: {exc.stderr.strip()}") from None


def _free_link_network(used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in LINK_POOL.subnets(new_prefix=30):
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RemoteHostError(f"no free /30 left in {LINK_POOL}")
