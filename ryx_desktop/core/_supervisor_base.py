"""The supervisor's shared state: one ``Slot`` of bookkeeping per model, and how snapshots change.

The supervisor is split along its seams: this base (slots, publishing snapshots, failures),
``_lifecycle`` (starting, readiness, stopping), ``_watching`` (adoption, Docker events, probes,
idle timers) and ``supervisor`` (the public commands and the config). Each layer is a class the
next one extends; only ``supervisor.Supervisor`` is used outside the package.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.errors import RyxError, UnknownModelError
from ryx_desktop.core.gpu import GpuProbe, gpu_budget
from ryx_desktop.core.ports import Clock, ContainerRuntime, HealthProbe, HostFacts, SleepControl
from ryx_desktop.core.progress import LoadProgress
from ryx_desktop.core.readiness import GpuStartGate
from ryx_desktop.core.routing import resolve_model, served_name
from ryx_desktop.core.spec import LOCAL_HOST
from ryx_desktop.core.states import Failure, Instance, InstanceState

log = logging.getLogger(__name__)

Observer = Callable[[Instance], None]
SelectionObserver = Callable[[str | None], None]
ConfigObserver = Callable[[Config], None]
EngineObserver = Callable[[str | None], None]
HostObserver = Callable[[str, str | None], None]

#: Exit codes of a container that was asked to stop (SIGTERM handled, or 128 + SIGTERM).
CLEAN_EXIT_CODES = frozenset({0, 143})
LOG_TAIL = 20
#: After a failed first answer, how long to wait for the container to exit (it usually does:
#: vLLM's engine died), so the failure is the exit with the engine's own reason.
ANSWER_EXIT_GRACE = 5.0
#: At most this long (seconds) for an exited container's last log lines to arrive.
LOG_SETTLE = 2.0
#: Seconds between tries to reach an unreachable Docker engine: doubling up to the maximum.
ENGINE_RETRY_FIRST = 1.0
ENGINE_RETRY_MAX = 30.0
#: Seconds between two snapshots that only carry new request counts (in flight, last used).
USAGE_INTERVAL = 0.05
#: Instance fields that come from the config rather than from what the model is doing.
STATIC_FIELDS = (
    "name",
    "served_name",
    "aliases",
    "external",
    "port",
    "url",
    "gpu_memory_utilization",
    "host",
)
#: Of those, the ones a running container keeps until it restarts.
CONTAINER_FIELDS = frozenset({"served_name", "port", "url", "gpu_memory_utilization", "host"})


@dataclasses.dataclass(eq=False)
class Slot:
    """The supervisor's private bookkeeping for one model."""

    instance: Instance
    start_task: asyncio.Task[Instance] | None = None
    monitor_task: asyncio.Task[None] | None = None
    stopping: bool = False
    oom: bool = False
    failed_probes: int = 0
    # Live request counters; snapshots mirror them at most every USAGE_INTERVAL seconds.
    in_flight: int = 0
    last_used: float | None = None
    usage_pending: bool = False
    usage_published: float = float("-inf")  # loop time of the last usage snapshot
    # The spec hash the current start built, before its container id is known.
    spec_hash: str | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    drained: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Set when the log says the server is up, or the container died: the start loop looks now.
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # External models: (url, served name) learned from the server's /v1/models.
    learned_name: tuple[str, str] | None = None
    # The start's log follower: it ends once Docker has copied the exited container's last line.
    follower: asyncio.Task[None] | None = None
    # Load progress read from an adopted container's log so far: (container id, progress).
    adopted_progress: tuple[str, LoadProgress] | None = None
    # When it fell asleep (clock time), for sleep_ttl.
    asleep_since: float | None = None
    # The sleep level a wake under way comes from (for the room it plans).
    waking_from: int | None = None
    # Its vLLM refused to sleep: plain stop/start until its next start.
    sleep_refused: bool = False
    # When its last start failed (clock time), for the proxy's cool-down.
    failed_at: float | None = None


