"""The GPU monitor: polls the GPU probe and publishes one ``VramReport`` for the VRAM gauge.

``build_vram_report`` is the pure part: it joins a probe reading with the models' snapshots, the
host PIDs of their containers and the config's planned budgets. ``GpuMonitor`` runs it on a timer
of the injectable clock, asks the container runtime for PIDs only when a container is new or its
processes may have changed, and polls slowly while there is no GPU to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.gpu import (
    GpuProbe,
    GpuReading,
    GpuStatus,
    GpuVram,
    ModelVram,
    VramReport,
    gpu_budget,
)
from ryx_desktop.core.planner import gpus_of
from ryx_desktop.core.ports import Clock, ContainerRuntime
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.core.supervisor import Supervisor

log = logging.getLogger(__name__)

VramObserver = Callable[[VramReport], None]

NO_GPU_MESSAGE = "No NVIDIA GPU found"


def build_vram_report(
    reading: GpuReading,
    instances: Sequence[Instance],
    pids: Mapping[str, tuple[int, ...]],
    config: Config,
    gpu_indices: Sequence[int],
) -> VramReport:
    """Every GPU with the configured models planned on it (or measured on it).

    ``pids`` maps a model key to its container's host PIDs. A running model's use on a GPU is the
    sum of NVML's per-process memory over those PIDs (0 when none of them is on that GPU, None when
    its PIDs or every matching process's memory are unknown). Stopped models have no measurement.
    Without a reading (no driver, no GPU) each of ``gpu_indices`` is listed with budgets only.
    """
    by_key = {inst.key: inst for inst in instances}
    managed = [
        (key, model) for key, model in config.models.items() if isinstance(model, ModelConfig)
    ]
    if not reading.gpus:
        gpus = tuple(
            GpuVram(
                index=index,
                name=f"GPU {index}",
                models=tuple(
                    _model_vram(key, model, by_key.get(key), None)
                    for key, model in managed
                    if index in gpus_of(model.devices, gpu_indices)
                ),
            )
            for index in gpu_indices
        )
        return VramReport(gpus=gpus, message=reading.message or NO_GPU_MESSAGE, hint=reading.hint)

    present = [gpu.index for gpu in reading.gpus]
    out: list[GpuVram] = []
    for gpu in reading.gpus:
        models: list[ModelVram] = []
        for key, model in managed:
            inst = by_key.get(key)
            running = inst is not None and inst.running
            measured = _measure(gpu, pids.get(key, ())) if running else None
            planned = gpu.index in gpus_of(model.devices, present)
            if planned or measured:
                models.append(_model_vram(key, model, inst, measured))
        out.append(
            GpuVram(
                index=gpu.index,
                name=gpu.name,
                total_bytes=gpu.total_bytes,
                used_bytes=gpu.used_bytes,
                free_bytes=gpu.free_bytes,
                utilization_percent=gpu.utilization_percent,
                models=tuple(models),
            )
        )
    return VramReport(gpus=tuple(out), message=reading.message, hint=reading.hint)


def _measure(gpu: GpuStatus, pids: tuple[int, ...]) -> int | None:
    """Bytes the processes ``pids`` use on ``gpu``; None when that cannot be told."""
    if not pids:
        return None
    wanted = set(pids)
    matching = [p.used_bytes for p in gpu.processes if p.pid in wanted]
    if not matching:
        return 0
    known = [used for used in matching if used is not None]
    return sum(known) if known else None


def _model_vram(
    key: str, model: ModelConfig, inst: Instance | None, used_bytes: int | None
) -> ModelVram:
    return ModelVram(
        key=key,
        name=inst.name if inst is not None else model.display_name(key),
        used_bytes=used_bytes,
        budget_fraction=gpu_budget(model),
        running=inst is not None and inst.running,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _PidEntry:
    """A container's host PIDs, as the runtime listed them at ``at`` in state ``state``."""

    pids: tuple[int, ...]
    state: InstanceState
    at: float


