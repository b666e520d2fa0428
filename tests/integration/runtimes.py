"""Test doubles built on the real adapters, shared by the integration tests."""

from __future__ import annotations

import dataclasses

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.ports import ContainerInfo
from ryx_desktop.core.spec import ContainerSpec


class GpuFakingRuntime(DockerRuntime):
    """The real runtime, minus the GPU request this machine cannot satisfy; counts starts.

    Models are planned on their configured GPUs (so GPU policies apply) but their containers
    start without a device request, as if the NVIDIA toolkit had handed the GPU over.
    """

    def __init__(self, host: str | None = None) -> None:
        super().__init__(host)
        self.started: list[str] = []

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        self.started.append(spec.key)
        return await super().start(dataclasses.replace(spec, devices="none"))


class OffsetClock(MonotonicClock):
    """Real time that a test can jump forward, for TTLs measured in minutes."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return super().now() + self.offset
