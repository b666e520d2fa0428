"""Where an ``ssh://`` host is and how the system ``ssh`` client reaches it, as plain data.

:class:`SshTarget` is built from a host's ``url:`` (``ssh://[user@]host[:port]``) and its
``ssh:`` settings (``identity_file``, ``config_file``, ``options``); it turns them into the
argument lists of the ``ssh`` client: :meth:`SshTarget.command_argv` runs a command there
(``nvidia-smi ...``), and the tunnels (:mod:`ryx_desktop.adapters.ssh_tunnel`) add their
forwards to :meth:`SshTarget.base_argv`. Every list forces ``BatchMode=yes``: ``ssh`` never
prompts (for a password, a passphrase or an unknown host key); it fails with a message instead.

No I/O here: nothing is run, no file is read.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from urllib.parse import urlsplit

#: Options every ``ssh`` we run gets first (the first value given for an option wins in ssh).
FORCED_OPTIONS = ("BatchMode=yes",)


@dataclass(frozen=True, slots=True)
class SshTarget:
    """One host reached with the system ``ssh`` client.

    ``host`` is a host name, an address or a ``Host`` alias of the ssh config; ``user`` and
    ``port`` None leave them to the ssh config (or ssh's defaults: this user, port 22).
    ``identity_file`` and ``config_file`` become ``-i`` and ``-F``; ``options`` are ``-o``
    values (``"ServerAliveInterval=15"``). ``program`` is the client to run.
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    config_file: str | None = None
    options: tuple[str, ...] = ()
    program: str = "ssh"

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise ValueError(f"{self.host!r} is not a host name for ssh")
        if self.user is not None and (not self.user or self.user.startswith("-")):
            raise ValueError(f"{self.user!r} is not a user name for ssh")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"ssh port {self.port} must be from 1 to 65535")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        identity_file: str | PathLike[str] | None = None,
        config_file: str | PathLike[str] | None = None,
        options: Iterable[str] = (),
        program: str = "ssh",
    ) -> SshTarget:
        """The target of ``ssh://[user@]host[:port]``; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme != "ssh":
            raise ValueError(f"{url!r} is not an ssh:// url (ssh://user@host[:port])")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port in {url!r} must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r} names no host (like ssh://user@box2)")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
            raise ValueError(f"{url!r} must be ssh://[user@]host[:port], nothing more")
        return cls(
            host=parts.hostname,
            user=parts.username or None,
            port=port,
            identity_file=None if identity_file is None else str(identity_file),
            config_file=None if config_file is None else str(config_file),
            options=tuple(options),
            program=program,
        )

    @property
    def url(self) -> str:
        """``ssh://[user@]host[:port]``, as a config would write it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{host}{port}"

    @property
    def name(self) -> str:
        """The host for messages: ``user@host:port`` with what is set."""
        return self.url[len("ssh://") :]

    def manual_command(self) -> str:
        """The ``ssh`` command a user would type to check this host by hand (for hints)."""
        argv = ["ssh"]
        if self.config_file is not None:
            argv += ["-F", self.config_file]
        if self.identity_file is not None:
            argv += ["-i", self.identity_file]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        destination = f"{self.user}@{self.host}" if self.user else self.host
        return shlex.join([*argv, destination, "true"])

    def base_argv(self, *options: str) -> list[str]:
        """``ssh`` and every option for this target, then ``options`` (each a ``-o`` value),
        without the destination: callers add theirs (``-N``, ``-L ...``), then ``--`` and
        :attr:`host`. Precedence: the forced options, this target's, then ``options``."""
        argv = [self.program]
        if self.config_file is not None:
            argv += ["-F", self.config_file]
        if self.identity_file is not None:
            argv += ["-i", self.identity_file]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user is not None:
            argv += ["-l", self.user]
        for option in (*FORCED_OPTIONS, *self.options, *options):
            argv += ["-o", option]
        return argv

    def command_argv(self, *remote: str, options: Iterable[str] = ()) -> list[str]:
        """Run ``remote`` (a program and its arguments) on the host, quoted for its shell."""
        if not remote:
            raise ValueError("no remote command given")
        return [*self.base_argv(*options), "-T", "--", self.host, shlex.join(remote)]
