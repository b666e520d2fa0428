"""Docker SDK, requests and OS exceptions turned into the user-facing errors of ``core.errors``.

This is the one place where Docker's failures become one clear sentence plus a hint. The runtime
calls :func:`translate` at the edge; nothing above the adapters ever sees a docker exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from ryx_desktop.core.errors import (
    DockerError,
    DockerPermissionError,
    DockerUnavailableError,
    ImageMissingError,
    NoGpuRuntimeError,
    PortInUseError,
    RyxError,
)

#: Where ``docker.from_env()`` looks when DOCKER_HOST is not set.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

_GPU_DRIVER = "could not select device driver"
_PORT_PHRASES = ("port is already allocated", "address already in use")
# "Bind for 127.0.0.1:8001 failed: port is already allocated",
# "listen tcp4 127.0.0.1:8001: bind: address already in use", "Bind for :::8001 failed".
_PORT_RE = re.compile(r"(?:Bind for|listen \w+)\s+\S*?:(\d+)(?=[\s:]|$)")
_ANY_PORT_RE = re.compile(r":(\d{1,5})\b")
_NO_SUCH_IMAGE_RE = re.compile(r"No such image: (\S+)", re.IGNORECASE)
_NAME_CONFLICT_RE = re.compile(r'container name "/?([^"]+)" is already in use')
_BIND_SOURCE_RE = re.compile(r"bind source path does not exist: (\S+)")
_LOOKUP_RE = re.compile(r"lookup (\S+?)(?: on \S+)?: no such host")
_DIAL_RE = re.compile(r"dial tcp (\S+?): (connect: )?(.+)$")
_URL_PREFIX_RE = re.compile(r'^(?:Get|Head|Post|Put) "[^"]*":\s*')
_MAX_REASON = 200


def translate(
    exc: BaseException,
    *,
    address: str | None = None,
    action: str | None = None,
    image: str | None = None,
    port: int | None = None,
    port_holder: str | None = None,
) -> RyxError:
    """The user-facing error for ``exc``.

    ``address`` is the engine's address (for "cannot reach" messages), ``action`` what was being
    done ("start container ryx-vllm-x"), ``image`` the image concerned, ``port`` the host port the
    container publishes and ``port_holder`` the container found publishing that port, if any.
    """
    if isinstance(exc, RyxError):
        return exc
    where = address or DEFAULT_DOCKER_HOST
    if isinstance(exc, docker.errors.APIError):
        return _from_api_error(exc, action=action, image=image, port=port, holder=port_holder)
    connection = connection_problem(exc)
    if connection == "permission":
        return DockerPermissionError(
            f"permission denied on the Docker socket at {where}: this user may not use Docker"
        )
    if connection is not None:
        return DockerUnavailableError(f"no Docker engine answers at {where} ({connection})")
    if isinstance(exc, requests.exceptions.Timeout):
        doing = action or "answer"
        return DockerError(f"the Docker engine at {where} did not {doing} in time")
    text = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, docker.errors.DockerException) and "server API version" in text:
        return DockerUnavailableError(f"no Docker engine answers at {where} ({_shorten(text)})")
    if action:
        return DockerError(f"Docker could not {action}: {_shorten(text)}")
    return DockerError(f"Docker failed: {_shorten(text)}")


def connection_problem(exc: BaseException) -> str | None:
    """Why the engine could not be reached ("socket file not found", "connection refused",
    "permission") when ``exc`` is a connection failure, else None."""
    if isinstance(exc, docker.errors.APIError):
        return None  # the engine answered
    for err in _causes(exc):
        if isinstance(err, PermissionError):
            return "permission"
        if isinstance(err, FileNotFoundError):
            return "socket file not found"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
    if not isinstance(
        exc, docker.errors.DockerException | requests.exceptions.ConnectionError | OSError
    ):
        return None
    text = str(exc)
    if "PermissionError" in text or "Permission denied" in text:
        return "permission"
    if "FileNotFoundError" in text or "No such file or directory" in text:
        return "socket file not found"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host name"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _shorten(_one_line(text)) or "connection failed"
    return None


def is_port_conflict(exc: BaseException) -> bool:
    """Whether Docker refused to publish a port because something else holds it."""
    text = _explanation(exc)
    return any(phrase in text for phrase in _PORT_PHRASES)


def conflicting_port(exc: BaseException) -> int | None:
    """The host port named in a port-conflict error, else None."""
    if not is_port_conflict(exc):
        return None
    text = _explanation(exc)
    match = _PORT_RE.search(text)
    if match is None:
        head = min(text.find(p) for p in _PORT_PHRASES if p in text)
        found = _ANY_PORT_RE.findall(text[:head])
        return int(found[-1]) if found else None
    return int(match.group(1))


def image_missing(image: str, reason: str) -> ImageMissingError:
    """The error for an image that is not local and could not be pulled."""
    return ImageMissingError(
        f"image {image} is not available locally and could not be pulled: {short_reason(reason)}"
    )


def image_not_local(image: str) -> ImageMissingError:
    """The error for starting from an image that has not been pulled (start never pulls)."""
    return ImageMissingError(f"image {image} is not available locally; it has to be pulled first")


def pull_failed(image: str, exc: BaseException, *, address: str | None = None) -> RyxError:
    """The error for a failed pull: engine problems stay engine problems, the rest is a missing
    image with Docker's reason."""
    error = translate(exc, address=address, image=image)
    if isinstance(error, DockerUnavailableError | DockerPermissionError):
        return error
    return image_missing(image, _explanation(exc))


