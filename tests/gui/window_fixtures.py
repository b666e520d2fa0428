"""Helpers shared by the manager window's tests: a config with every kind of model, a bridge
whose ``apply_config`` records what it was given, and a fake clipboard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuVram, ModelVram, VramReport
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from tests.gui.fixtures_engine import EngineRig, managed

GIB = 1 << 30

#: a: stopped; b: started to ready; c: slow (stays starting); d: crashes; remote: unreachable.
#: Their budgets fit on one GPU together, so under ``FRACTIONAL`` no start evicts another.
MODELS: dict[str, Any] = {
    "a": managed(8001, category="general", size="medium", gpu_memory_utilization=0.3),
    "b": managed(8002, category="coding", size="small", gpu_memory_utilization=0.25),
    "c": managed(8003, category="general", size="powerful", gpu_memory_utilization=0.2),
    "d": managed(8004, gpu_memory_utilization=0.1),
    "remote": {"url": "http://127.0.0.1:9000", "served_name": "remote-model"},
}

FRACTIONAL: dict[str, Any] = {"gpu": {"policy": "fractional"}}


async def cancel(task: asyncio.Task[Any]) -> None:
    """End a task the test left waiting (a start that never gets ready), so none dangles."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def vram_report(**used_gib: float) -> VramReport:
    """One GPU of 80 GiB with the given models' measured memory."""
    models = tuple(
        ModelVram(key=k, name=k, used_bytes=int(v * GIB), running=True) for k, v in used_gib.items()
    )
    return VramReport(
        gpus=(
            GpuVram(
                index=0,
                name="Test GPU",
                total_bytes=80 * GIB,
                used_bytes=int(sum(used_gib.values()) * GIB),
                free_bytes=int((80 - sum(used_gib.values())) * GIB),
                models=models,
            ),
        )
    )


@dataclass
class RecordingApply:
    """An ``apply_config`` that keeps each config it is given and hands it to the supervisor.

    Saving is left out (no file); the supervisor's ``reconfigure`` is what the app's real
    applier does after the save, and it is what tells the bridge (``configChanged``).
    """

    supervisor: Supervisor
    applied: list[Config] = field(default_factory=list)

    async def __call__(self, config: Config) -> None:
        self.applied.append(config)
        await self.supervisor.reconfigure(config)


@contextlib.contextmanager
def bridge_with(
    rig: EngineRig,
    *,
    apply_config: RecordingApply | None = None,
    requests_total: Callable[[], int] | None = None,
) -> Iterator[EngineBridge]:
    """A second bridge over the rig's engine with an ``apply_config`` and a request counter."""
    bridge = EngineBridge(
        rig.supervisor,
        rig.runtime,
        proxy_url=rig.bridge.proxy_url,
        vram_source=rig.vram,
        apply_config=apply_config,
        requests_total=requests_total,
    )
    try:
        yield bridge
    finally:
        bridge.close()


class FakeClipboard:
    """Keeps what Copy put on it."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def setText(self, text: str, /) -> None:
        self.texts.append(text)
