"""Extra Docker engines for tests: a dockerd of the test's own beside the machine's engine.

``ExtraDockerd(name, subnet, workdir)`` runs ``dockerd`` with everything of its own under
``workdir`` (socket, data root, exec root with its managed containerd, pid file, log, an empty
daemon config so that ``/etc/docker/daemon.json`` is not read) and its own bridge
``ryxbr-<name>`` on ``subnet`` (a free ``10.213.N.0/24`` when None), so that several can run at
once next to the main engine without touching it:

* never ``--bridge none``: that makes dockerd delete ``docker0``, the main engine's bridge;
* ``--iptables=false``: a dockerd with iptables on deletes and rebuilds the ``DOCKER`` chains
  that the main engine's published ports live in. Ports published on ``127.0.0.1`` still work:
  Docker's userland proxy (``docker-proxy``, on by default) listens on the loopback port and
  connects to the container over the bridge, which needs neither NAT nor forwarding;
* ``--ip-forward=false``: it changes no host setting (containers need no route out; nothing
  beyond this machine is reachable in CI anyway).

``netns`` (the name of a network namespace made with ``ip netns add``) runs the engine inside
that namespace: dockerd is started through ``nsenter --net=/run/netns/<netns>`` (the network
namespace only, not ``ip netns exec``, which would give each start a mount namespace of its
own: dockerd stays in this machine's, so its mounts are where ``close()`` looks for them, and
a dockerd started after ``kill()`` sees those of the shims and containers that outlived the
killed one), and its bridge is made, checked and deleted inside the
namespace (``ip -n <netns>``). Its ports published on ``127.0.0.1`` are then that namespace's
loopback, not this machine's; its socket is a file, usable from anywhere on this machine.

Every wait is on a condition with a deadline (the socket answering ``/_ping``, the process
exiting); nothing sleeps a fixed time. ``close()`` removes exactly what the engine made: its
containers (through the engine, by name), its processes (dockerd, then any containerd or shim
still naming its exec root, by pid), its mounts under ``workdir``, the bridge when it created
it, and its data and exec roots. Starting a dockerd needs root, as the engine itself does.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

BRIDGE_PREFIX = "ryxbr-"
#: Where free subnets are taken from, one /24 per engine.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,8}")  # bridge names: at most 15 characters
_LOG_TAIL = 40
_POLL = 0.05


class ExtraDockerdError(RuntimeError):
    """The extra engine could not be started, stopped or cleaned up."""


def wait_for_condition(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; ``ExtraDockerdError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ExtraDockerdError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL)


def link_exists(name: str) -> bool:
    """Whether a network interface called ``name`` exists."""
    return Path("/sys/class/net", name).exists()


def ping(socket_path: Path | str, timeout: float = 1.0) -> bool:
    """True when the engine on the unix socket ``socket_path`` answers ``GET /_ping`` with 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and answer.split(b" ", 2)[1:2] == [b"200"]