def short_reason(text: str) -> str:
    """Docker's reason made short: ``Get "https://registry-1.docker.io/v2/": dial tcp: lookup
    registry-1.docker.io on 10.0.0.53:53: no such host`` becomes ``cannot resolve
    registry-1.docker.io (no such host)``."""
    text = _one_line(text)
    lookup = _LOOKUP_RE.search(text)
    if lookup:
        return f"cannot resolve {lookup.group(1)} (no such host)"
    dial = _DIAL_RE.search(text)
    if dial:
        return _shorten(f"cannot connect to {dial.group(1)} ({dial.group(3)})")
    text = _URL_PREFIX_RE.sub("", text)
    parts: list[str] = []
    for part in text.split(": "):
        if not parts or part.strip().lower() != parts[-1].strip().lower():
            parts.append(part)
    return _shorten(": ".join(parts)) or "unknown reason"


def _from_api_error(
    exc: docker.errors.APIError,
    *,
    action: str | None,
    image: str | None,
    port: int | None,
    holder: str | None,
) -> RyxError:
    text = _explanation(exc)
    if isinstance(exc, docker.errors.ImageNotFound) or (
        exc.status_code == 404 and _NO_SUCH_IMAGE_RE.search(text)
    ):
        match = _NO_SUCH_IMAGE_RE.search(text)
        name = image or (match.group(1) if match else "?")
        return image_not_local(name)
    if _GPU_DRIVER in text:
        target = f" to {_subject(action)}" if action else ""
        return NoGpuRuntimeError(
            f"Docker has no GPU runtime to give GPUs{target} ({_shorten(text)})"
        )
    if is_port_conflict(exc):
        number = conflicting_port(exc) or port
        shown = f"port {number}" if number is not None else "the port"
        if holder:
            return PortInUseError(f"{shown} is already used by container {holder}")
        return PortInUseError(f"{shown} is already in use by another program")
    conflict = _NAME_CONFLICT_RE.search(text)
    if conflict:
        return DockerError(
            f"the container name {conflict.group(1)} is already taken by another container",
            hint=f"Remove it with `docker rm -f {conflict.group(1)}`, then try again.",
        )
    source = _BIND_SOURCE_RE.search(text)
    if source:
        return DockerError(
            f"the folder {source.group(1)} to mount into the container does not exist",
            hint="Create it, or fix `docker.models_dir` / `docker.hf_cache` in the config.",
        )
    if exc.status_code == 403 and "permission denied" in text.lower():
        return DockerPermissionError(f"Docker refused the request: {_shorten(text)}")
    if action:
        return DockerError(f"Docker could not {action}: {_shorten(text)}")
    return DockerError(f"Docker failed: {_shorten(text)}")


def _subject(action: str) -> str:
    # "start container ryx-vllm-x" -> "container ryx-vllm-x"
    words = action.split(" ", 1)
    return words[1] if len(words) == 2 else action


def _explanation(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        if explanation:
            return _one_line(str(explanation))
        response = exc.response
        if response is not None and response.reason:
            return f"{response.status_code} {response.reason}"
    return _one_line(str(exc))


def _causes(exc: BaseException, depth: int = 0) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, exceptions in args, urllib3 reasons."""
    if depth > 8:
        return
    yield exc
    seen: list[BaseException] = []
    for inner in (exc.__cause__, exc.__context__, getattr(exc, "reason", None), *exc.args):
        if isinstance(inner, BaseException) and inner is not exc and inner not in seen:
            seen.append(inner)
            yield from _causes(inner, depth + 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shorten(text: str) -> str:
    if len(text) <= _MAX_REASON:
        return text
    return text[: _MAX_REASON - 1].rstrip() + "…"
