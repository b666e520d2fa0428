"""More Docker engines in the config: the ``hosts:`` section and each model's ``host:``.

A host is reached by ``url:`` (``ssh://[user@]host[:port]``, ``unix:///path`` or
``tcp://host:port`` with ``tls:``) or by ``context:`` (a Docker context name); it may set its own
``models_dir`` (an absolute path on that host) and ``image``. ``local`` names the engine of the
``docker:`` section and ``any`` lets the scheduler pick, so neither can name a host. Problems
carry their location (``Problem``), so the loader reports them as FILE:LINE:COL with the rest.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from ryx_desktop.config._problems import ConfigProblems, Problem

#: The engine of the ``docker:`` section; what a model without ``host:`` runs on.
LOCAL = "local"
#: ``host: any``: the scheduler picks the host with room.
ANY = "any"
RESERVED = frozenset({LOCAL, ANY})
#: A host name: a lowercase slug (it shows in the window, the CLI and container labels).
HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: Docker's rule for context names.
CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: An ssh ``-o`` option: ``Name=value`` (or ``Name value``).
SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:=|\s+)\S.*")
SCHEMES = ("ssh", "unix", "tcp")
URL_FORMS = "ssh://user@host[:port], unix:///path/to/docker.sock or tcp://host:port"

HostKind = Literal["ssh", "unix", "tcp", "context"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SshSettings(_Part):
    """How ``ssh`` reaches an ``ssh://`` host: a key, a config file, extra ``-o`` options."""

    identity_file: Path | None = None
    config_file: Path | None = None
    options: tuple[str, ...] = ()

    @field_validator("identity_file", "config_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("options", mode="before")
    @classmethod
    def _ssh_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        bad = [
            Problem(
                (index,),
                f"ssh option {option!r} must read Name=value, like ServerAliveInterval=15 "
                "(what `ssh -o` takes)",
            )
            for index, option in enumerate(value)
            if isinstance(option, str) and not SSH_OPTION.fullmatch(option.strip())
        ]
        if bad:
            raise ConfigProblems(bad)
        return value


class TlsSettings(_Part):
    """The TLS files for a ``tcp://`` engine: the CA to check it by and the client key pair."""

    ca: Path | None = None  # None: the system's CAs
    cert: Path | None = None
    key: Path | None = None
    verify: bool = True

    @field_validator("ca", "cert", "key")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _client_pair(self) -> TlsSettings:
        missing = [name for name in ("cert", "key") if getattr(self, name) is None]
        if missing:
            raise ConfigProblems(
                Problem(
                    (name,),
                    f"tls needs {name}: the engine (dockerd --tlsverify) lets in only clients "
                    "with a certificate it signed, so give both cert and key",
                    at_key=True,
                )
                for name in missing
            )
        return self


class HostConfig(_Part):
    """One more Docker engine, reached by ``url`` or by a Docker ``context``."""

    url: str | None = None
    context: str | None = None
    models_dir: PurePosixPath | None = None  # on that host; None: docker.models_dir
    image: str | None = None  # None: docker.image
    ssh: SshSettings | None = None
    tls: TlsSettings | None = None
    insecure: bool = False  # a tcp:// engine without TLS, on purpose

    @property
    def kind(self) -> HostKind:
        """How the engine is reached: the url's scheme, or ``context``."""
        if self.url is None:
            return "context"
        scheme = self.url.partition("://")[0]
        if scheme == "ssh":
            return "ssh"
        return "unix" if scheme == "unix" else "tcp"

    @field_validator("url")
    @classmethod
    def _engine_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_engine_url(value)
        return value

    @field_validator("context")
    @classmethod
    def _context_name(cls, value: str | None) -> str | None:
        if value is not None and not CONTEXT_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a Docker context name (`docker context ls` lists them)"
            )
        return value

    @field_validator("models_dir", mode="before")
    @classmethod
    def _absolute_dir(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.startswith("/"):
            raise ValueError(
                f"models_dir must be an absolute path on that host, like /srv/vllm-models, "
                f"got {value!r} (`~` is not expanded there)"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("image must name an image, like vllm/vllm-openai:latest")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> HostConfig:
        problems = _reach_problems(self)
        if problems:
            raise ConfigProblems(problems)
        return self


def _reach_problems(host: HostConfig) -> list[Problem]:
    """What is wrong in how ``host`` is reached (url or context, and the settings each allows)."""
    if host.url is None and host.context is None:
        return [
            Problem(
                (),
                f"a host needs url: ({URL_FORMS}) or context: (a Docker context name)",
                at_key=True,
            )
        ]
    if host.url is not None and host.context is not None:
        return [Problem(("context",), "set url or context, not both", at_key=True)]
    problems: list[Problem] = []
    kind = host.kind
    if host.ssh is not None and kind != "ssh":
        problems.append(Problem(("ssh",), "ssh settings only apply to an ssh:// url", at_key=True))
    if host.tls is not None and kind != "tcp":
        problems.append(Problem(("tls",), "tls settings only apply to a tcp:// url", at_key=True))
    if host.insecure and kind != "tcp":
        problems.append(
            Problem(("insecure",), "insecure only applies to a tcp:// url", at_key=True)
        )
    elif host.insecure and host.tls is not None:
        problems.append(
            Problem(
                ("insecure",),
                "insecure: true means no TLS, so it cannot go with tls: (remove one of them)",
                at_key=True,
            )
        )
    elif kind == "tcp" and host.tls is None and not host.insecure:
        problems.append(
            Problem(
                ("url",),
                "a tcp:// engine needs tls: {ca, cert, key}: without TLS anyone who can reach "
                "the port controls Docker on that machine (prefer an ssh:// url, or set "
                "insecure: true only on a network you trust)",
            )
        )
    return problems


def check_engine_url(value: str) -> None:
    """Raise ValueError (one sentence with its fix) unless ``value`` is an engine url we reach."""
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"url must be {URL_FORMS}, got {value!r} (or use context: for a Docker context)"
        )
    parts = urlsplit(value)
    if scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(
                "a unix:// url needs an absolute socket path, like unix:///var/run/docker.sock"
            )
        return
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the port in {value!r} must be a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError(f"{value!r} names no host (like {scheme}://box2)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} must not have a path: write {scheme}://{parts.netloc}")
    if parts.password is not None:
        raise ValueError(
            "a url must not hold a password: use a key (ssh: {identity_file: ...}) instead"
        )
    if scheme == "tcp" and port is None:
        raise ValueError(f"a tcp:// url needs a port, like tcp://{parts.hostname}:2376")
    if scheme == "tcp" and parts.username:
        raise ValueError("a tcp:// url takes no user name: the TLS certificate says who you are")


def _host_ref(value: Any) -> Any:
    return LOCAL if value is None else value  # `host: null` (or empty) is the local engine


def _no_hosts(value: Any) -> Any:
    return {} if value is None else value  # `hosts:` with only comments under it


#: A model's ``host:``: a name from ``hosts:``, ``local`` or ``any``.
HostRef = Annotated[str, BeforeValidator(_host_ref)]
Hosts = Annotated[dict[str, HostConfig], BeforeValidator(_no_hosts)]


def host_problems(hosts: Collection[str] | None, models: Mapping[str, object]) -> list[Problem]:
    """What is wrong across hosts and models: host names, and models on hosts that do not exist.

    ``hosts`` are the names under ``hosts:`` (None: the section is unreadable, nothing to check);
    ``models`` are the models whose ``host`` validated (an external model has none).
    """
    if hosts is None:
        return []
    problems = [problem for name in hosts for problem in _name_problems(name)]
    known = set(hosts) | RESERVED
    listed = ", ".join([LOCAL, *sorted(set(hosts) - RESERVED)])
    for key, model in models.items():
        host = getattr(model, "host", None)
        if isinstance(host, str) and host not in known:
            problems.append(
                Problem(
                    ("models", key, "host"),
                    f"host {host!r} is not under hosts: (known: {listed}; "
                    "`any` lets ryx-desktop pick one)",
                )
            )
    return problems


def _name_problems(name: str) -> list[Problem]:
    loc = ("hosts", name)
    if name in RESERVED:
        meaning = "the engine of the docker: section" if name == LOCAL else "any host with room"
        return [
            Problem(
                loc,
                f"{name!r} cannot name a host: `host: {name}` already means {meaning}; "
                "pick another name",
                at_key=True,
            )
        ]
    if not HOST_NAME.fullmatch(name):
        return [
            Problem(
                loc,
                f"host name {name!r} must be lowercase letters, digits and '-' "
                "(like gpu-box-2), starting and ending with a letter or digit",
                at_key=True,
            )
        ]
    return []
