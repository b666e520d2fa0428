"""A fake Docker engine for the setup page: up or down, its runtimes, its images, a pull.

``FakeSetupDocker`` answers what ``SetupProbe`` asks of the runtime (``engine_info``,
``image_present``, ``ensure_image``) from plain attributes a test sets. A pull reports the
configured ``PullProgress`` steps, then waits for ``release`` (when ``hold`` is set), so a test
can look at the page mid-pull without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from ryx_desktop.core.errors import (
    DockerPermissionError,
    DockerUnavailableError,
    ImageMissingError,
)
from ryx_desktop.core.ports import PullProgress
from ryx_desktop.core.setup_checks import EngineInfo

ADDRESS = "unix:///var/run/docker.sock"

State = Literal["up", "down", "denied", "no-socket"]


class FakeSetupDocker:
    """The runtime side of ``SetupProbe``, in memory."""

    def __init__(
        self,
        state: State = "up",
        *,
        runtimes: tuple[str, ...] = ("nvidia", "runc"),
        images: set[str] | None = None,
    ) -> None:
        self.state: State = state
        self.runtimes = runtimes
        self.images: set[str] = set(images or ())
        self.steps: list[PullProgress] = []  # what a pull reports, in order
        self.pull_error: str | None = None  # a pull fails with this
        self.hold = False  # a pull waits for release() after its steps
        self.reported = asyncio.Event()  # set once a pull has reported its steps
        self._release = asyncio.Event()
        self.pulls: list[str] = []

    @property
    def address(self) -> str:
        return ADDRESS

    def release(self) -> None:
        self._release.set()

    def _check(self) -> None:
        if self.state == "down":
            raise DockerUnavailableError(
                f"no Docker engine answers at {ADDRESS} (connection refused)"
            )
        if self.state == "no-socket":
            raise DockerUnavailableError(
                f"no Docker engine answers at {ADDRESS} (socket file not found)"
            )
        if self.state == "denied":
            raise DockerPermissionError(
                f"permission denied on the Docker socket at {ADDRESS}: this user may not use Docker"
            )

    async def engine_info(self) -> EngineInfo:
        self._check()
        return EngineInfo(version="27.3.1", runtimes=self.runtimes)

    async def image_present(self, image: str) -> bool:
        self._check()
        return image in self.images

    async def ensure_image(
        self, image: str, on_progress: Callable[[PullProgress], None] | None = None
    ) -> None:
        self._check()
        self.pulls.append(image)
        for step in self.steps:
            if on_progress is not None:
                on_progress(step)
        self.reported.set()
        if self.hold:
            await self._release.wait()
        if self.pull_error is not None:
            raise ImageMissingError(
                f"image {image} is not available locally and could not be pulled: {self.pull_error}"
            )
        self.images.add(image)
