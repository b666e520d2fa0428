"""A compose service's published port, read for import: which host port, on which address.

ryx-desktop publishes every model's port on 127.0.0.1 only (clients reach models through its
proxy, which has the access rules). A compose file that published vLLM's port on all interfaces
(``"8004:8000"``, ``0.0.0.0``, ``[::]``) or on some other address gave other machines a way in
that the import does not keep: ``exposure_warning`` says so for each such service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

#: The address ryx-desktop publishes model ports on.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Published:
    """One ``ports:`` entry: the host address ("" for all interfaces), host and container port."""

    index: int
    host_ip: str
    published: str
    target: str


def port_entries(raw: list[Any], text: Callable[[Any], str]) -> Iterator[Published]:
    """The ``ports:`` entries that publish a host port (short or long syntax), in order.

    ``text`` interpolates a value as compose does. An entry with only a container port (Docker
    picks a random host port) is skipped.
    """
    for index, entry in enumerate(raw):
        if isinstance(entry, dict):
            host_ip = text(entry.get("host_ip", ""))
            published, target = text(entry.get("published", "")), text(entry.get("target", ""))
            yield Published(index, host_ip, published, target)
            continue
        parts = text(entry).split("/", 1)[0].rsplit(":", 2)
        if len(parts) < 2:
            continue
        host_ip = parts[0] if len(parts) == 3 else ""
        yield Published(index, host_ip.strip("[]"), parts[-2], parts[-1])


def exposure_warning(service: str, entry: Published) -> str | None:
    """What to tell when ``service`` published its port beyond this machine; None when it was
    published on a loopback address already (as ryx-desktop publishes it)."""
    if _is_loopback(entry.host_ip):
        return None
    where = "all interfaces" if entry.host_ip in ("", "0.0.0.0", "::") else entry.host_ip
    return (
        f"service {service!r} published port {entry.published} on {where}; ryx-desktop "
        f"publishes it on {LOOPBACK} only, so other machines no longer reach the model there "
        "(they reach it through the proxy when proxy.host and proxy.api_key allow it)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
