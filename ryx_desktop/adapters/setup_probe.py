"""The setup page's outside world: Docker, NVML, the image, the models folder, compose files.

``SetupProbe.facts`` gathers a ``SetupFacts`` for the checklist (``core/setup_checks.py``)
without blocking the event loop: the Docker calls go through the runtime (which runs the SDK in
an executor), NVML through the GPU probe (its own worker thread), the folder through an
executor. The Docker engine, the GPUs and the folder are looked at concurrently. ``pull``
downloads an image with the runtime's ``ensure_image`` and its ``PullProgress`` reports;
``scan`` finds the model directories of a folder; ``load_compose`` reads a compose file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ryx_desktop.adapters.model_scan import FoundModel, scan_models
from ryx_desktop.config import Config, import_compose
from ryx_desktop.core.errors import DockerPermissionError, RyxError
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.ports import PullProgress
from ryx_desktop.core.setup_checks import (
    EngineInfo,
    GpuFact,
    ImageFact,
    SetupFacts,
    images_of,
    needs_gpu,
)

T = TypeVar("T")

#: The translated error's words when the engine's socket file is not there at all.
_NO_SOCKET = "socket file not found"


class SetupRuntime(Protocol):
    """What the probe needs of the container runtime (``DockerRuntime`` has it)."""

    @property
    def address(self) -> str: ...

    async def engine_info(self) -> EngineInfo: ...

    async def image_present(self, image: str) -> bool: ...

    async def ensure_image(
        self, image: str, on_progress: Callable[[PullProgress], None] | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Engine:
    ok: bool
    info: EngineInfo | None = None
    error: str = ""
    permission: bool = False
    missing: bool = False
    images: tuple[ImageFact, ...] = ()


@dataclass(frozen=True, slots=True)
class _Folder:
    exists: bool
    readable: bool
    model_count: int | None


class SetupProbe:
    """Facts for the checklist, image pulls, model scans and compose imports.

    ``runtime`` is the app's Docker runtime, ``gpu_probe`` its NVML probe; ``environ`` resolves
    ``${VAR}`` in compose files; ``executor`` runs the file system work (default: the loop's).
    """

    def __init__(
        self,
        runtime: SetupRuntime,
        gpu_probe: GpuProbe,
        *,
        environ: Mapping[str, str],
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._runtime = runtime
        self._gpu_probe = gpu_probe
        self._environ = dict(environ)
        self._executor = executor

    async def facts(self, config: Config, models_dir: Path | None = None) -> SetupFacts:
        """The checklist's facts for ``config``, with ``models_dir`` (default: the config's)."""
        folder = (models_dir or config.docker.models_dir).expanduser()
        engine, reading, place = await asyncio.gather(
            self._engine(images_of(config)),
            self._gpu_probe.read(),
            self._in_executor(_look_at_folder, folder),
        )
        return SetupFacts(
            docker_address=self._runtime.address,
            docker_ok=engine.ok,
            docker_error=engine.error,
            docker_permission_denied=engine.permission,
            docker_missing=engine.missing,
            engine=engine.info,
            gpus=tuple(GpuFact(g.name, g.total_bytes) for g in reading.gpus),
            gpu_error=reading.message,
            gpu_hint=reading.hint,
            images=engine.images or tuple(ImageFact(i) for i in images_of(config)),
            models_dir=folder,
            models_dir_exists=place.exists,
            models_dir_readable=place.readable,
            model_count=place.model_count,
            needs_gpu=needs_gpu(config),
        )

    async def pull(self, image: str, on_progress: Callable[[PullProgress], None]) -> None:
        """Download ``image`` (nothing when it is there), reporting progress on the loop."""
        await self._runtime.ensure_image(image, on_progress)

    async def scan(self, folder: Path) -> list[FoundModel]:
        """The model directories under ``folder``; RyxError when it cannot be read."""
        return await self._in_executor(scan_models, folder)

    async def load_compose(self, path: Path) -> Config:
        """The models of the compose file at ``path``; ConfigError when it cannot be used."""
        return await self._in_executor(import_compose, path, self._environ)

    async def _engine(self, images: tuple[str, ...]) -> _Engine:
        try:
            info = await self._runtime.engine_info()
            present = [await self._runtime.image_present(image) for image in images]
        except DockerPermissionError as exc:
            return _Engine(False, error=exc.message, permission=True)
        except RyxError as exc:
            return _Engine(False, error=exc.message, missing=_NO_SOCKET in exc.message)
        facts = tuple(ImageFact(name, p) for name, p in zip(images, present, strict=True))
        return _Engine(True, info=info, images=facts)

    async def _in_executor(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))


def _look_at_folder(folder: Path) -> _Folder:
    """Whether ``folder`` exists and can be read, and how many model directories it holds."""
    if not folder.is_dir():
        return _Folder(exists=False, readable=False, model_count=None)
    if not os.access(folder, os.R_OK | os.X_OK):
        return _Folder(exists=True, readable=False, model_count=None)
    try:
        count: int | None = len(scan_models(folder))
    except RyxError:
        return _Folder(exists=True, readable=False, model_count=None)
    return _Folder(exists=True, readable=True, model_count=count)
