"""The supervisor: one immutable ``Instance`` snapshot per model, and the commands that change them.

It starts, stops and watches models through the ``ContainerRuntime`` and ``HealthProbe``
protocols, on the asyncio loop it runs on, with an injectable ``Clock``. Docker is the source
of truth: at ``open`` it adopts the containers that already run, and Docker events keep it in
step with containers that other processes start or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.credentials import api_key_of
from ryx_desktop.core.errors import (
    ContainerExitedError,
    RyxError,
    StartCancelledError,
    StartTimeoutError,
    UnknownModelError,
    UnreachableError,
)
from ryx_desktop.core.external import judge_external
from ryx_desktop.core.failures import DIAGNOSIS_LINES, exit_error
from ryx_desktop.core.planner import GpuClaim, gpus_of, plan_evictions
from ryx_desktop.core.ports import (
    Clock,
    ContainerInfo,
    ContainerRuntime,
    ContainerStatus,
    HealthProbe,
    PullProgress,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.progress import LoadProgress
from ryx_desktop.core.readiness import (
    FirstAnswerError,
    GpuStartGate,
    parse_startup_complete,
    sleep_or_wake,
)
from ryx_desktop.core.routing import resolve_model, served_name
from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import Failure, Instance, InstanceState, Progress, ProgressPhase

log = logging.getLogger(__name__)

Observer = Callable[[Instance], None]
SelectionObserver = Callable[[str | None], None]
ConfigObserver = Callable[[Config], None]

#: Exit codes of a container that was asked to stop (SIGTERM handled, or 128 + SIGTERM).
_CLEAN_EXIT_CODES = frozenset({0, 143})
_LOG_TAIL = 20
#: After a failed first answer, how long to wait for the container to exit (it usually does:
#: vLLM's engine died), so the failure is the exit with the engine's own reason.
_ANSWER_EXIT_GRACE = 5.0
#: At most this long (seconds) for an exited container's last log lines to arrive.
_LOG_SETTLE = 2.0
#: Instance fields that come from the config rather than from what the model is doing.
_STATIC_FIELDS = (
    "name",
    "served_name",
    "aliases",
    "external",
    "port",
    "url",
    "gpu_memory_utilization",
)
#: Of those, the ones a running container keeps until it restarts.
_CONTAINER_FIELDS = frozenset({"served_name", "port", "url", "gpu_memory_utilization"})


@dataclasses.dataclass(eq=False)
class _Slot:
    """The supervisor's private bookkeeping for one model."""

    instance: Instance
    start_task: asyncio.Task[Instance] | None = None
    monitor_task: asyncio.Task[None] | None = None
    stopping: bool = False
    oom: bool = False
    failed_probes: int = 0
    # Live request counters; snapshots mirror them at most once per loop iteration.
    in_flight: int = 0
    last_used: float | None = None
    usage_pending: bool = False
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