class ExtraDockerd:
    """One extra Docker engine: ``start()``, ``stop()``, ``kill()``, ``restart()``, ``close()``.

    ``name`` (1-9 of ``a-z0-9-``) names its bridge ``ryxbr-<name>``; ``subnet`` is the bridge's
    network (``"10.213.7.0/24"``; None: a free /24 of :data:`SUBNET_POOL`, chosen at the first
    start). ``live_restore`` keeps containers running while the engine is down (dockerd's
    ``--live-restore``); it may be changed between starts. ``netns`` runs it, and makes its
    bridge, in that network namespace (see the module's docstring). Also a context manager:
    ``with`` starts it and closes it.
    """

    def __init__(
        self,
        name: str,
        subnet: str | None,
        workdir: Path | str,
        *,
        live_restore: bool = False,
        dockerd: str = "dockerd",
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
        netns: str | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"engine name {name!r}: 1-9 characters of a-z, 0-9 and '-'")
        self.name = name
        self.bridge = f"{BRIDGE_PREFIX}{name}"
        self.subnet = ipaddress.IPv4Network(subnet) if subnet is not None else None
        self.workdir = Path(workdir).resolve()
        self.live_restore = live_restore
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._dockerd = dockerd
        self.netns = netns
        self._process: subprocess.Popen[bytes] | None = None
        self._created_bridge = False
        self._ever_started = False

    # ---- where things are --------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """The engine's address for ``DOCKER_HOST`` or ``docker.DockerClient(base_url=...)``."""
        return f"unix://{self.socket_path}"

    @property
    def data_root(self) -> Path:
        return self.workdir / "data"

    @property
    def exec_root(self) -> Path:
        return self.workdir / "exec"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    @property
    def pid(self) -> int | None:
        """The running dockerd's pid (None when it does not run)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether this object's dockerd process is alive (answering or not)."""
        return self._process is not None and self._process.poll() is None

    def answers(self) -> bool:
        """Whether the engine answers ``/_ping`` now."""
        return ping(self.socket_path)

    def log_tail(self, lines: int = _LOG_TAIL) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(self, timeout: int = 60) -> Any:
        """A ``docker.DockerClient`` of this engine; close it (``contextlib.closing``)."""
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=timeout)

    # ---- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        """Start dockerd; return once it answers ``/_ping`` (its containers are restored)."""
        if self.running:
            raise ExtraDockerdError(f"engine {self.name} runs already")
        if os.geteuid() != 0:
            raise ExtraDockerdError(
                "starting a Docker engine needs root: run the engine tests as root (CI does)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ensure_bridge()
        self._forget_dead_containerd()
        config = self.workdir / "daemon.json"
        config.write_text(json.dumps({}) + "\n")  # not /etc/docker/daemon.json
        command = [
            *netns_prefix(self.netns),
            self._dockerd,
            f"--config-file={config}",
            f"--host=unix://{self.socket_path}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.workdir / 'dockerd.pid'}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-forward=false",
            "--userland-proxy=true",
            f"--live-restore={'true' if self.live_restore else 'false'}",
        ]
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"  # docker-proxy
        env.pop("DOCKER_HOST", None)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C of the test run is not its signal
            )
        self._ever_started = True
        process = self._process
        try:
            wait_for_condition(
                lambda: process.poll() is not None or self.answers(),
                self.start_timeout,
                f"engine {self.name} to answer on {self.socket_path}",
            )
        except ExtraDockerdError:
            self._terminate(signal.SIGKILL)
            raise ExtraDockerdError(
                f"engine {self.name} did not answer in {self.start_timeout:g} s; its log:\n"
                + self.log_tail()
            ) from None
        if process.poll() is not None:
            raise ExtraDockerdError(
                f"engine {self.name}'s dockerd exited with {process.returncode}; its log:\n"
                + self.log_tail()
            )

    def stop(self) -> None:
        """SIGTERM, then wait for dockerd to exit (it stops its containers unless live-restore
        keeps them); SIGKILL if it has not exited within ``stop_timeout``."""
        if not self.running:
            return
        if not self._terminate(signal.SIGTERM):
            self._terminate(signal.SIGKILL)
            raise ExtraDockerdError(
                f"engine {self.name} did not stop in {self.stop_timeout:g} s after SIGTERM "
                "(killed); its log:\n" + self.log_tail()
            )

    def kill(self) -> None:
        """SIGKILL dockerd, as a crash would: its containerd and containers keep running."""
        if self.running:
            self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _forget_dead_containerd(self) -> None:
        """Remove the pid file of a managed containerd that died with a killed dockerd.

        dockerd reuses the containerd its pid file names while that pid exists, and a zombie
        exists until its parent reaps it: where PID 1 does not reap orphans (some sandboxes'
        init), the dockerd started after ``kill()`` would wait for a dead containerd forever.
        """
        pid_file = self.exec_root / "containerd" / "containerd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if not process_alive(pid):
            pid_file.unlink(missing_ok=True)

    def _terminate(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to dockerd and wait for it to exit; False when it did not in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return True
        process.send_signal(sig)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    # ---- containers --------------------------------------------------------------------------

    def remove_containers(self) -> list[str]:
        """Force-remove every container of this engine, by name; their names."""
        import docker.errors

        removed: list[str] = []
        with contextlib.closing(self.client()) as client:
            for container in client.containers.list(all=True, ignore_removed=True):
                with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile
                    client.api.remove_container(container.name, force=True, v=True)
                    removed.append(container.name)
        return removed

    # ---- cleaning up -------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this engine made; ``ExtraDockerdError`` listing what failed."""
        problems: list[str] = []
        if self._ever_started:
            if not self.running and self.leftover_pids():
                # Killed, or stopped with live-restore: containers may still run. Started
                # again without live-restore the engine stops them, then removes them.
                self.live_restore = False
                with _collect(problems, "restarting it to remove its containers"):
                    self.start()
            if self.running:
                with _collect(problems, "removing its containers"):
                    self.remove_containers()
                with _collect(problems, "stopping it"):
                    self.stop()
            with _collect(problems, "ending its leftover processes"):
                self._end_leftovers()
            with _collect(problems, "unmounting under its workdir"):
                self._unmount_all()
        if self._created_bridge:
            with _collect(problems, f"deleting bridge {self.bridge}"):
                if self._link_exists(self.bridge):  # a deleted namespace took it along
                    self._ip("link", "del", self.bridge)
                self._created_bridge = False
        for path in (self.data_root, self.exec_root):
            if path.exists():
                with _collect(problems, f"removing {path}"):
                    shutil.rmtree(path)
        for path in (self.socket_path, self.workdir / "dockerd.pid", self.workdir / "daemon.json"):
            path.unlink(missing_ok=True)
        if problems:
            raise ExtraDockerdError(
                f"cleaning up engine {self.name} failed: " + "; ".join(problems)
            )

    def __enter__(self) -> ExtraDockerd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def leftover_pids(self) -> list[int]:
        """Processes (its containerd, container shims) that still name this engine's exec root."""
        marker = os.fsencode(str(self.exec_root) + os.sep)
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry.name))
        return found

    def _end_leftovers(self) -> None:
        """SIGKILL what still runs from this engine: the containers under any shim first (they
        would outlive it), then the shims and containerd; wait until they are gone."""
        leftovers = self.leftover_pids()
        if not leftovers:
            return
        doomed = [*_children_of(set(leftovers)), *leftovers]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for_condition(
            lambda: not any(process_alive(pid) for pid in doomed),
            self.stop_timeout,
            f"engine {self.name}'s leftover processes {doomed} to end",
        )

    def _unmount_all(self) -> None:
        """Unmount what dockerd left mounted under ``workdir`` (its data root's own bind
        mount stays after it exits), innermost first."""
        for point in sorted(mounts_under(self.workdir), key=len, reverse=True):
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=True)

    # ---- the bridge --------------------------------------------------------------------------

    def _link_exists(self, name: str) -> bool:
        """Whether the engine's network namespace has an interface called ``name``."""
        if self.netns is None:
            return link_exists(name)
        shown = subprocess.run(
            ["ip", "-n", self.netns, "link", "show", "dev", name],
            capture_output=True,
            check=False,
        )
        return shown.returncode == 0

    def _ip(self, *args: str) -> None:
        """``ip`` in the engine's network namespace."""
        _ip(*(("-n", self.netns) if self.netns is not None else ()), *args)

    def _ensure_bridge(self) -> None:
        """Create ``ryxbr-<name>`` with the subnet's first address, once; a bridge of that name
        that this object did not create is refused (another engine's, or a crashed run's)."""
        if self._created_bridge:
            if self._link_exists(self.bridge):
                return
            self._created_bridge = False
        with host_lock():
            if self._link_exists(self.bridge):
                where = f"ip -n {self.netns}" if self.netns is not None else "ip"
                raise ExtraDockerdError(
                    f"bridge {self.bridge} exists already: another engine's, or left by a crashed "
                    f"run (remove it with `{where} link del {self.bridge}`)"
                )
            used = used_networks()
            if self.netns is not None:
                used += used_networks(self.netns)
            if self.subnet is None:
                self.subnet = _free_subnet(used)
            clash = [str(n) for n in used if n.overlaps(self.subnet)]
            if clash:
                raise ExtraDockerdError(
                    f"subnet {self.subnet} of engine {self.name} overlaps {', '.join(clash)}, "
                    "already on this machine: choose another"
                )
            gateway = next(self.subnet.hosts())
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._created_bridge = True
            self._ip("addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")


