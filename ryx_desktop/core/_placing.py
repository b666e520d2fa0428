"""Hosts as the supervisor sees them: which engines answer, where a model starts, who is away.

Each model runs on one host: ``local`` (the ``docker:`` engine) or a name from ``hosts:``. Its
snapshot's ``host`` says which (a ``host: any`` model shows ``any`` until it is placed). With a
runtime over several engines (``HostsRuntime``) the runtime reports each host's reachability to
the supervisor's ``host_changed`` (in ``_watching``); without one only the local engine exists
and its state is the event follower's. A host that does not answer turns its models ``unreachable``
with the reason; a start on it is refused at once with that reason. A ``host: any`` model is
placed by :func:`~ryx_desktop.core.placement.pick_host` over the hosts that answer, with each
host's GPUs as its probe measures them now (the local NVML probe, or nvidia-smi over SSH).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from ryx_desktop.config import ModelConfig
from ryx_desktop.core._supervisor_base import HostObserver, SupervisorBase, cancel_monitor
from ryx_desktop.core.errors import ConfigError, HostUnreachableError
from ryx_desktop.core.gpu import GpuProbe, GpuStatus
from ryx_desktop.core.placement import HostRoom, pick_host
from ryx_desktop.core.ports import HostsRuntime
from ryx_desktop.core.spec import ANY_HOST, LOCAL_HOST
from ryx_desktop.core.states import InstanceState

log = logging.getLogger(__name__)

#: Why a host added to the config while the app runs has no engine yet.
NEW_HOST = "added to the config after ryx-desktop started: quit and start it again to connect"
#: How long placing waits for one host's GPU reading before it counts as unknown.
GPU_READ_TIMEOUT = 10.0


class Placing(SupervisorBase):
    """Host state, placement of ``host: any`` models, and models turned unreachable."""

    # ---- what the UI and the CLI read --------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        """``local`` first, then the config's ``hosts:`` in their order."""
        return (LOCAL_HOST, *(h for h in self._config.hosts if h != LOCAL_HOST))

    @property
    def host_problems(self) -> Mapping[str, str | None]:
        """Each host's state: None when its engine answers (or is not known yet), else why not."""
        engines = self._engine_hosts()
        return {
            host: self._host_problems.get(host) if host in engines else NEW_HOST
            for host in self.hosts
        }

    def subscribe_hosts(self, observer: HostObserver) -> Callable[[], None]:
        """``observer(host, problem)`` on each change of a host's state; returns the
        unsubscribe function."""
        self._host_observers.append(observer)
        return lambda: self._host_observers.remove(observer)

    # ---- which engines exist -----------------------------------------------------------------

    @property
    def _multi(self) -> bool:
        return isinstance(self._runtime, HostsRuntime)

    def _engine_hosts(self) -> tuple[str, ...]:
        """The hosts the runtime has an engine for."""
        if isinstance(self._runtime, HostsRuntime):
            return self._runtime.hosts
        return (LOCAL_HOST,)

    def _check_host(self, key: str, host: str) -> None:
        """Refuse a start on a host without an engine here, or one that does not answer."""
        if host not in self._engine_hosts():
            if host in self._config.hosts:
                raise ConfigError(
                    f"{key} runs on host {host}, which was added to the config after "
                    "ryx-desktop started",
                    "Quit ryx-desktop and start it again to connect to the new host.",
                )
            raise ConfigError(
                f"{key} runs on host {host!r}, which is not under `hosts:` in the config",
                f"Add {host} under `hosts:`, or set {key}'s `host:` to local.",
            )
        problem = self._host_problems.get(host)
        if problem is not None:
            raise HostUnreachableError(
                f"{key} cannot start: host {host} does not answer ({problem})",
                f"Check that {host} is up and reachable over SSH (`ryx-desktop hosts` tells "
                "what fails); its models come back by themselves once it answers.",
                host=host,
            )

    # ---- placement ---------------------------------------------------------------------------

    async def _host_for_start(self, key: str) -> str:
        """The host ``key`` starts on: its ``host:``, or the one picked for ``host: any``."""
        model = self._config.models[key]
        assert isinstance(model, ModelConfig)
        if model.host != ANY_HOST:
            self._check_host(key, model.host)
            return model.host
        answering = [h for h in self._engine_hosts() if self._host_problems.get(h) is None]
        readings = await asyncio.gather(*(self._measure(h) for h in answering))
        rooms = [
            HostRoom(host, gpus, self._running_on(host))
            for host, gpus in zip(answering, readings, strict=True)
        ]
        devices = model.devices
        indices = (
            None
            if devices == "all"
            else frozenset()
            if isinstance(devices, str)
            else frozenset(devices)
        )
        picked = pick_host(rooms, gpu_indices=indices, share=model.gpu_memory_utilization)
        if picked is None:
            problems = "; ".join(
                f"{h}: {p}" for h, p in self._host_problems.items() if p is not None
            )
            raise HostUnreachableError(
                f"{key} cannot start: no host answers ({problems or 'none configured'})",
                "Check the hosts with `ryx-desktop hosts`; the model starts once one answers.",
            )
        log.info("%s: placed on host %s: %s", key, picked.host, picked.reason)
        return picked.host

    def _gpu_probe_of(self, host: str) -> GpuProbe | None:
        if host == LOCAL_HOST:
            return self._gpu_probe
        return self._gpu_probes.get(host)

    async def _measure(self, host: str) -> tuple[GpuStatus, ...] | None:
        """``host``'s GPUs as its probe reads them now; None when they cannot be read."""
        probe = self._gpu_probe_of(host)
        if probe is None:
            return None
        try:
            async with asyncio.timeout(GPU_READ_TIMEOUT):
                reading = await probe.read()
        except TimeoutError:
            log.warning("host %s: its GPUs did not answer within %g s", host, GPU_READ_TIMEOUT)
            return None
        return reading.gpus or None

    def _on_host(self, key: str, host: str) -> bool:
        """True when ``key`` runs (or is to run) on ``host``: only models there share its GPUs."""
        return self._slots[key].instance.host == host

    def _running_on(self, host: str) -> int:
        return sum(
            1
            for key, slot in self._slots.items()
            if self._on_host(key, host) and slot.instance.running
        )

    # ---- hosts going away --------------------------------------------------------------------

    def _host_away(self, host: str, problem: str) -> None:
        """Every model on ``host`` is unreachable now (a start under way fails by itself)."""
        for key, slot in self._slots.items():
            inst = slot.instance
            if inst.external or inst.host != host:
                continue
            if slot.stopping or (slot.start_task is not None and not slot.start_task.done()):
                continue
            cancel_monitor(slot)
            self._set(
                key,
                state=InstanceState.UNREACHABLE,
                progress=None,
                metrics=None,
                note=f"host {host} does not answer: {problem}",
            )