class Supervisor:
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
    ) -> None:
        """``probe_interval``: between probes of running models. While a model starts, it is
        probed every ``ready_poll_interval`` (vLLM refuses connections until it is up, cheaply)
        and its container inspected every ``exit_check_interval`` (or at once on a Docker
        ``die`` event or the end of its log)."""
        self._config = config
        self._runtime = runtime
        self._health = health
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
        self._slots: dict[str, _Slot] = {key: self._new_slot(key) for key in config.models}
        self._events_task: asyncio.Task[None] | None = None
        self._watching = False

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

    def resolve(self, name: str) -> str:
        """The key of the model called ``name``; UnknownModelError when there is none."""
        key = resolve_model(self._config, name)
        if key is None:
            known = ", ".join(self._config.models) or "none"
            raise UnknownModelError(f"no model is called {name!r} (configured: {known})")
        return key

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
            if key not in config.models or _managed(config.models[key]) != _managed(model)
        ]
        for key in gone:
            await self.stop(key, reason="removed from the config")
            _cancel_monitor(self._slots[key])
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
                differs = running_hash[key] != build_spec(key, config, self._environ).spec_hash
                if differs:
                    changed.append(key)
                    fields = {k: v for k, v in fields.items() if k not in _CONTAINER_FIELDS}
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
        if container_id is None:
            return slot.spec_hash or build_spec(key, new, self._environ).spec_hash
        try:
            info = await self._runtime.inspect(container_id)
        except RyxError as error:
            log.warning("cannot inspect %s's container: %s", key, error)
            info = None
        if info is not None and info.spec_hash is not None:
            return info.spec_hash
        return build_spec(key, old, self._environ).spec_hash

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

    def _static_fields(self, key: str) -> dict[str, Any]:
        """What the current config says about ``key``'s instance, apart from its state."""
        fresh = configured_instance(self._config, key)
        fields = {name: getattr(fresh, name) for name in _STATIC_FIELDS}
        slot = self._slots.get(key)
        learned = slot.learned_name if slot is not None else None
        model = self._config.models[key]
        if learned is not None and not model.served_name and learned[0] == fresh.url:
            fields["served_name"] = learned[1]  # an external server's name, learned by probing
        return fields

    # ---- lifecycle of the supervisor itself ------------------------------------------------

    async def open(self, *, watch: bool = True) -> None:
        """Adopt the containers that run already; with ``watch``, follow events and probe."""
        self._watching = watch
        for info in await self._runtime.list_models():
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
        if slot.start_task is None or slot.start_task.done():
            if inst.state is InstanceState.STARTING and inst.container_id is not None:
                self._start_adopted(key, inst.container_id)  # loading already: wait for it
            else:
                slot.start_task = asyncio.create_task(self._run_start(key), name=f"ryx-start-{key}")
                slot.start_task.add_done_callback(_consume_exception)
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

    async def stop(self, name: str, *, reason: str = "") -> Instance:
        """Drain the model's requests (bounded), then stop and remove its container."""
        key = self.resolve(name)
        slot = self._slots[key]
        if slot.instance.external:
            return slot.instance
        async with slot.lock:
            slot.stopping = True
            try:
                await self._stop_locked(key, reason)
            finally:
                slot.stopping = False
        return slot.instance

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

    def _publish_usage_soon(self, key: str, slot: _Slot) -> None:
        # The proxy calls this twice per request; under load one new snapshot per loop
        # iteration is plenty for observers, and the supervisor reads the live counters.
        if not slot.usage_pending:
            slot.usage_pending = True
            asyncio.get_running_loop().call_soon(self._publish_usage, key, slot)

    def _publish_usage(self, key: str, slot: _Slot) -> None:
        slot.usage_pending = False
        if self._slots.get(key) is not slot:
            return  # removed by reconfigure
        self._set(key, in_flight=slot.in_flight, last_used=slot.last_used)

    @contextlib.asynccontextmanager
    async def track_request(self, key: str) -> AsyncIterator[None]:
        """Count a request as in flight for as long as the block runs."""
        self.request_started(key)
        try:
            yield
        finally:
            self.request_finished(key)

    # ---- internals: state --------------------------------------------------------------------

    def _new_slot(self, key: str) -> _Slot:
        slot = _Slot(instance=configured_instance(self._config, key))
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
        self._set(key, state=InstanceState.FAILED, failure=failure, progress=None, metrics=None)

    # ---- internals: starting ----------------------------------------------------------------

    async def _run_start(self, key: str) -> Instance:
        model = self._config.models[key]
        assert isinstance(model, ModelConfig)
        async with self._slots[key].lock:
            pass  # let a stop that is under way finish first
        self._slots[key].spec_hash = None
        self._set(
            key,
            state=InstanceState.STARTING,
            progress=None,
            failure=None,
            note="",
            adopted=False,
            config_changed=False,
            **self._static_fields(key),
        )
        try:
            await self._make_room(key)
            spec = build_spec(key, self._config, self._environ)
            self._slots[key].spec_hash = spec.spec_hash

            def on_pull(p: PullProgress) -> None:
                detail = f"pulling {p.image}: {p.layers_done}/{p.layers_total} layers"
                self._set(key, progress=Progress(ProgressPhase.PULL, p.percent, detail))

            await self._runtime.ensure_image(spec.image, on_pull)

            def on_wait(why: str) -> None:
                self._set(key, progress=Progress(ProgressPhase.CREATE, None, why))

            # Two vLLMs sizing their KV cache on one GPU at once both get it wrong: take turns.
            gpus = gpus_of(model.devices, self._gpu_indices)
            async with self._gpu_starts.hold(key, gpus, on_wait):
                self._set(key, progress=Progress(ProgressPhase.CREATE))
                info = await self._runtime.start(spec)
                self._set(key, container_id=info.id, progress=Progress(ProgressPhase.LOAD))
                timeout = model.start_timeout or self._config.start_timeout
                await self._wait_ready(key, info.id, timeout)
        except RyxError as error:
            self._fail(key, error)
            raise
        return self._slots[key].instance

    async def _make_room(self, key: str) -> None:
        target = self._claim(key)
        claims = (self._claim(k) for k in self._slots if k != key)
        others = [c for c in claims if c is not None]
        if target is None:
            return
        for victim in plan_evictions(
            target, others, self._config.gpu.policy, self._config.gpu.headroom
        ):
            await self.stop(victim, reason=f"stopped to make room for {key}")

    def _claim(self, key: str) -> GpuClaim | None:
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return None
        inst = self._slots[key].instance
        return GpuClaim(
            key=key,
            gpus=gpus_of(model.devices, self._gpu_indices),
            share=model.gpu_memory_utilization,
            state=inst.state,
            in_flight=self._slots[key].in_flight,
            last_used=self._slots[key].last_used,
        )

    async def _wait_ready(self, key: str, container_id: str, timeout: float) -> None:
        """Probe until ready; follow the log for progress; fail on exit or timeout.

        Probes every ``ready_poll_interval``; looks at once when the log says the server is
        up or the container died (``slot.wake``); inspects the container every
        ``exit_check_interval`` otherwise. Ready also needs a first answer (when configured).
        """
        slot = self._slots[key]
        deadline = self._clock.now() + timeout
        recent: deque[str] = deque(maxlen=_LOG_TAIL)
        slot.wake.clear()
        follower = asyncio.create_task(self._follow_progress(key, container_id, recent))
        follower.add_done_callback(lambda _: slot.wake.set())  # the log ends with the container
        slot.follower = follower
        api_key = api_key_of(self._config, key)
        next_inspect = self._clock.now()
        try:
            while True:
                if slot.wake.is_set() or self._clock.now() >= next_inspect:
                    slot.wake.clear()
                    next_inspect = self._clock.now() + self._exit_check_interval
                    info = await self._runtime.inspect(container_id)
                    if info is None or info.status is not ContainerStatus.RUNNING:
                        raise await self._exit_error(key, container_id, info, recent)
                inst = slot.instance
                result = await self._health.probe(inst.url or "", api_key)
                if result.serves(inst.served_name):
                    await self._first_answer(key, container_id, recent, api_key)
                    slot.failed_probes = 0
                    slot.last_used = slot.last_used or self._clock.now()
                    self._set(
                        key,
                        state=InstanceState.READY,
                        progress=None,
                        started_at=self._clock.now(),
                        last_used=slot.last_used,
                    )
                    self._ensure_monitor(key)
                    return
                if self._clock.now() >= deadline:
                    tail = await self._tail(container_id, recent)
                    await self._runtime.stop(container_id, self._config.docker.stop_timeout)
                    self._set(key, container_id=None)
                    last = f" (last probe: {result.error})" if result.error else ""
                    raise StartTimeoutError(
                        f"{key} was not ready after {timeout:g} s{last}",
                        log_tail=tail,
                    )
                await sleep_or_wake(self._clock, self._ready_poll_interval, slot.wake)
        finally:
            slot.follower = None
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower

    def _notice_log_line(self, key: str, line: str) -> None:
        """Called by the log follower with each line: wake the start loop when the server is up."""
        slot = self._slots.get(key)
        if slot is not None and parse_startup_complete(line):
            slot.wake.set()

    def _first_answer_wanted(self, key: str) -> bool:
        model = self._config.models[key]
        if isinstance(model, ModelConfig) and model.first_answer_check is not None:
            return model.first_answer_check
        return self._config.first_answer_check

    async def _first_answer(
        self, key: str, container_id: str, recent: deque[str], api_key: str | None
    ) -> None:
        """Ask the model for one token; raise when it cannot answer (see ``first_answer_check``).

        A failed answer usually kills vLLM's engine and then its server: when the container
        exits within ``_ANSWER_EXIT_GRACE`` that exit, with its log, is the failure. Otherwise
        the container is stopped and the answer's own error is the failure.
        """
        if not self._first_answer_wanted(key):
            return
        inst = self._slots[key].instance
        percent = inst.progress.percent if inst.progress is not None else None
        self._set(key, progress=Progress(ProgressPhase.LOAD, percent, "answering a first request"))
        answer = await self._health.first_answer(inst.url or "", inst.served_name, api_key)
        if answer.ok:
            if answer.skipped:
                log.info("%s: no completion endpoint, first answer not checked", key)
            return
        log.warning("%s: first answer failed: %s", key, answer.error)
        slot = self._slots[key]
        grace_end = self._clock.now() + _ANSWER_EXIT_GRACE
        while True:
            info = await self._runtime.inspect(container_id)
            if info is None or info.status is not ContainerStatus.RUNNING:
                raise await self._exit_error(key, container_id, info, recent)
            if self._clock.now() >= grace_end:
                break
            await sleep_or_wake(self._clock, self._exit_check_interval / 4, slot.wake)
            slot.wake.clear()
        tail = await self._tail(container_id, recent)
        await self._runtime.stop(container_id, self._config.docker.stop_timeout)
        self._set(key, container_id=None)
        raise FirstAnswerError(
            f"{key} started but could not answer its first request: {answer.error}",
            log_tail=tail,
        )

    async def _follow_progress(self, key: str, container_id: str, recent: deque[str]) -> None:
        logs = self._runtime.follow_logs(container_id)
        slot = self._slots[key]
        progress = LoadProgress()  # its percent never goes back
        if slot.adopted_progress is not None and slot.adopted_progress[0] == container_id:
            progress = slot.adopted_progress[1]  # go on from what the log said at adoption
        slot.adopted_progress = None
        try:
            async for line in logs:
                recent.append(line)
                self._notice_log_line(key, line)
                step = progress.feed(line)
                if step is not None and self._slots[key].instance.state is InstanceState.STARTING:
                    self._set(key, progress=Progress(ProgressPhase.LOAD, step.percent, step.detail))
        finally:
            aclose = getattr(logs, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _tail(self, container_id: str, recent: deque[str]) -> tuple[str, ...]:
        try:
            lines = await self._runtime.logs(container_id, _LOG_TAIL)
        except RyxError:
            lines = []
        return tuple(lines[-_LOG_TAIL:] or recent)

    async def _whole_log(self, container_id: str, recent: deque[str]) -> tuple[str, ...]:
        """The container's log (its last ``DIAGNOSIS_LINES``), or ``recent`` when it is gone."""
        try:
            lines = await self._runtime.logs(container_id, DIAGNOSIS_LINES)
        except RyxError:
            lines = []
        return tuple(lines) or tuple(recent)

    async def _exit_error(
        self, key: str, container_id: str, info: ContainerInfo | None, recent: deque[str]
    ) -> ContainerExitedError:
        follower = self._slots[key].follower
        if follower is not None and not follower.done():
            # Docker marks a container exited before it has copied its last lines (the API
            # server's traceback after the engine's cause); the follower ends when it has.
            await asyncio.wait({follower}, timeout=_LOG_SETTLE)
        lines = await self._whole_log(container_id, recent)
        self._set(key, container_id=None)
        if info is None:
            return exit_error(key, None, oom=False, lines=lines, while_loading=True)
        oom = info.oom_killed or self._slots[key].oom
        return exit_error(key, info.exit_code, oom=oom, lines=lines, while_loading=True)

    # ---- internals: stopping ----------------------------------------------------------------

    async def _stop_locked(self, key: str, reason: str) -> None:
        slot = self._slots[key]
        task = slot.start_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RyxError):
                await task
        container_id = slot.instance.container_id
        if container_id is None and slot.instance.state is InstanceState.STARTING:
            # A start cancelled mid-way may have created the container before we learnt its id.
            found = [c for c in await self._runtime.list_models() if c.model_key == key]
            container_id = found[0].id if found else None
        if container_id is None:
            self._set(key, state=InstanceState.STOPPED, progress=None, note=reason)
            return
        self._set(key, state=InstanceState.STOPPING, progress=None)
        await self._wait_drained(slot)
        _cancel_monitor(slot)
        if container_id is not None:
            await self._runtime.stop(container_id, self._config.docker.stop_timeout)
        self._mark_stopped(key, reason)

    async def _wait_drained(self, slot: _Slot) -> None:
        if slot.drained.is_set():
            return
        waiter = asyncio.create_task(slot.drained.wait())
        timer = asyncio.create_task(self._clock.sleep(self._drain_timeout))
        await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        timer.cancel()

    # ---- internals: adoption, events, monitoring --------------------------------------------

    async def _adopt(self, info: ContainerInfo) -> None:
        key = info.model_key
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return
        if info.status is ContainerStatus.RUNNING:
            expected = build_spec(key, self._config, self._environ).spec_hash
            changed = info.spec_hash is not None and info.spec_hash != expected
            # How far its load has come, from its log: another process may be starting it.
            progress = LoadProgress()
            for line in await self._whole_log(info.id, deque()):
                progress.feed(line)
            self._slots[key].adopted_progress = (info.id, progress)
            self._set(
                key,
                state=InstanceState.STARTING,
                container_id=info.id,
                adopted=True,
                config_changed=changed,
                progress=Progress(ProgressPhase.LOAD, progress.percent, progress.detail),
                note="config changed, restart to apply" if changed else "",
            )
            if self._watching:
                self._start_adopted(key, info.id)
        elif info.exit_code not in _CLEAN_EXIT_CODES and info.status is ContainerStatus.EXITED:
            lines = await self._whole_log(info.id, deque())
            self._fail(key, exit_error(key, info.exit_code, oom=info.oom_killed, lines=lines))
            self._set(key, container_id=info.id)

    def _start_adopted(self, key: str, container_id: str) -> None:
        slot = self._slots[key]
        model = self._config.models[key]
        assert isinstance(model, ModelConfig)
        timeout = model.start_timeout or self._config.start_timeout

        async def wait() -> Instance:
            try:
                await self._wait_ready(key, container_id, timeout)
            except RyxError as error:
                self._fail(key, error)
                raise
            return self._slots[key].instance

        slot.start_task = asyncio.create_task(wait(), name=f"ryx-adopt-{key}")
        slot.start_task.add_done_callback(_consume_exception)

    async def _follow_events(self) -> None:
        async for event in self._runtime.events():
            try:
                await self._on_event(event)
            except RyxError as error:
                log.warning("while handling %s: %s", event, error)

    async def _on_event(self, event: RuntimeEvent) -> None:
        slot = self._slots.get(event.model_key)
        if slot is None:
            return
        key = event.model_key
        ours = slot.instance.container_id == event.container_id
        busy = slot.stopping or (slot.start_task is not None and not slot.start_task.done())
        if event.kind is RuntimeEventKind.OOM and ours:
            slot.oom = True
        elif event.kind is RuntimeEventKind.START and not ours and not busy:
            # Started by someone else (the CLI, compose): adopt it.
            info = await self._runtime.inspect(event.container_id)
            if info is not None and info.status is ContainerStatus.RUNNING:
                slot.oom = False
                await self._adopt(info)
        elif event.kind is RuntimeEventKind.DIE and ours and not busy:
            await self._on_died(key, event)
        elif event.kind is RuntimeEventKind.DIE and ours:
            slot.wake.set()  # a start is waiting on it: it looks at the container now
        elif event.kind is RuntimeEventKind.DESTROY and ours and not busy:
            self._mark_stopped(key, "stopped outside ryx-desktop")

    async def _on_died(self, key: str, event: RuntimeEvent) -> None:
        slot = self._slots[key]
        _cancel_monitor(slot)
        code = event.exit_code
        if code in _CLEAN_EXIT_CODES and not slot.oom:
            self._mark_stopped(key, "stopped outside ryx-desktop")
            return
        lines = await self._whole_log(event.container_id, deque())
        self._fail(key, exit_error(key, code, oom=slot.oom, lines=lines))

    def _mark_stopped(self, key: str, note: str) -> None:
        """No container any more: forget everything that described the running one."""
        _cancel_monitor(self._slots[key])
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
            note=note,
            **self._static_fields(key),
        )

    def _ensure_monitor(self, key: str) -> None:
        slot = self._slots[key]
        if not self._watching or (slot.monitor_task is not None and not slot.monitor_task.done()):
            return
        slot.monitor_task = asyncio.create_task(self._monitor(key), name=f"ryx-monitor-{key}")

    async def _monitor(self, key: str) -> None:
        """While the model runs: probe health and metrics, enforce the idle TTL."""
        while True:
            await self._probe_once(key)
            if await self._idle_expired(key):
                return
            await self._clock.sleep(self._probe_interval)

    async def _probe_once(self, key: str) -> None:
        slot = self._slots[key]
        inst = slot.instance
        if inst.external:
            await self._probe_external(key)
            return
        if inst.state not in (InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STARTING):
            return
        if inst.state is InstanceState.STARTING and slot.start_task is not None:
            return  # the start's own loop decides
        api_key = api_key_of(self._config, key)
        result = await self._health.probe(inst.url or "", api_key)
        if result.serves(inst.served_name):
            slot.failed_probes = 0
            metrics = await self._health.metrics(inst.url or "", api_key)
            changes: dict[str, Any] = {"state": InstanceState.READY, "metrics": metrics}
            if inst.state is not InstanceState.READY:
                changes.update(progress=None, started_at=inst.started_at or self._clock.now())
            self._set(key, **changes)
            return
        slot.failed_probes += 1
        if inst.state is InstanceState.READY and slot.failed_probes >= self._unhealthy_after:
            self._set(key, state=InstanceState.UNHEALTHY, note=result.error)

    async def _probe_external(self, key: str) -> None:
        """Ready while the server lists the name we send; learn that name when not configured."""
        slot = self._slots[key]
        url = slot.instance.url or ""
        explicit = bool(self._config.models[key].served_name)
        wanted = served_name(self._config, key)
        if not explicit and slot.learned_name is not None and slot.learned_name[0] == url:
            wanted = slot.learned_name[1]  # keep sending what we sent while it is listed
        result = await self._health.probe(url)
        if self._slots.get(key) is not slot:
            return  # removed by reconfigure meanwhile
        verdict = judge_external(result, wanted, explicit=explicit)
        if not explicit and verdict.ready:
            slot.learned_name = (url, verdict.served_name)
        metrics = await self._health.metrics(url) if verdict.ready else None
        if self._slots.get(key) is not slot:
            return
        self._set(
            key,
            state=InstanceState.READY if verdict.ready else InstanceState.UNREACHABLE,
            served_name=verdict.served_name,
            metrics=metrics,
            note=verdict.note,
        )

    async def _idle_expired(self, key: str) -> bool:
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return False
        ttl = model.idle_ttl or self._config.idle_ttl
        slot = self._slots[key]
        inst = slot.instance
        if ttl is None or slot.in_flight or inst.state is not InstanceState.READY:
            return False
        since = slot.last_used if slot.last_used is not None else inst.started_at
        if since is None or self._clock.now() - since < ttl:
            return False
        self._slots[key].monitor_task = None  # this task ends here; stop must not cancel it
        await self.stop(key, reason=f"stopped after {ttl:g} s idle")
        return True

    async def _ensure_external(self, key: str) -> Instance:
        await self._probe_once(key)
        inst = self._slots[key].instance
        if inst.state is not InstanceState.READY:
            raise UnreachableError(
                f"{key} at {inst.url} is unreachable: {inst.note or 'no answer'}"
            )
        return inst


def _managed(model: object) -> bool:
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
            gpu_memory_utilization=model.gpu_memory_utilization,
        )
    return Instance(
        key=key,
        name=model.display_name(key),
        served_name=served_name(config, key),
        aliases=tuple(model.aliases),
        external=True,
        url=model.url,
        state=InstanceState.UNREACHABLE,
    )


def _consume_exception(task: asyncio.Task[Instance]) -> None:
    if not task.cancelled():
        task.exception()


def _cancel_monitor(slot: _Slot) -> None:
    if slot.monitor_task is not None:
        slot.monitor_task.cancel()
        slot.monitor_task = None
