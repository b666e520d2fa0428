"""The supervisor: one immutable ``Instance`` snapshot per model, and the commands that change them.

It starts, stops and watches models through the ``ContainerRuntime`` and ``HealthProbe``
protocols, on the asyncio loop it runs on, with an injectable ``Clock``. Docker is the source
of truth: at ``open`` it adopts the containers that already run, and Docker events keep it in
step with containers that other processes start or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core._supervisor_base import (
    CONTAINER_FIELDS,
    USAGE_INTERVAL,
    ConfigObserver,
    EngineObserver,
    HostObserver,
    Observer,
    SelectionObserver,
    Slot,
    cancel_monitor,
    configured_instance,
    consume_exception,
    is_managed,
)
from ryx_desktop.core._watching import Watching
from ryx_desktop.core.credentials import api_key_of
from ryx_desktop.core.errors import (
    DockerError,
    DockerPermissionError,
    DockerUnavailableError,
    RyxError,
    StartCancelledError,
)
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.ports import Clock, ContainerRuntime, HealthProbe, HostFacts, SleepControl
from ryx_desktop.core.readiness import GpuStartGate
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.spec import ANY_HOST, build_spec
from ryx_desktop.core.states import Failure, Instance, InstanceState

__all__ = [
    "ConfigObserver",
    "EngineObserver",
    "Observer",
    "SelectionObserver",
    "Supervisor",
    "configured_instance",
]

log = logging.getLogger(__name__)


class Supervisor(Watching):
    """Owns the lifecycle of every configured model."""

    def __init__(
        self,
        config: Config,
        runtime: ContainerRuntime,
        health: HealthProbe,
        clock: Clock,
        *,
        environ: Mapping[str, str] | None = None,
        gpu_indices: Sequence[int] = (0,),
        probe_interval: float = 2.0,
        ready_poll_interval: float = 0.05,
        exit_check_interval: float = 1.0,
        unhealthy_after: int = 3,
        drain_timeout: float = 30.0,
        sleep_control: SleepControl | None = None,
        host_facts: HostFacts | None = None,
        gpu_probe: GpuProbe | None = None,
        gpu_probes: Mapping[str, GpuProbe] | None = None,
    ) -> None:
        """``probe_interval``: between probes of running models. While a model starts, it is
        probed every ``ready_poll_interval`` (vLLM refuses connections until it is up, cheaply)
        and its container inspected every ``exit_check_interval`` (or at once on a Docker
        ``die`` event or the end of its log). ``gpu_probe`` reads this machine's GPUs,
        ``gpu_probes`` other hosts' (by host name), for planning room and placing models.

        With a runtime over several engines (``HostsRuntime``) wire its host reports to
        :meth:`host_changed`."""
        self._config = config
        self._runtime = runtime
        self._health = health
        self._sleep = sleep_control  # None: no model can sleep (sleep_mode models stop instead)
        self._host = host_facts  # None: host RAM unknown, sleeps to make room are level 2
        self._gpu_probe = gpu_probe  # None: room is planned on the configured shares
        self._gpu_probes = dict(gpu_probes or {})
        self._clock = clock
        self._environ = dict(environ or {})
        self._gpu_indices = tuple(gpu_indices)
        self._probe_interval = probe_interval
        self._ready_poll_interval = ready_poll_interval
        self._exit_check_interval = exit_check_interval
        self._gpu_starts = GpuStartGate()
        self._unhealthy_after = unhealthy_after
        self._drain_timeout = drain_timeout
        self._observers: list[Observer] = []
        self._selection_observers: list[SelectionObserver] = []
        self._config_observers: list[ConfigObserver] = []
        self._reconfiguring = asyncio.Lock()  # one config change at a time
        self._selected = (
            resolve_model(config, config.default_model) if config.default_model else None
        )
        self._slots: dict[str, Slot] = {key: self._new_slot(key) for key in config.models}
        self._events_task: asyncio.Task[None] | None = None
        self._watching = False
        self._engine_problem: str | None = None  # why the Docker engine does not answer
        self._engine_observers: list[EngineObserver] = []
        self._host_problems: dict[str, str | None] = {}
        self._host_observers: list[HostObserver] = []
        self._resyncs: dict[str, asyncio.Task[None]] = {}

    # ---- snapshots -------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    def instances(self) -> list[Instance]:
        """Every model's snapshot, in config order."""
        return [slot.instance for slot in self._slots.values()]

    def get(self, name: str) -> Instance:
        """The snapshot of the model called ``name`` (key, served name or alias)."""
        return self._slots[self.resolve(name)].instance

    def upstream_api_key(self, name: str) -> str | None:
        """The API key the model's own server requires (``--api-key`` / ``VLLM_API_KEY``).

        The proxy sends it upstream as ``Authorization: Bearer``; snapshots never carry it.
        """
        return api_key_of(self._config, self.resolve(name))

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with each new snapshot; returns the function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    # ---- the selected model ------------------------------------------------------------------

    @property
    def selected(self) -> str | None:
        """The key of the model that answers requests naming no model (None: none chosen)."""
        return self._selected

    def select(self, name: str) -> str:
        """Make the model called ``name`` the selected one; returns its key."""
        key = self.resolve(name)
        if key != self._selected:
            self._selected = key
            log.info("selected model: %s", key)
            for observer in list(self._selection_observers):
                observer(key)
        return key

    def subscribe_selection(self, observer: SelectionObserver) -> Callable[[], None]:
        """Call ``observer`` with the new key whenever the selection changes."""
        self._selection_observers.append(observer)
        return lambda: self._selection_observers.remove(observer)

    # ---- changing the config -----------------------------------------------------------------

    def subscribe_config(self, observer: ConfigObserver) -> Callable[[], None]:
        """Call ``observer`` with the new config after each ``reconfigure``."""
        self._config_observers.append(observer)
        return lambda: self._config_observers.remove(observer)

    async def reconfigure(self, config: Config) -> list[str]:
        """Switch to ``config`` without restarting what runs; the keys that need a restart.

        Models no longer configured (or turned from managed into external, or back) are stopped
        and dropped; new ones appear stopped (external ones are watched). A running model whose
        container spec differs from the new config keeps its container, port and served name
        until it restarts: it is marked ``config_changed`` and its key returned.
        """
        async with self._reconfiguring:
            return await self._reconfigure(config)

    async def _reconfigure(self, config: Config) -> list[str]:
        old = self._config
        gone = [
            key
            for key, model in old.models.items()
            if key not in config.models or is_managed(config.models[key]) != is_managed(model)
        ]
        for key in gone:
            await self.stop(key, reason="removed from the config")
            cancel_monitor(self._slots[key])
        running_hash = {
            key: await self._running_spec_hash(key, old, config)
            for key, slot in self._slots.items()
            if key not in gone and slot.instance.running and not slot.instance.external
        }
        # From here on nothing awaits: the config and the slots change together.
        self._config = config
        slots, self._slots = self._slots, {}
        changed: list[str] = []
        for key in config.models:
            slot = slots.get(key) if key not in gone else None
            if slot is None:
                self._slots[key] = self._new_slot(key)
                if self._slots[key].instance.external:
                    self._ensure_monitor(key)
                continue
            self._slots[key] = slot
            fields = self._static_fields(key)
            if key in running_hash:
                where = slot.instance.host
                fields.pop("host")  # it runs where it runs until it restarts
                wanted = build_spec(key, config, self._environ, host=where).spec_hash
                model = config.models[key]
                moved = isinstance(model, ModelConfig) and model.host not in (where, ANY_HOST)
                differs = running_hash[key] != wanted or moved
                if differs:
                    changed.append(key)
                    fields = {k: v for k, v in fields.items() if k not in CONTAINER_FIELDS}
                if differs != slot.instance.config_changed:
                    fields.update(
                        config_changed=differs,
                        note="config changed, restart to apply" if differs else "",
                    )
            self._set(key, **fields)
        for observer in list(self._config_observers):
            observer(config)
        self._keep_selection_valid(old, config)
        return changed

    async def _running_spec_hash(self, key: str, old: Config, new: Config) -> str:
        """The spec hash ``key`` runs (or is being started) with.

        A container without our label counts as running ``old``'s spec. A start that has not
        built its spec yet will build it from ``new``.
        """
        slot = self._slots[key]
        container_id = slot.instance.container_id
        where = slot.instance.host
        if container_id is None:
            return slot.spec_hash or build_spec(key, new, self._environ, host=where).spec_hash
        try:
            info = await self._runtime.inspect(container_id)
        except RyxError as error:
            log.warning("cannot inspect %s's container: %s", key, error)
            info = None
        if info is not None and info.spec_hash is not None:
            return info.spec_hash
        return build_spec(key, old, self._environ, host=where).spec_hash

    def _keep_selection_valid(self, old: Config, config: Config) -> None:
        """Follow a changed ``default_model``; replace a selection whose model is gone."""
        wanted = self._selected
        if config.default_model and config.default_model != old.default_model:
            wanted = resolve_model(config, config.default_model)
        elif wanted not in config.models:
            wanted = resolve_model(config, config.default_model) if config.default_model else None
        if wanted != self._selected:
            self._selected = wanted
            log.info("selected model: %s", wanted)
            for observer in list(self._selection_observers):
                observer(wanted)

    # ---- lifecycle of the supervisor itself ------------------------------------------------

    @property
    def engine_problem(self) -> str | None:
        """Why the Docker engine does not answer now (None: it does)."""
        return self._engine_problem

    def subscribe_engine(self, observer: EngineObserver) -> Callable[[], None]:
        """``observer(problem)`` whenever the engine becomes unreachable (a sentence) or
        answers again (None). Returns the unsubscribe function."""
        self._engine_observers.append(observer)
        return lambda: self._engine_observers.remove(observer)

    async def open(self, *, watch: bool = True) -> None:
        """Adopt the containers that run already; with ``watch``, follow events and probe.

        Without ``watch`` an unreachable Docker engine is an error. With it, the supervisor
        opens anyway, says so (``engine_problem``), and adopts what runs once the engine
        answers (at login the app may start before the Docker service does).
        """
        self._watching = watch
        try:
            found = await self._runtime.list_models()
        except (DockerUnavailableError, DockerPermissionError, DockerError) as error:
            if not watch:
                raise
            self._set_engine_problem(error.message)
            found = []
        for info in found:
            if info.model_key in self._slots:
                await self._adopt(info)
        if watch:
            self._events_task = asyncio.create_task(self._follow_events(), name="ryx-events")
            for key, slot in self._slots.items():
                if slot.instance.external:
                    self._ensure_monitor(key)
        else:
            await self.refresh()

    async def refresh(self) -> None:
        """Probe every model once and update its state (used without ``watch``)."""
        await asyncio.gather(*(self._probe_once(key) for key in self._slots))

    async def close(self) -> None:
        """Stop watching. Models keep running."""
        tasks: list[asyncio.Task[Any]] = [t for t in (self._events_task,) if t is not None]
        tasks += list(self._resyncs.values())
        self._resyncs.clear()
        for slot in self._slots.values():
            tasks += [t for t in (slot.start_task, slot.monitor_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._events_task = None

    # ---- commands ---------------------------------------------------------------------------

    async def ensure_ready(self, name: str) -> Instance:
        """Return once the model is ready, starting it if needed; one shared start per model."""
        key = self.resolve(name)
        slot = self._slots[key]
        inst = slot.instance
        if inst.external:
            return await self._ensure_external(key)
        if inst.state in (InstanceState.READY, InstanceState.UNHEALTHY):
            return inst
        if inst.state is InstanceState.UNREACHABLE:
            served = await self._while_host_away(key)
            if served is not None:
                return served
            inst = slot.instance
            if inst.state in (InstanceState.READY, InstanceState.UNHEALTHY):
                return inst
        if slot.start_task is None or slot.start_task.done():
            if inst.state is InstanceState.SLEEPING:
                slot.start_task = asyncio.create_task(self._run_wake(key), name=f"ryx-wake-{key}")
                slot.start_task.add_done_callback(consume_exception)
            elif inst.state is InstanceState.STARTING and inst.container_id is not None:
                self._start_adopted(key, inst.container_id)  # loading already: wait for it
            else:
                slot.start_task = asyncio.create_task(self._run_start(key), name=f"ryx-start-{key}")
                slot.start_task.add_done_callback(consume_exception)
        start = slot.start_task
        assert start is not None
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not start.cancelled() or (current is not None and current.cancelling()):
                raise  # the caller itself was cancelled
        # Its start was called off (stopped, or evicted for another model's start).
        note = self._slots[key].instance.note if key in self._slots else ""
        raise StartCancelledError(
            f"the start of {key} was called off" + (f": {note}" if note else "")
        )

    start = ensure_ready

    def recent_failure(self, name: str, within: float) -> Failure | None:
        """The failure of the model's last start when it failed less than ``within`` seconds
        ago and has not been started since: a client's retry should get it at once rather
        than start the model again (the openai clients retry a 503 twice by default)."""
        key = self.resolve(name)
        slot = self._slots[key]
        inst = slot.instance
        if inst.state is not InstanceState.FAILED or slot.failed_at is None:
            return None
        if self._clock.now() - slot.failed_at >= within:
            return None
        return inst.failure

    async def wake(self, name: str) -> Instance:
        """Wake a sleeping model (or start a stopped one); return once it answers."""
        return await self.ensure_ready(name)

    async def restart(self, name: str) -> Instance:
        """Stop the model, then start it again with the current config."""
        await self.stop(name, reason="restarting")
        return await self.ensure_ready(name)

    async def stop_all(self) -> None:
        """Stop every running model."""
        await asyncio.gather(*(self.stop(k) for k, s in self._slots.items() if s.instance.running))

    # ---- requests in flight -----------------------------------------------------------------

    def request_started(self, key: str) -> None:
        """A request for ``key`` is in flight: it delays stops and resets the idle timer."""
        slot = self._slots[key]
        slot.in_flight += 1
        slot.last_used = self._clock.now()
        slot.drained.clear()
        self._publish_usage_soon(key, slot)

    def request_finished(self, key: str) -> None:
        """A request for ``key`` is done."""
        slot = self._slots.get(key)
        if slot is None:
            return  # the model was removed from the config while the request ran
        slot.in_flight = max(0, slot.in_flight - 1)
        slot.last_used = self._clock.now()
        if slot.in_flight == 0:
            slot.drained.set()
        self._publish_usage_soon(key, slot)

    def _publish_usage_soon(self, key: str, slot: Slot) -> None:
        # The proxy calls this twice per request. A snapshot costs a replace, a compare and every
        # observer (metrics, the log, the UI bridge): under load the counters reach snapshots at
        # most every USAGE_INTERVAL seconds (the first change after a quiet spell at once, on the
        # next loop iteration); the supervisor itself reads the live counters.
        if slot.usage_pending:
            return
        slot.usage_pending = True
        loop = asyncio.get_running_loop()
        wait = slot.usage_published + USAGE_INTERVAL - loop.time()
        if wait <= 0:
            loop.call_soon(self._publish_usage, key, slot)
        else:
            loop.call_later(wait, self._publish_usage, key, slot)

    def _publish_usage(self, key: str, slot: Slot) -> None:
        slot.usage_pending = False
        if self._slots.get(key) is not slot:
            return  # removed by reconfigure
        slot.usage_published = asyncio.get_running_loop().time()
        self._set(key, in_flight=slot.in_flight, last_used=slot.last_used)

    @contextlib.asynccontextmanager
    async def track_request(self, key: str) -> AsyncIterator[None]:
        """Count a request as in flight for as long as the block runs."""
        self.request_started(key)
        try:
            yield
        finally:
            self.request_finished(key)
