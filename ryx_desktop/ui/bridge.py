"""The bridge between the engine (plain asyncio services) and Qt widgets.

Snapshots flow up as Qt signals; commands flow down as plain coroutines that widgets call
from one-line async slots and tests can await. A command that fails emits ``commandFailed``
with the error's one-line message and hint instead of raising into Qt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from PySide6.QtCore import QObject, QTimer, Signal

from ryx_desktop.config import Config
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.gpu import VramReport
from ryx_desktop.core.ports import ContainerRuntime
from ryx_desktop.core.states import Instance
from ryx_desktop.core.supervisor import Supervisor

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Subscribes an observer to VRAM reports and returns the unsubscribe function.
VramSource = Callable[[Callable[[VramReport], None]], Callable[[], None]]
#: Saves a config and applies it to the running engine (the app wires the real one).
ConfigApplier = Callable[[Config], Awaitable[None]]


class EngineBridge(QObject):
    """Qt face of the supervisor, the GPU monitor and the container logs."""

    instanceChanged = Signal(object)  # Instance
    selectionChanged = Signal(object)  # str | None: the selected model's key
    vramChanged = Signal(object)  # VramReport
    configChanged = Signal(object)  # Config
    commandFailed = Signal(str, str, str)  # model key ("" when none), message, hint
    engineChanged = Signal(object)  # str | None: why the Docker engine does not answer
    hostChanged = Signal(str, object)  # host, str | None: why its Docker engine does not answer

    def __init__(
        self,
        supervisor: Supervisor,
        runtime: ContainerRuntime,
        *,
        proxy_url: str | None = None,
        vram_source: VramSource | None = None,
        requests_total: Callable[[], int] | None = None,
        apply_config: ConfigApplier | None = None,
        usage_interval_ms: int = 200,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._supervisor = supervisor
        self._runtime = runtime
        self._proxy_url = proxy_url
        self._requests_total = requests_total
        self._apply_config = apply_config
        self._vram: VramReport | None = None
        # Request counters change with every request; widgets need them a few times a second.
        self._shown: dict[str, Instance] = {}
        self._held: dict[str, Instance] = {}
        self._usage_timer = QTimer(self)
        self._usage_timer.setSingleShot(True)
        self._usage_timer.setInterval(usage_interval_ms)
        self._usage_timer.timeout.connect(self._emit_held)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe = [
            supervisor.subscribe(self._on_instance),
            supervisor.subscribe_selection(self.selectionChanged.emit),
            # Every config change, whoever made it (a dialog here, or the control API).
            supervisor.subscribe_config(self.configChanged.emit),
            supervisor.subscribe_engine(self.engineChanged.emit),
            supervisor.subscribe_hosts(self.hostChanged.emit),
        ]
        if vram_source is not None:
            self._unsubscribe.append(vram_source(self._on_vram))

    def close(self) -> None:
        """Stop listening to the engine (the engine itself keeps running)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._usage_timer.stop()
        self._held.clear()

    # ---- snapshots ---------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._supervisor.config

    @property
    def proxy_url(self) -> str | None:
        """The proxy's base URL, or None when the proxy is not running."""
        return self._proxy_url

    def set_proxy_url(self, url: str | None) -> None:
        self._proxy_url = url

    @property
    def engine_problem(self) -> str | None:
        """Why the Docker engine does not answer now (None: it does)."""
        return self._supervisor.engine_problem

    def hosts(self) -> tuple[str, ...]:
        """The Docker engines models run on: ``local`` first, then the config's ``hosts:``."""
        return tuple(self._supervisor.hosts)

    def host_problem(self, host: str) -> str | None:
        """Why ``host``'s Docker engine does not answer now (None: it does, or not known yet)."""
        return self._supervisor.host_problems.get(host)

    def instances(self) -> list[Instance]:
        return self._supervisor.instances()

    def instance(self, key: str) -> Instance:
        return self._supervisor.get(key)

    def selected(self) -> str | None:
        return self._supervisor.selected

    def sleep_mode_of(self, key: str) -> bool:
        """Whether model ``key`` runs with vLLM's sleep mode, so it can be put to sleep and woken.

        False for an external model, an unknown key, or an engine with no way to sleep models.
        """
        try:
            return self._supervisor.sleep_mode_of(key)
        except KeyError:
            return False

    def vram(self) -> VramReport | None:
        """The latest VRAM report, or None before the first poll (or without a GPU monitor)."""
        return self._vram

    def requests_total(self) -> int | None:
        """Requests the proxy has answered so far (None without a proxy)."""
        return self._requests_total() if self._requests_total is not None else None

    def _on_instance(self, inst: Instance) -> None:
        """Relay a snapshot; one that changes only request counters waits for the usage timer.

        Under load the supervisor publishes a snapshot per loop iteration for the counters
        alone; repainting the table, the details and the tray for each would cost the proxy
        its throughput. State changes still go up at once, with any counters held back.
        """
        shown = self._shown.get(inst.key)
        if shown is not None and _only_usage_differs(shown, inst):
            self._held[inst.key] = inst
            if not self._usage_timer.isActive():
                self._usage_timer.start()
            return
        self._held.pop(inst.key, None)
        self._shown[inst.key] = inst
        self.instanceChanged.emit(inst)

    def _emit_held(self) -> None:
        held, self._held = self._held, {}
        for key, inst in held.items():
            self._shown[key] = inst
            self.instanceChanged.emit(inst)

    def _on_vram(self, report: VramReport) -> None:
        self._vram = report
        self.vramChanged.emit(report)

    # ---- commands (plain coroutines; errors become commandFailed) ---------------------------

    async def start(self, key: str) -> Instance | None:
        return await self._command(key, self._supervisor.ensure_ready(key))

    async def stop(self, key: str) -> Instance | None:
        return await self._command(key, self._supervisor.stop(key, reason="stopped by the user"))

    async def restart(self, key: str) -> Instance | None:
        return await self._command(key, self._supervisor.restart(key))

    async def sleep(self, key: str, level: int = 1) -> Instance | None:
        """Put a ready sleep-mode model to sleep: level 1 keeps its weights in host RAM, level 2
        drops them. Its requests finish first."""
        return await self._command(key, self._supervisor.sleep(key, level))

    async def wake(self, key: str) -> Instance | None:
        """Wake a sleeping model; returns once it answers again."""
        return await self._command(key, self._supervisor.wake(key))

    async def stop_all(self) -> None:
        await self._command("", self._supervisor.stop_all())

    def select(self, key: str) -> None:
        try:
            self._supervisor.select(key)
        except RyxError as exc:
            self.commandFailed.emit(key, exc.message, exc.hint)

    async def apply_config(self, config: Config) -> bool:
        """Save ``config`` and apply it; False (and ``commandFailed``) when that failed."""
        if self._apply_config is None:
            self.commandFailed.emit("", "Settings cannot be saved here.", "")
            return False
        try:
            await self._apply_config(config)
        except RyxError as exc:
            self.commandFailed.emit("", exc.message, exc.hint)
            return False
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` on the loop without awaiting it (fire-and-forget from a widget)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _command(self, key: str, coro: Coroutine[Any, Any, _T]) -> _T | None:
        try:
            return await coro
        except RyxError as exc:
            log.info("%s: %s", key or "command", exc.message)
            self.commandFailed.emit(key, exc.message, exc.hint)
            return None

    # ---- logs -------------------------------------------------------------------------------

    async def logs(self, key: str, tail: int = 200) -> list[str]:
        """The last ``tail`` log lines of the model's container ([] when it has none)."""
        inst = self._supervisor.get(key)
        if inst.container_id is None:
            return []
        try:
            return await self._runtime.logs(inst.container_id, tail)
        except RyxError as exc:
            self.commandFailed.emit(key, exc.message, exc.hint)
            return []

    async def follow_logs(self, key: str, tail: int = 200) -> AsyncIterator[str]:
        """Log lines of the model's container as they are written, starting with ``tail`` old ones.

        Ends when the container stops; yields nothing when the model has no container.
        """
        inst = self._supervisor.get(key)
        if inst.container_id is None:
            return
        try:
            async for line in self._runtime.follow_logs(inst.container_id, tail):
                yield line
        except RyxError as exc:
            self.commandFailed.emit(key, exc.message, exc.hint)


def _only_usage_differs(before: Instance, after: Instance) -> bool:
    """True when ``after`` differs from ``before`` in its request counters alone."""
    return dataclasses.replace(after, in_flight=before.in_flight, last_used=before.last_used) == (
        before
    )
