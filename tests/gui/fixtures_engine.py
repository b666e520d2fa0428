"""A real engine behind the Qt bridge, on a qasync loop, for GUI tests without Docker.

``run_on_qt`` runs a test's scenario coroutine on the app's own loop (``QtAsyncioLoop``:
qasync over Qt's event loop), so widgets, signals and the supervisor's tasks all run together.
``engine_rig`` builds the real ``Supervisor`` over the in-memory ``FakeRuntime`` /
``FakeHealth`` and a ``VirtualClock`` (time moves only when the test advances it) with an
``EngineBridge`` on top.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PySide6.QtWidgets import QApplication

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import VramReport
from ryx_desktop.core.ports import SleepControl
from ryx_desktop.core.states import Instance
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.event_loop import QtAsyncioLoop
from tests.support.fakes import FakeContainer, FakeHealth, FakeRuntime, VirtualClock

_T = TypeVar("_T")


def run_on_qt(qapp: QApplication, scenario: Coroutine[Any, Any, _T]) -> _T:
    """Run ``scenario`` to its end on a fresh qasync loop over ``qapp``; close the loop after."""
    loop = QtAsyncioLoop(qapp)
    with loop:
        result: _T = loop.run_until_complete(scenario)
    return result


def managed(port: int, **extra: Any) -> dict[str, Any]:
    """A managed model entry for the config (its container is a ``FakeRuntime`` one)."""
    return {"model": f"/models/m{port}", "port": port, "devices": "all", **extra}


class VramFeed:
    """A ``VramSource`` the test pushes reports through (``bridge.vram()`` then has them)."""

    def __init__(self) -> None:
        self._observers: list[Callable[[VramReport], None]] = []

    def __call__(self, observer: Callable[[VramReport], None]) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def push(self, report: VramReport) -> None:
        for observer in list(self._observers):
            observer(report)


@dataclass
class EngineRig:
    """The supervisor, its fakes and the bridge, all on the running qasync loop."""

    config: Config
    runtime: FakeRuntime
    health: FakeHealth
    clock: VirtualClock
    supervisor: Supervisor
    bridge: EngineBridge
    vram: VramFeed
    seen: list[Instance] = field(default_factory=list)

    def container(self, key: str) -> FakeContainer:
        container = self.runtime.by_key(key)
        assert container is not None, f"{key} has no container"
        return container

    def starts(self) -> list[str]:
        return [key for verb, key in self.runtime.calls if verb == "start"]


@contextlib.asynccontextmanager
async def engine_rig(
    models: dict[str, Any],
    *,
    proxy_url: str | None = "http://127.0.0.1:8420/v1",
    sleep_control: SleepControl | None = None,
    **top: Any,
) -> AsyncIterator[EngineRig]:
    """An opened (watching) supervisor over fakes and its bridge; closed after the block.

    ``top`` holds other top-level config keys (``default_model``, ``idle_ttl``, ...);
    ``sleep_control`` lets ``sleep_mode`` models sleep (None: none can).
    """
    config = Config.model_validate({"models": models, **top})
    runtime = FakeRuntime()
    health = FakeHealth(runtime)
    clock = VirtualClock()
    supervisor = Supervisor(
        config,
        runtime,
        health,
        clock,
        probe_interval=1.0,
        unhealthy_after=3,
        drain_timeout=30.0,
        sleep_control=sleep_control,
    )
    vram = VramFeed()
    bridge = EngineBridge(supervisor, runtime, proxy_url=proxy_url, vram_source=vram)
    rig = EngineRig(config, runtime, health, clock, supervisor, bridge, vram)
    supervisor.subscribe(rig.seen.append)
    await supervisor.open()
    try:
        yield rig
    finally:
        bridge.close()
        await supervisor.close()
