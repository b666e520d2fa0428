"""Test doubles on the real adapters, and a loop-friendly wait, for the integration tests."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from ryx_desktop.adapters.docker_runtime import DockerRuntime
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


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait on the loop (the supervisor's and proxy's tasks keep running) until ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