class SupervisorBase:
    """What every part of the supervisor shares: the config, the ports, the slots, observers."""

    _config: Config
    _runtime: ContainerRuntime
    _health: HealthProbe
    _sleep: SleepControl | None
    _host: HostFacts | None
    _gpu_probe: GpuProbe | None
    _clock: Clock
    _environ: dict[str, str]
    _gpu_indices: tuple[int, ...]
    _probe_interval: float
    _ready_poll_interval: float
    _exit_check_interval: float
    _gpu_starts: GpuStartGate
    _unhealthy_after: int
    _drain_timeout: float
    _observers: list[Observer]
    _slots: dict[str, Slot]
    _events_task: asyncio.Task[None] | None
    _watching: bool
    _engine_problem: str | None
    _engine_observers: list[EngineObserver]
    _host_problems: dict[str, str | None]
    _host_observers: list[HostObserver]
    _gpu_probes: dict[str, GpuProbe]
    _resyncs: dict[str, asyncio.Task[None]]

    def _new_slot(self, key: str) -> Slot:
        slot = Slot(instance=configured_instance(self._config, key))
        slot.drained.set()
        return slot

    def _set(self, key: str, **changes: Any) -> Instance:
        slot = self._slots[key]
        new = dataclasses.replace(slot.instance, **changes)
        if new != slot.instance:
            old_state = slot.instance.state
            slot.instance = new
            if new.state is not old_state:
                log.info("%s: %s -> %s %s", key, old_state, new.state, new.note)
            for observer in list(self._observers):
                observer(new)
        return new

    def _fail(self, key: str, error: RyxError) -> None:
        exit_code = getattr(error, "exit_code", None)
        tail = tuple(getattr(error, "log_tail", ()))
        failure = Failure(error.message, error.hint, exit_code, tail)
        self._slots[key].failed_at = self._clock.now()
        self._set(key, state=InstanceState.FAILED, failure=failure, progress=None, metrics=None)

    def resolve(self, name: str) -> str:
        """The key of the model called ``name``; UnknownModelError when there is none."""
        key = resolve_model(self._config, name)
        if key is None:
            known = ", ".join(self._config.models) or "none"
            raise UnknownModelError(f"no model is called {name!r} (configured: {known})")
        return key

    def _static_fields(self, key: str) -> dict[str, Any]:
        """What the current config says about ``key``'s instance, apart from its state."""
        fresh = configured_instance(self._config, key)
        fields = {name: getattr(fresh, name) for name in STATIC_FIELDS}
        slot = self._slots.get(key)
        learned = slot.learned_name if slot is not None else None
        model = self._config.models[key]
        if learned is not None and not model.served_name and learned[0] == fresh.url:
            fields["served_name"] = learned[1]  # an external server's name, learned by probing
        return fields

    def _mark_stopped(self, key: str, note: str) -> None:
        """No container any more: forget everything that described the running one."""
        cancel_monitor(self._slots[key])
        self._set(
            key,
            state=InstanceState.STOPPED,
            container_id=None,
            started_at=None,
            metrics=None,
            progress=None,
            failure=None,
            config_changed=False,
            adopted=False,
            sleep_level=None,
            host_ram_bytes=None,
            note=note,
            **self._static_fields(key),
        )

    def _set_engine_problem(self, problem: str | None) -> None:
        """Say whether the local Docker engine answers (None) or why not."""
        self._set_host_problem(LOCAL_HOST, problem)

    def _set_host_problem(self, host: str, problem: str | None) -> None:
        """Say whether ``host``'s engine answers (None) or why not; observers hear changes.

        The local engine's state is also ``engine_problem`` (and its observers')."""
        if host in self._host_problems and problem == self._host_problems[host]:
            return
        self._host_problems[host] = problem
        if host == LOCAL_HOST and problem != self._engine_problem:
            self._engine_problem = problem
            if problem is None:
                log.info("the Docker engine answers again")
            else:
                log.warning("the Docker engine is unreachable: %s", problem)
            for engine_observer in list(self._engine_observers):
                engine_observer(problem)
        elif host != LOCAL_HOST:
            if problem is None:
                log.info("host %s: its Docker engine answers", host)
            else:
                log.warning("host %s is unreachable: %s", host, problem)
        for observer in list(self._host_observers):
            observer(host, problem)

    def _ensure_monitor(self, key: str) -> None:
        """Probe the running model ``key`` from now on (the watching layer does)."""
        raise NotImplementedError


def is_managed(model: object) -> bool:
    return isinstance(model, ModelConfig)


def configured_instance(config: Config, key: str) -> Instance:
    """Model ``key``'s snapshot as the config describes it, before anything is known of it."""
    model = config.models[key]
    if isinstance(model, ModelConfig):
        return Instance(
            key=key,
            name=model.display_name(key),
            served_name=served_name(config, key),
            aliases=tuple(model.aliases),
            port=model.port,
            url=f"http://127.0.0.1:{model.port}",
            gpu_memory_utilization=gpu_budget(model),  # None without a GPU
            host=model.host,
        )
    return Instance(
        key=key,
        name=model.display_name(key),
        served_name=served_name(config, key),
        aliases=tuple(model.aliases),
        external=True,
        url=model.url,
        state=InstanceState.UNREACHABLE,
        host="",
    )


def consume_exception(task: asyncio.Task[Instance]) -> None:
    if not task.cancelled():
        task.exception()


def cancel_monitor(slot: Slot) -> None:
    if slot.monitor_task is not None:
        slot.monitor_task.cancel()
        slot.monitor_task = None