class GpuMonitor:
    """Polls ``probe`` every ``interval`` seconds and publishes a ``VramReport`` when it changes.

    Container PIDs come from ``runtime.inspect`` once per container, again when the model's
    state changes (vLLM starts its engine processes while loading), and at most every
    ``pid_refresh`` seconds while the GPU lists processes no model accounts for. With no GPU
    to read, it polls every ``interval * idle_factor`` seconds and never asks for PIDs.
    """

    def __init__(
        self,
        probe: GpuProbe,
        supervisor: Supervisor,
        runtime: ContainerRuntime,
        clock: Clock,
        *,
        interval: float = 2.0,
        gpu_indices: Sequence[int] = (0,),
        idle_factor: float = 10.0,
        pid_refresh: float = 15.0,
    ) -> None:
        self._probe = probe
        self._supervisor = supervisor
        self._runtime = runtime
        self._clock = clock
        self._interval = interval
        self._gpu_indices = tuple(gpu_indices)
        self._idle_factor = idle_factor
        self._pid_refresh = pid_refresh
        self._observers: list[VramObserver] = []
        self._reading: GpuReading | None = None
        self._report: VramReport | None = None
        self._pids: dict[str, _PidEntry] = {}  # container id -> its PIDs
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def report(self) -> VramReport | None:
        """The latest report; None before the first poll."""
        return self._report

    def used_by(self, key: str) -> int | None:
        """VRAM measured for model ``key`` in the latest report; None when unknown."""
        return self._report.used_by(key) if self._report is not None else None

    def subscribe(self, observer: VramObserver) -> Callable[[], None]:
        """Call ``observer`` with the latest report now (when there is one) and with each new
        one; returns the function that unsubscribes. Reports are published only when they
        change, so a late subscriber would otherwise wait for the next change."""
        self._observers.append(observer)
        if self._report is not None:
            observer(self._report)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return unsubscribe

    async def poll_once(self) -> VramReport:
        """Read the GPUs, map the running models' processes, publish and return the report."""
        reading = await self._probe.read()
        self._reading = reading
        if reading.gpus:
            await self._refresh_pids(reading)
        report = self._build()
        self._publish(report)
        return report

    async def open(self) -> None:
        """Start polling on the running loop; model state changes update the report at once."""
        if self._task is not None:
            return
        self._unsubscribe = self._supervisor.subscribe(self._on_instance)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ryx-gpu-monitor")

    async def close(self) -> None:
        """Stop polling. The probe belongs to whoever built it and is not closed here."""
        task, self._task = self._task, None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- internals ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                report: VramReport | None = await self.poll_once()
            except Exception:
                log.exception("reading the GPUs failed")
                report = None
            slow = report is None or not report.found
            await self._clock.sleep(self._interval * (self._idle_factor if slow else 1.0))

    def _on_instance(self, _inst: Instance) -> None:
        # A model started or stopped: redraw from the last reading without any I/O.
        if self._reading is not None:
            self._publish(self._build())

    def _build(self) -> VramReport:
        assert self._reading is not None
        instances = self._supervisor.instances()
        pids = {
            inst.key: self._pids[inst.container_id].pids
            for inst in instances
            if inst.running and inst.container_id is not None and inst.container_id in self._pids
        }
        return build_vram_report(
            self._reading, instances, pids, self._supervisor.config, self._gpu_indices
        )

    def _publish(self, report: VramReport) -> None:
        if report == self._report:
            return
        self._report = report
        for observer in list(self._observers):
            observer(report)

    async def _refresh_pids(self, reading: GpuReading) -> None:
        running = {
            inst.container_id: inst
            for inst in self._supervisor.instances()
            if inst.running and inst.container_id is not None and not inst.external
        }
        for gone in self._pids.keys() - running.keys():
            del self._pids[gone]
        on_gpu = {p.pid for gpu in reading.gpus for p in gpu.processes}
        accounted = {pid for entry in self._pids.values() for pid in entry.pids}
        unaccounted = bool(on_gpu - accounted)
        now = self._clock.now()
        for container_id, inst in running.items():
            entry = self._pids.get(container_id)
            if entry is not None and entry.state is inst.state:
                due = now - entry.at >= self._pid_refresh
                if not (due and (unaccounted or not entry.pids)):
                    continue
            self._pids[container_id] = _PidEntry(await self._inspect(container_id), inst.state, now)

    async def _inspect(self, container_id: str) -> tuple[int, ...]:
        try:
            info = await self._runtime.inspect(container_id)
        except RyxError as exc:
            log.debug("cannot list the processes of container %s: %s", container_id[:12], exc)
            return ()
        return info.pids if info is not None else ()
