"""Model ports forwarded from remote hosts to this machine, shared by the containers using them.

``PortForwards`` keeps one forward per local port (the model's own port: its URL stays
``http://127.0.0.1:<port>``), opened through the injected ``open_port(host, port)`` and ended
with ``close_port(handle)``. Several containers may use one forward (a container replaced by
another of the same model); it ends with its last user. A port wanted from another host is
taken over only for a start; a forward that failed to open is tried again the next time; a
port being closed is let go of before it is opened again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ryx_desktop.core.errors import HostUnreachableError

log = logging.getLogger(__name__)

H = TypeVar("H")


@dataclass(eq=False)
class _Forward(Generic[H]):
    """One model port forwarded from ``host`` to this machine, and the containers that use it."""

    host: str
    port: int
    opening: asyncio.Future[H]
    users: set[str] = field(default_factory=set)


class PortForwards(Generic[H]):
    """The forwards of model ports from remote hosts; see the module docstring."""

    def __init__(
        self,
        open_port: Callable[[str, int], Awaitable[H]],
        close_port: Callable[[H], Awaitable[None]],
    ) -> None:
        self._open_port = open_port
        self._close_port = close_port
        self._forwards: dict[int, _Forward[H]] = {}  # local port -> forward
        self._port_of: dict[str, int] = {}  # container id -> the port forwarded for it
        self._closing: dict[int, asyncio.Future[None]] = {}  # port -> its forward being closed
        self._ending: dict[str, asyncio.Future[None]] = {}  # container id -> its last release

    def ports(self) -> dict[int, str]:
        """Ports forwarded (or being forwarded) now: port -> host."""
        return {port: fwd.host for port, fwd in self._forwards.items()}

    async def ensure(self, host: str, port: int, cid: str, *, take_over: bool) -> None:
        """Forward ``port`` of ``host`` for container ``cid``; ``HostUnreachableError`` when it
        cannot be opened. A port forwarded from another host is taken over only for a start
        (``take_over``): a container found running elsewhere does not steal it."""
        fwd = self._forwards.get(port)
        if fwd is not None and fwd.host != host:
            if not take_over:
                log.warning(
                    "port %d is forwarded from host %s already; %s on host %s is not reached",
                    port,
                    fwd.host,
                    cid,
                    host,
                )
                return
            await self._drop(fwd)
            fwd = None
        if fwd is not None and _failed(fwd.opening):
            self._forwards.pop(port, None)
            fwd = None
        if fwd is None:
            fwd = _Forward(host, port, asyncio.ensure_future(self._open(host, port)))
            self._forwards[port] = fwd
        fwd.users.add(cid)
        self._port_of[cid] = port
        try:
            await asyncio.shield(fwd.opening)
        except Exception as exc:
            fwd.users.discard(cid)
            if self._port_of.get(cid) == port:
                del self._port_of[cid]
            if self._forwards.get(port) is fwd:
                del self._forwards[port]
            if isinstance(exc, HostUnreachableError):
                raise
            raise HostUnreachableError(
                f"cannot forward port {port} of host {host}: {exc}", host=host
            ) from exc

    async def _open(self, host: str, port: int) -> H:
        closing = self._closing.get(port)
        if closing is not None:
            await asyncio.shield(closing)  # the last forward of this port must let go of it
        return await self._open_port(host, port)

    async def release(self, cid: str) -> None:
        """Container ``cid`` no longer uses its port; the forward ends with its last user.

        Returns once that forward has ended, also when another caller released ``cid`` first
        and is still ending it (a Docker ``destroy`` event racing the ``remove`` that caused
        it): whoever asked, the port is let go of when this returns.
        """
        port = self._port_of.pop(cid, None)
        fwd = None if port is None else self._forwards.get(port)
        if fwd is None:
            ending = self._ending.get(cid)
            if ending is not None:
                await asyncio.shield(ending)
            return
        fwd.users.discard(cid)
        if fwd.users:
            return
        ending = asyncio.ensure_future(self._drop(fwd))
        self._ending[cid] = ending

        def forget(done: asyncio.Future[None]) -> None:
            if self._ending.get(cid) is done:
                del self._ending[cid]

        ending.add_done_callback(forget)
        await asyncio.shield(ending)

    async def _drop(self, fwd: _Forward[H]) -> None:
        """End a forward (once it opened); its containers lose it."""
        if self._forwards.get(fwd.port) is fwd:
            del self._forwards[fwd.port]
        for cid in fwd.users:
            if self._port_of.get(cid) == fwd.port:
                del self._port_of[cid]
        fwd.users.clear()
        closing = asyncio.ensure_future(self._end(fwd))
        self._closing[fwd.port] = closing
        try:
            await asyncio.shield(closing)
        finally:
            if self._closing.get(fwd.port) is closing and closing.done():
                del self._closing[fwd.port]

    async def _end(self, fwd: _Forward[H]) -> None:
        try:
            handle = await asyncio.shield(fwd.opening)
        except Exception:
            return  # it never opened: nothing to close
        try:
            await self._close_port(handle)
        except Exception:
            log.exception("closing the forward of port %d of host %s failed", fwd.port, fwd.host)

    async def close(self) -> None:
        """End every forward."""
        for fwd in list(self._forwards.values()):
            await self._drop(fwd)


def _failed(future: asyncio.Future[H]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
