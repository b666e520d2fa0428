"""The GPU monitor: polls the GPU probes and publishes one ``VramReport`` for the VRAM gauge.

``build_vram_report`` is the pure part: it joins a probe reading with the models' snapshots, the
host PIDs of their containers and the config's planned budgets. ``GpuMonitor`` runs it on a timer
of the injectable clock, asks the container runtime for PIDs only when a container is new or its
processes may have changed, and polls slowly while there is no GPU to read.

With several Docker engines (``hosts:``) every host's probe is read at once (this machine's NVML
probe, the others' nvidia-smi over SSH); each host's part is built over the models on that host
(PIDs are per machine, so a model is only matched against its own host's processes), and
``merge_host_reports`` joins the parts: a host whose GPUs could not be read keeps its GPUs with
budgets only and says why in ``host_problems``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.gpu import (
    GpuProbe,
    GpuReading,
    GpuStatus,
    GpuVram,
    HostGpuProblem,
    ModelVram,
    VramReport,
    gpu_budget,
)
from ryx_desktop.core.planner import gpus_of
from ryx_desktop.core.ports import Clock, ContainerRuntime
from ryx_desktop.core.spec import ANY_HOST, LOCAL_HOST
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.core.supervisor import Supervisor

log = logging.getLogger(__name__)

VramObserver = Callable[[VramReport], None]

NO_GPU_MESSAGE = "No NVIDIA GPU found"
#: Why a host the supervisor drives has no GPU probe.
NO_PROBE_HINT = (
    "ryx-desktop reads another host's GPUs with nvidia-smi over that host's SSH connection."
)
#: The report's message when several hosts were asked and none gave a GPU.
NO_HOST_GPU_MESSAGE = "No host's GPUs could be read"


def build_vram_report(
    reading: GpuReading,
    instances: Sequence[Instance],
    pids: Mapping[str, tuple[int, ...]],
    config: Config,
    gpu_indices: Sequence[int],
    *,
    host: str = LOCAL_HOST,
    keys: Collection[str] | None = None,
) -> VramReport:
    """Every GPU with the configured models planned on it (or measured on it).

    ``pids`` maps a model key to its container's host PIDs. A running model's use on a GPU is the
    sum of NVML's per-process memory over those PIDs (0 when none of them is on that GPU, None when
    its PIDs or every matching process's memory are unknown). Stopped models have no measurement.
    Without a reading (no driver, no GPU) each of ``gpu_indices`` is listed with budgets only.
    ``host`` marks every GPU; ``keys`` (None: all) are the models that belong on that host.
    """
    by_key = {inst.key: inst for inst in instances}
    managed = [
        (key, model)
        for key, model in config.models.items()
        if isinstance(model, ModelConfig) and (keys is None or key in keys)
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
                host=host,
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
                host=host,
            )
        )
    return VramReport(gpus=tuple(out), message=reading.message, hint=reading.hint)


def _managed(config: Config, key: str) -> ModelConfig | None:
    model = config.models.get(key)
    return model if isinstance(model, ModelConfig) else None


def host_of(inst: Instance, model: ModelConfig | None) -> str:
    """The host whose GPUs model ``inst`` is drawn on: where it runs, else where it is set to run
    (``any`` for a ``host: any`` model not placed yet)."""
    if inst.host:
        return inst.host
    return model.host if model is not None else LOCAL_HOST


def merge_host_reports(reports: Sequence[tuple[str, VramReport]]) -> VramReport:
    """One report over every host's (host, report), in that order.

    With one host it is that host's report (this machine's looks as it always did). With
    several, every host's GPUs are listed (one whose GPUs could not be read with budgets only,
    as this machine's without a driver) and ``host_problems`` says why for each such host;
    ``message`` is set only when no host gave any GPU.
    """
    if len(reports) == 1:
        host, only = reports[0]
        return dataclasses.replace(only, hosts=(host,))
    gpus = tuple(gpu for _, report in reports for gpu in report.gpus)
    problems = tuple(
        HostGpuProblem(host, report.message, report.hint)
        for host, report in reports
        if not report.found
    )
    hosts = tuple(host for host, _ in reports)
    if len(problems) < len(reports):
        return VramReport(gpus=gpus, hosts=hosts, host_problems=problems)
    return VramReport(
        gpus=gpus,
        message=NO_HOST_GPU_MESSAGE,
        hint=next((p.hint for p in problems if p.hint), ""),
        hosts=hosts,
        host_problems=problems,
    )


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


async def _each(jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` side by side (one alone is simply awaited)."""
    pending = list(jobs)
    if len(pending) == 1:
        await pending[0]
    elif pending:
        await asyncio.gather(*pending)


@dataclasses.dataclass(frozen=True, slots=True)
class _PidEntry:
    """A container's host PIDs, as the runtime listed them at ``at`` in state ``state``."""

    pids: tuple[int, ...]
    state: InstanceState
    at: float


