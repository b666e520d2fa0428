"""An ``sshd`` of the test's own on a loopback port: the "remote host" of the multi-host tests.

``TestSshd(workdir)`` runs Debian's ``/usr/sbin/sshd -D -e -f <its config>`` as root on
``127.0.0.1:<free port>`` with everything of its own under ``workdir``, made at the first
``start()``:

* a host key and a client key (``ssh-keygen``, ed25519, no passphrase), the client key as the
  only entry of its ``authorized_keys``; root may log in with that key only
  (``PermitRootLogin prohibit-password``, no passwords, ``StrictModes no``);
* forwarding on (``AllowTcpForwarding``, ``AllowStreamLocalForwarding``), for the tunnels;
* the client side: a ``known_hosts`` holding its host key as ``[127.0.0.1]:<port>``, and an
  ``ssh_config`` with a ``Host`` alias, so ``ssh -F <ssh_config> <alias> CMD`` runs without a
  prompt; :attr:`url`, :attr:`identity_file` and :meth:`client_options` give the same for an
  ``ssh://root@127.0.0.1:<port>`` target with ``-i`` and ``-o`` options.

**The environment of commands run through it** is set with ``SetEnv`` in its ``sshd_config``
(OpenSSH 8.7+): ``PATH`` is :attr:`bin_dir` (``workdir/bin``) before the system's directories,
plus whatever ``env`` says (``DOCKER_HOST=unix:///...`` for instance). A test puts a fake
``nvidia-smi`` there with :meth:`add_command`; the script is read at each run, so it may be
rewritten between commands. ``env`` changes need a ``restart()`` (sshd reads its config at
start). The login shell still runs (root's ``bash -c``), and Debian's bash reads ``~/.bashrc``
under sshd: that file may add to ``PATH`` but :attr:`bin_dir` stays on it.

``netns`` and ``listen_address`` put it on another "machine": started through
``nsenter --net=/run/netns/<netns>`` it listens on ``listen_address`` (an address of that
network namespace, reachable from here) instead of ``127.0.0.1``, and the commands and forwards
of its sessions run in that namespace (``ssh -L P:127.0.0.1:P`` reaches the namespace's
loopback). :attr:`url`, the ``known_hosts`` entry and the ``ssh_config`` name that address.

Every wait is on a condition with a deadline: the port accepting and sending the ``SSH-2.0-``
banner, the process exiting. ``stop()``/``kill()`` end the listener and every process it forked
(the per-connection sshd processes and their commands: a host that goes away drops its
connections), found by parent pid while the listener is stopped (``SIGSTOP``), so that it
forks no new one meanwhile. ``close()`` stops it and removes its config and pid file; the
keys, the log and ``bin_dir`` stay in ``workdir``, which the caller removes. Running sshd needs
root and the ``openssh-server`` package (CI installs it). sshd needs its privilege separation
folder ``/run/sshd``; made when missing (as the package's service would), never removed: other
sshd processes may use it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from tests.support.extra_dockerd import netns_prefix

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")
BANNER = b"SSH-2.0-"
#: The system's directories after :attr:`TestSshd.bin_dir` on a session's PATH.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_TAIL = 30
_POLL = 0.02


class TestSshdError(RuntimeError):
    """The test's sshd could not be set up, started or stopped."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def banner_of(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bytes | None:
    """The first line an SSH server on ``host:port`` sends, or None when none answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            answer = b""
            while b"\n" not in answer and len(answer) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    return answer.split(b"\n", 1)[0].rstrip(b"\r") or None


def descendants_of(root: int) -> list[int]:
    """Every process below ``root`` (children, their children ...), by parent pid."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _root_password_locked() -> bool:
    """Whether root's password is locked (``!`` in /etc/shadow): sshd without PAM refuses
    locked accounts even for keys, so PAM is used then."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "root":
                return rest.startswith("!")
    return False


class TestSshd:
    """One sshd on ``127.0.0.1``: ``start()``, ``stop()``, ``kill()``, ``restart()``, ``close()``.

    ``env`` is set for every command run through it (``PATH`` given there comes after
    :attr:`bin_dir`); ``port`` None picks a free one at construction; ``alias`` is the ``Host``
    name in the client's ``ssh_config``. ``netns`` runs it in that network namespace (made
    with ``ip netns add``), listening on ``listen_address`` (an IPv4 address there). Also a
    context manager.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        workdir: Path | str,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        alias: str = "ryx-test-host",
        sshd: str = SSHD,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        netns: str | None = None,
        listen_address: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.env = dict(env or {})
        self.netns = netns
        self.listen_address = listen_address
        self.port = port or _free_port()
        self.alias = alias
        self._sshd = sshd
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._made_keys = False

    # ---- where things are --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ssh://root@{self.listen_address}:{self.port}"

    @property
    def host_key(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def identity_file(self) -> Path:
        """The client's private key (its public half is the only authorized key)."""
        return self.workdir / "client_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def sshd_config(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def config_file(self) -> Path:
        """The client's ``ssh_config``: ``ssh -F <this> <alias>`` reaches this sshd."""
        return self.workdir / "ssh_config"

    @property
    def bin_dir(self) -> Path:
        """First on ``PATH`` for every command run through this sshd."""
        return self.workdir / "bin"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "sshd.pid"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client_options(self) -> list[str]:
        """``ssh -o`` values that trust this sshd's host key, and only it, without a prompt."""
        return [
            f"UserKnownHostsFile={self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            "LogLevel=ERROR",
        ]

    def ssh_argv(self, *remote: str) -> list[str]:
        """``ssh -F <ssh_config> <alias> -- <remote>``: runs ``remote`` there, quoted."""
        return ["ssh", "-F", str(self.config_file), "-T", self.alias, "--", shlex.join(remote)]

    def run(self, *remote: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run ``remote`` through this sshd (blocking); its output as text."""
        return subprocess.run(
            self.ssh_argv(*remote),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def add_command(self, name: str, script: str) -> Path:
        """Write an executable ``bin_dir/name`` (``script`` is its whole text, ``#!`` line and
        all); commands run through this sshd find it first on ``PATH``."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        path = self.bin_dir / name
        temporary = path.with_name(f".{name}.new")
        temporary.write_text(script)
        temporary.chmod(0o755)
        temporary.replace(path)  # a command running meanwhile reads the old or the new one
        return path

    def answers(self) -> bool:
        """Whether the port sends an SSH banner now."""
        banner = banner_of(self.port, host=self.listen_address)
        return banner is not None and banner.startswith(BANNER)

    def log_tail(self, lines: int = _LOG_TAIL) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        """Write the keys (once) and the config, start sshd; return once it sends its banner."""
        if self.running:
            raise TestSshdError(f"the test sshd on port {self.port} runs already")
        if os.geteuid() != 0:
            raise TestSshdError("the test sshd runs as root: run these tests as root (CI does)")
        if not Path(self._sshd).is_file():
            raise TestSshdError(
                f"{self._sshd} is missing: install openssh-server (`apt-get install -y "
                "openssh-server openssh-client`; .ci/run does)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(exist_ok=True)
        self._make_keys()
        self._write_configs()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        checked = subprocess.run(
            [self._sshd, "-t", "-f", str(self.sshd_config)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise TestSshdError(f"sshd refuses its config: {checked.stderr.strip()}")
        command = [
            *netns_prefix(self.netns),
            self._sshd,
            "-D",
            "-e",
            "-f",
            str(self.sshd_config),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self._process
        deadline = time.monotonic() + self.start_timeout
        while process.poll() is None and not self.answers():
            if time.monotonic() > deadline:
                self._end(signal.SIGKILL)
                raise TestSshdError(
                    f"the test sshd gave no banner on {self.listen_address}:{self.port} in "
                    f"{self.start_timeout:g} s; its log:\n{self.log_tail()}"
                )
            time.sleep(_POLL)
        if process.poll() is not None:
            raise TestSshdError(
                f"the test sshd exited with {process.returncode}; its log:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """End every connection, then the listener (SIGTERM); SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """End the listener and every connection with SIGKILL, as a host that crashed."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and remove what it wrote (keys, configs, log and ``bin_dir`` stay in
        ``workdir`` for the caller to keep or remove)."""
        self.stop()
        for path in (self.pid_file, self.sshd_config):
            path.unlink(missing_ok=True)

    def __enter__(self) -> TestSshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connection_pids(self) -> list[int]:
        """The processes this sshd forked that still run (one or more per connection)."""
        process = self._process
        if process is None or process.poll() is not None:
            return []
        return descendants_of(process.pid)

    # ---- inside ------------------------------------------------------------------------------

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGSTOP)  # forks nothing new while its children go
        try:
            for _ in range(10):
                children = [pid for pid in descendants_of(process.pid) if _alive(pid)]
                if not children:
                    break
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _wait_gone(children, self.stop_timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
                process.send_signal(signal.SIGCONT)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.stop_timeout)
            raise TestSshdError(
                f"the test sshd did not stop in {self.stop_timeout:g} s (killed)"
            ) from None

    def _make_keys(self) -> None:
        if self._made_keys and self.host_key.exists() and self.identity_file.exists():
            return
        for key, comment in ((self.host_key, "ryx-test-host"), (self.identity_file, "ryx-test")):
            key.unlink(missing_ok=True)
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            try:
                subprocess.run(
                    [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    check=True,
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                )
            except FileNotFoundError:
                raise TestSshdError(
                    "ssh-keygen is missing: install openssh-client (.ci/run does)"
                ) from None
            except subprocess.CalledProcessError as exc:
                raise TestSshdError(f"ssh-keygen failed: {exc.stderr.strip()}") from None
        public = self.identity_file.with_name(self.identity_file.name + ".pub").read_text()
        self.authorized_keys.write_text(public)
        self.authorized_keys.chmod(0o600)
        self._made_keys = True

    def _session_env(self) -> dict[str, str]:
        env = dict(self.env)
        env["PATH"] = ":".join(p for p in (str(self.bin_dir), env.get("PATH", SYSTEM_PATH)) if p)
        return env

    def _write_configs(self) -> None:
        env = self._session_env()
        for name, value in env.items():
            if not name.isidentifier() or any(c in value for c in '"\n'):
                raise TestSshdError(f"environment {name}={value!r} cannot go into sshd_config")
        set_env = " ".join(f'"{name}={value}"' for name, value in env.items())
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.listen_address}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"UsePAM {'yes' if _root_password_locked() else 'no'}",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel VERBOSE",
            f"SetEnv {set_env}",
        ]
        self.sshd_config.write_text("\n".join(lines) + "\n")
        public_host_key = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()
        self.known_hosts.write_text(
            f"[{self.listen_address}]:{self.port} {public_host_key[0]} {public_host_key[1]}\n"
        )
        client = [
            f"Host {self.alias}",
            f"  HostName {self.listen_address}",
            f"  Port {self.port}",
            "  User root",
            f"  IdentityFile {self.identity_file}",
            *(f"  {option.replace('=', ' ', 1)}" for option in self.client_options()),
            "  BatchMode yes",
        ]
        self.config_file.write_text("\n".join(client) + "\n")


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise TestSshdError(f"processes {pids} of the test sshd did not end in {timeout:g} s")
        time.sleep(_POLL)


def _alive(pid: int) -> bool:
    """Running (a zombie counts as gone: only its parent can reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
