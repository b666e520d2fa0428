"""Fakes for several hosts: an engine that goes away and comes back, recorded port forwards,
health answered by the containers of every engine, and GPU readings fixed per host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ryx_desktop.core.errors import DockerError, DockerUnavailableError, HostUnreachableError
from ryx_desktop.core.gpu import GpuReading, GpuStatus
from ryx_desktop.core.ports import ContainerInfo, ContainerStatus, RuntimeEvent, RuntimeEventKind
from tests.support.fakes import FakeContainer, FakeHealth, FakeRuntime

GIB = 2**30


#: A marker put in an engine's event queue: the stream breaks there (the engine went away).
_CUT = RuntimeEvent(RuntimeEventKind.DIE, "", "")


class FlakyEngine(FakeRuntime):
    """An in-memory engine that can go away (``crash``) and come back (``revive``)."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.down: str | None = None
        self.lists = 0

    def crash(self, reason: str = "no Docker engine answers at ssh://me@box2") -> None:
        self.down = reason
        self.emit(_CUT)

    def revive(self) -> None:
        self.down = None

    async def list_models(self) -> list[ContainerInfo]:
        self.lists += 1
        if self.down is not None:
            raise DockerUnavailableError(self.down)
        return await super().list_models()

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        if self.down is not None:
            raise DockerUnavailableError(self.down)
        return await super().inspect(container_id)

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        if self.down is not None:
            raise DockerUnavailableError(self.down)
        while (event := await self._events.get()) is not _CUT:
            yield event
        raise DockerError(f"the engine of {self.host} closed its event stream")


@dataclass
class FakePorts:
    """Records the forwards opened and closed; ``refuse`` makes opening fail for a host."""

    opened: list[tuple[str, int]] = field(default_factory=list)
    closed: list[tuple[str, int]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def open_port(self, host: str, port: int) -> tuple[str, int]:
        await asyncio.sleep(0)
        if host in self.refuse:
            raise HostUnreachableError(f"cannot reach {host} over SSH: refused", host=host)
        self.opened.append((host, port))
        return (host, port)

    #: When set, closing a forward waits for it (a slow ``ssh`` exit).
    close_gate: asyncio.Event | None = None

    async def close_port(self, handle: tuple[str, int]) -> None:
        await asyncio.sleep(0)
        if self.close_gate is not None:
            await self.close_gate.wait()
        self.closed.append(handle)

    @property
    def live(self) -> list[tuple[str, int]]:
        live = list(self.opened)
        for handle in self.closed:
            live.remove(handle)
        return live


class HostsHealth(FakeHealth):
    """``FakeHealth`` over the containers of several engines (each port is forwarded here)."""

    def __init__(self, *engines: FakeRuntime) -> None:
        super().__init__(engines[0])
        self.engines = engines
        #: Containers of an engine that went away still answer (its port forward is separate).
        self.serve_when_down = False

    def _serving(self, base_url: str) -> list[FakeContainer]:
        port = int(base_url.rsplit(":", 1)[1])
        return [
            c
            for engine in self.engines
            if getattr(engine, "down", None) is None or self.serve_when_down
            for c in engine.containers.values()
            if c.serving and c.info.status is ContainerStatus.RUNNING and c.info.host_port == port
        ]


@dataclass
class FixedGpus:
    """A GPU probe that reads what the test set: one GPU with ``free`` of ``total`` bytes."""

    free: int | None = 20 * GIB
    total: int = 24 * GIB
    reads: int = 0

    async def read(self) -> GpuReading:
        self.reads += 1
        await asyncio.sleep(0)
        if self.free is None:
            return GpuReading(message="nvidia-smi is not installed there")
        used = self.total - self.free
        gpu = GpuStatus(0, "NVIDIA test GPU", None, self.total, used, self.free, 0.0)
        return GpuReading((gpu,))

    async def close(self) -> None:
        return None
