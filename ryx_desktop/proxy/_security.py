"""Who may talk to the proxy: the Host header, the browser Origin and the API key.

Why the Host check: a web page can make a browser send requests to 127.0.0.1 through DNS
rebinding (Ollama's CVE-2024-28224), and only the Host header tells that the browser meant
another site. Origins are refused unless listed, so no page can read our answers either.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping

from multidict import CIMultiDictProxy

from ryx_desktop.config import is_loopback
from ryx_desktop.core.errors import ConfigError
from ryx_desktop.proxy._errors import ProxyError

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_FORBIDDEN_IN_HOST = frozenset("/?#@\\ ")
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def resolve_api_key(value: str | None, environ: Mapping[str, str]) -> str | None:
    """The key itself: ``env:NAME`` reads it from the environment."""
    if value is None or not value.startswith("env:"):
        return value or None
    name = value[4:]
    key = environ.get(name, "")
    if not key:
        raise ConfigError(
            f"proxy.api_key reads the environment variable {name}, which is not set",
            hint=f"Export {name} before starting, or put the key itself in proxy.api_key.",
        )
    return key


def require_key_when_exposed(host: str, api_key: str | None) -> None:
    """ConfigError when the proxy would listen beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"proxy.host {host} is not a loopback address, so an API key is required",
            hint="Set proxy.api_key (anyone who can reach this machine could use your models).",
        )


class Guard:
    """Checks each request against the proxy's host, port, allowed origins and key."""

    def __init__(
        self, host: str, port: int, allowed_origins: Iterable[str], api_key: str | None
    ) -> None:
        require_key_when_exposed(host, api_key)
        self._port = port
        self._bound = host
        self._exposed = not is_loopback(host)
        names = list(_LOOPBACK_NAMES)
        if self._exposed and host not in _WILDCARDS:
            names.append(_host_name(host))
        self._hosts = frozenset(f"{name}:{port}" for name in names)
        if port == 80:
            self._hosts |= frozenset(names)
        self._origins = frozenset(_origin(o) for o in allowed_origins)
        self._bearer = f"Bearer {api_key}".encode() if api_key else None
        self._key = api_key.encode() if api_key else b""

    def check_host(self, headers: CIMultiDictProxy[str]) -> None:
        host = headers.get("Host")
        if not host:
            raise ProxyError(400, "the request has no Host header", "missing_host")
        if not _FORBIDDEN_IN_HOST.isdisjoint(host):
            raise ProxyError(400, f"the Host header {host!r} is malformed", "bad_host")
        lowered = host.lower()
        if lowered in self._hosts:
            return
        if self._exposed and self._bound in _WILDCARDS and _port_of(lowered) == self._port:
            return  # listening on every address: any name that reaches us, the key decides
        raise ProxyError(
            403,
            f"requests for host {host!r} are refused: only localhost:{self._port} is served",
            "host_not_allowed",
            hint=f"Use http://localhost:{self._port}/v1 as the base URL",
        )

    def check_origin(self, headers: CIMultiDictProxy[str]) -> str | None:
        """The allowed Origin of a browser request (None when there is no Origin)."""
        origin = headers.get("Origin")
        if origin is None:
            return None
        if _origin(origin) in self._origins:
            return origin
        raise ProxyError(
            403,
            f"requests from the web origin {origin!r} are refused",
            "origin_not_allowed",
            hint="Add the origin to proxy.allowed_origins if you trust that site",
        )

    def check_key(self, headers: CIMultiDictProxy[str]) -> None:
        if self._bearer is None:
            return
        # aiohttp keeps bytes that are not UTF-8 as surrogates: back to those bytes.
        given = headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if hmac.compare_digest(given, self._bearer):
            return
        # The scheme is case-insensitive and may be followed by more than one space (RFC 9110
        # 11.1, 11.4): "bearer KEY" is as good as "Bearer KEY".
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.lstrip(b" "), self._key):
            raise ProxyError(
                401,
                "a valid API key is required" if given else "the request has no API key",
                "invalid_api_key",
                hint="Send 'Authorization: Bearer <proxy.api_key>'",
            )


def cors_headers(origin: str) -> dict[str, str]:
    """Headers that let the allowed ``origin`` read a response."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "X-Ryx-Model",
        "Vary": "Origin",
    }


def preflight_headers(origin: str, headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The answer to an allowed origin's CORS preflight."""
    asked = headers.get("Access-Control-Request-Headers", "authorization, content-type")
    return {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": asked,
        "Access-Control-Max-Age": "600",
    }


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def _host_name(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host.lower()


def _port_of(host: str) -> int:
    _, sep, port = host.rpartition(":")
    if not sep or not port.isdigit() or host.endswith("]"):
        return 80
    return int(port)