# ---- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _collect(problems: list[str], doing: str) -> Iterator[None]:
    """Run a cleanup step; note its failure and go on with the others."""
    try:
        yield
    except Exception as exc:
        problems.append(f"{doing}: {exc}")


def netns_prefix(netns: str | None) -> list[str]:
    """The command words that run a program in the network namespace ``netns`` (made with
    ``ip netns add``) and nothing else of it (``nsenter`` execs it: the pid stays the
    program's); none for None."""
    return [] if netns is None else ["nsenter", f"--net=/run/netns/{netns}", "--"]


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """One bridge (or other network) created at a time on this machine (parallel test runs
    pick subnets)."""
    path = Path(tempfile.gettempdir()) / f"ryx-extra-dockerd-{os.getuid()}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ExtraDockerdError("`ip` (iproute2) is needed to create an engine's bridge") from None
    except subprocess.CalledProcessError as exc:
        raise ExtraDockerdError(f"`ip {' '.join(args)}` failed: {exc.stderr.strip()}") from None


def used_networks(netns: str | None = None) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of every interface address on this machine (in ``netns``: there)."""
    where = ["-n", netns] if netns is not None else []
    out = subprocess.run(
        ["ip", *where, "-o", "-4", "addr", "show"], check=True, capture_output=True, text=True
    ).stdout
    return [
        ipaddress.IPv4Interface(match).network
        for match in re.findall(r"\binet (\d+\.\d+\.\d+\.\d+/\d+)", out)
    ]


def _free_subnet(used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if candidate.network_address.packed[2] == 0:
            continue  # keep 10.213.0.0/24 for engines given a subnet by hand
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise ExtraDockerdError(f"no free /24 left in {SUBNET_POOL}")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as gone: only its parent can reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children_of(parents: set[int]) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[-1].split()[1]) in parents:
            children.append(int(entry.name))
    return children


def mounts_under(root: Path) -> list[str]:
    """The mount points at or below ``root``."""
    prefix = str(root)
    points: list[str] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def _unescape(field: str) -> str:
    """``/proc/self/mountinfo`` writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