class GpuMonitor:
    """Polls ``probe`` every ``interval`` seconds and publishes a ``VramReport`` when it changes.

    ``probe`` reads this machine's GPUs; ``remote_probes`` read other hosts' (by host name). Each
    poll reads the probe of every host the supervisor drives at the same time and joins each
    host's reading with the models on that host: a model's container PIDs are that host's PIDs,
    matched against that host's processes only. A host the supervisor drives but that has no
    probe is listed with budgets only and says its GPUs are not read.

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
        remote_probes: Mapping[str, GpuProbe] | None = None,
    ) -> None:
        self._probes: dict[str, GpuProbe] = {**(remote_probes or {}), LOCAL_HOST: probe}
        self._supervisor = supervisor
        self._runtime = runtime
        self._clock = clock
        self._interval = interval
        self._gpu_indices = tuple(gpu_indices)
        self._idle_factor = idle_factor
        self._pid_refresh = pid_refresh
        self._observers: list[VramObserver] = []
        self._readings: dict[str, GpuReading] | None = None  # host -> its latest reading
        self._report: VramReport | None = None
        self._pids: dict[str, _PidEntry] = {}  # container id -> its PIDs
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def report(self) -> VramReport | None:
        """The latest report; None before the first poll."""
        return self._report

    def hosts(self) -> tuple[str, ...]:
        """The hosts whose GPUs each poll reads: the supervisor's, in its order."""
        return tuple(self._supervisor.hosts) or (LOCAL_HOST,)

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
        """Read every host's GPUs, map the running models' processes, publish and return the
        report. Raises what the probes raised when every one of them did."""
        readings = await self._read_all(self.hosts())
        self._readings = readings
        self._forget_gone_containers()
        await _each(
            self._refresh_pids(host, reading) for host, reading in readings.items() if reading.gpus
        )
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
        """Stop polling. The probes belong to whoever built them and are not closed here."""
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

    async def _read_all(self, hosts: Sequence[str]) -> dict[str, GpuReading]:
        """Every host's reading, read at the same time; a host whose probe raised gets a
        reading that says so, unless every probe raised (then that is raised)."""
        if len(hosts) == 1:  # this machine alone: nothing to wait for side by side
            return {hosts[0]: await self._read(hosts[0])}
        answers = await asyncio.gather(*(self._read(h) for h in hosts), return_exceptions=True)
        errors = [a for a in answers if isinstance(a, BaseException)]
        if len(errors) == len(answers):
            raise errors[0]
        readings: dict[str, GpuReading] = {}
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                log.warning("reading the GPUs of %s failed: %s", host, answer)
                answer = GpuReading(message=f"Reading the GPUs of {host} failed: {answer}")
            readings[host] = answer
        return readings

    async def _read(self, host: str) -> GpuReading:
        probe = self._probes.get(host)
        if probe is None:
            return GpuReading(
                message=f"The GPUs of {host} are not read from here", hint=NO_PROBE_HINT
            )
        away = self._supervisor.host_problems.get(host) if host != LOCAL_HOST else None
        if away is not None:
            # Its SSH connection is what fails: asking would only hold up every other host's
            # gauge until ssh gives up. Read again once the host answers.
            return GpuReading(message=f"{host} does not answer: {away}")
        return await probe.read()

    def _on_instance(self, _inst: Instance) -> None:
        # A model started or stopped: redraw from the last readings without any I/O.
        if self._readings is not None:
            self._publish(self._build())

    def _build(self) -> VramReport:
        assert self._readings is not None
        instances = self._supervisor.instances()
        config = self._supervisor.config
        pids = {
            inst.key: self._pids[inst.container_id].pids
            for inst in instances
            if inst.running and inst.container_id is not None and inst.container_id in self._pids
        }
        hosts = list(self._readings)
        placed = {inst.key: host_of(inst, _managed(config, inst.key)) for inst in instances}
        parts: list[tuple[str, VramReport]] = []
        for host in hosts:
            # A model not placed yet (host: any) may land on any host: its budget is a plan on
            # each one.
            keys = {key for key, where in placed.items() if where in (host, ANY_HOST)}
            if len(hosts) == 1:
                keys |= {key for key, where in placed.items() if where not in hosts}
            parts.append(
                (
                    host,
                    build_vram_report(
                        self._readings[host],
                        instances,
                        pids,
                        config,
                        self._gpu_indices,
                        host=host,
                        keys=keys,
                    ),
                )
            )
        return merge_host_reports(parts)

    def _publish(self, report: VramReport) -> None:
        if report == self._report:
            return
        self._report = report
        for observer in list(self._observers):
            observer(report)

    def _running_containers(self) -> dict[str, Instance]:
        return {
            inst.container_id: inst
            for inst in self._supervisor.instances()
            if inst.running and inst.container_id is not None and not inst.external
        }

    def _forget_gone_containers(self) -> None:
        for gone in self._pids.keys() - self._running_containers().keys():
            del self._pids[gone]

    async def _refresh_pids(self, host: str, reading: GpuReading) -> None:
        """Read the PIDs of ``host``'s running containers where they may have changed."""
        running = {
            cid: inst
            for cid, inst in self._running_containers().items()
            if host_of(inst, None) == host
        }
        on_gpu = {p.pid for gpu in reading.gpus for p in gpu.processes}
        accounted = {pid for cid in running if cid in self._pids for pid in self._pids[cid].pids}
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
