"""Watching models: adopting running containers, following Docker's events, probing, idle timers.

Docker is the source of truth: at ``open`` the supervisor adopts the containers that already run
(reading a starting one's log for how far it has come), Docker events keep it in step with
containers other processes start or stop, and each running model is probed every
``probe_interval`` (health, served name, metrics) and stopped once idle for its TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ryx_desktop.config import ModelConfig
from ryx_desktop.core._sleeping import Sleeping
from ryx_desktop.core._supervisor_base import (
    CLEAN_EXIT_CODES,
    ENGINE_RETRY_FIRST,
    ENGINE_RETRY_MAX,
    cancel_monitor,
    consume_exception,
)
from ryx_desktop.core.credentials import api_key_of
from ryx_desktop.core.errors import DockerError, RyxError, UnreachableError
from ryx_desktop.core.external import judge_external
from ryx_desktop.core.failures import exit_error
from ryx_desktop.core.ports import (
    ContainerInfo,
    ContainerStatus,
    HostsRuntime,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.progress import LoadProgress
from ryx_desktop.core.routing import served_name
from ryx_desktop.core.spec import ANY_HOST, build_spec
from ryx_desktop.core.states import Instance, InstanceState, ModelMetrics, Progress, ProgressPhase

log = logging.getLogger(__name__)


class Watching(Sleeping):
    """Keeps every model's snapshot in step with its container and its server."""

    async def _adopt(self, info: ContainerInfo) -> None:
        key = info.model_key
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return
        if info.status is ContainerStatus.RUNNING:
            await self._adopt_running(key, info)
        elif info.exit_code not in CLEAN_EXIT_CODES and info.status is ContainerStatus.EXITED:
            lines = await self._whole_log(info.id, deque())
            self._fail(key, exit_error(key, info.exit_code, oom=info.oom_killed, lines=lines))
            self._set(key, container_id=info.id, host=info.host)

    async def _adopt_running(self, key: str, info: ContainerInfo) -> None:
        """Take over a running container: ready, asleep, or still loading (then wait for it)."""
        expected = build_spec(key, self._config, self._environ, host=info.host).spec_hash
        changed = info.spec_hash is not None and info.spec_hash != expected
        found: dict[str, Any] = {
            "host": info.host,
            "container_id": info.id,
            "adopted": True,
            "config_changed": changed,
            "note": "config changed, restart to apply" if changed else "",
        }
        url, api_key = self._slots[key].instance.url or "", api_key_of(self._config, key)
        if self.sleep_mode_of(key):
            metrics = await self._health.metrics(url, api_key)
            if metrics is not None and metrics.sleep_level:
                log.info("%s: adopted its running container %s, asleep", key, info.id[:12])
                self._set(key, **found)
                self._found_asleep(key, metrics)  # /health says 200 while asleep: no first answer
                return
        if (await self._health.probe(url, api_key)).serves(self._slots[key].instance.served_name):
            log.info("%s: adopted its running container %s, ready", key, info.id[:12])
            self._now_ready(key, **found)
            return
        # How far its load has come, from its log: another process may be starting it.
        progress = LoadProgress()
        for line in await self._whole_log(info.id, deque()):
            progress.feed(line)
        self._slots[key].adopted_progress = (info.id, progress)
        log.info("%s: adopted its running container %s, still loading", key, info.id[:12])
        self._set(
            key,
            state=InstanceState.STARTING,
            progress=Progress(ProgressPhase.LOAD, progress.percent, progress.detail),
            **found,
        )
        if self._watching:
            self._start_adopted(key, info.id)

    def _found_asleep(self, key: str, metrics: ModelMetrics | None) -> bool:
        """True (and the model marked sleeping) when its server's ``metrics`` say it sleeps."""
        if metrics is None or not metrics.sleep_level:
            return False
        self._slots[key].asleep_since = self._clock.now()
        self._set(
            key,
            state=InstanceState.SLEEPING,
            sleep_level=metrics.sleep_level,
            progress=None,
            metrics=None,
            note=f"found asleep at level {metrics.sleep_level}",
        )
        self._ensure_monitor(key)
        return True

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
        slot.start_task.add_done_callback(consume_exception)

    async def _follow_events(self) -> None:
        """Follow Docker's events for as long as the supervisor watches.

        When the engine goes away (its event stream ends, or it does not answer), the
        supervisor says so (``engine_problem``) and tries again with backoff; once the engine
        answers, every container is read again, since anything may have happened meanwhile.
        """
        if self._multi:
            await self._follow_host_events()
            return
        delay = ENGINE_RETRY_FIRST
        while True:
            try:
                events = self._runtime.events()  # events from now on: none lost while resyncing
                if self._engine_problem is not None:
                    await self._resync()
                    self._set_engine_problem(None)
                    delay = ENGINE_RETRY_FIRST
                async for event in events:
                    try:
                        await self._on_event(event)
                    except RyxError as error:
                        log.warning("while handling %s: %s", event, error)
                raise DockerError("the Docker engine closed its event stream")
            except RyxError as error:
                self._set_engine_problem(error.message)
            await self._clock.sleep(delay)
            delay = min(delay * 2, ENGINE_RETRY_MAX)

    async def _follow_host_events(self) -> None:
        """Every host's events, from a runtime over several engines: its stream does not end
        when a host goes away (the runtime reports that through ``host_changed``)."""
        while True:
            try:
                async for event in self._runtime.events():
                    try:
                        await self._on_event(event)
                    except RyxError as error:
                        log.warning("while handling %s: %s", event, error)
                return  # the runtime was closed
            except RyxError as error:
                log.warning("following the hosts' events failed: %s", error.message)
            await self._clock.sleep(ENGINE_RETRY_FIRST)

    def host_changed(self, host: str, problem: str | None) -> None:
        """A runtime over several engines reports ``host``'s engine away (why) or back (None).

        Away: its models turn ``unreachable``. Back after being away: its containers are read
        again (the runtime follows the host's events by then) and what runs is adopted.
        """
        was = self._host_problems.get(host)
        self._set_host_problem(host, problem)
        if problem is not None:
            self._host_away(host, problem)
        elif was is not None and self._watching:
            task = self._resyncs.get(host)
            if task is None or task.done():
                self._resyncs[host] = asyncio.create_task(
                    self._resync_host(host), name=f"ryx-resync-{host}"
                )

    async def _while_host_away(self, key: str) -> Instance | None:
        """A request for ``key``, unreachable with its host: what to do.

        Its host being read again: wait for that first (it may adopt the running container).
        Its engine away but its own server still answering (an engine restart under
        live-restore, a dropped connection to the engine only): serve it as it is (returned).
        Otherwise ``HostUnreachableError`` with the host's reason; None: start it as usual.
        """
        slot = self._slots[key]
        host = slot.instance.host
        resync = self._resyncs.get(host)
        if resync is not None and not resync.done():
            await asyncio.shield(resync)
        inst = slot.instance
        if inst.state is not InstanceState.UNREACHABLE or host == ANY_HOST:
            return None
        if inst.container_id is not None and inst.url:
            result = await self._health.probe(inst.url, api_key_of(self._config, key))
            if result.serves(inst.served_name):
                return inst
        self._check_host(key, host)  # its host is away: say so, change nothing
        return None

    async def _resync_host(self, host: str) -> None:
        """Read ``host``'s containers again once it answers; adopt what runs there."""
        assert isinstance(self._runtime, HostsRuntime)
        try:
            found = {info.model_key: info for info in await self._runtime.list_host(host)}
        except RyxError as error:
            log.warning("host %s: cannot read its containers again: %s", host, error.message)
            return
        for key, slot in list(self._slots.items()):
            model = self._config.models.get(key)
            if not isinstance(model, ModelConfig) or self._slots.get(key) is not slot:
                continue
            info = found.get(key)
            inst = slot.instance
            if inst.host != host:
                # Listed under another host: only a container running here is news (a
                # ``host: any`` model placed here, or one started here by someone else).
                if info is None or info.status is not ContainerStatus.RUNNING:
                    continue
                if model.host != ANY_HOST and inst.running:
                    continue  # it runs elsewhere; a container of it here is not ours to take
            if slot.stopping or (slot.start_task is not None and not slot.start_task.done()):
                continue
            if info is not None and info.status is ContainerStatus.RUNNING:
                if info.id != inst.container_id or not inst.running:
                    await self._adopt(info)
            elif info is not None and info.exit_code not in CLEAN_EXIT_CODES:
                await self._adopt(info)  # exited with a failure: it says why
            elif inst.container_id is not None or inst.running:
                self._mark_stopped(key, f"stopped while host {host} was unreachable")
            elif inst.state is InstanceState.UNREACHABLE:
                self._mark_stopped(key, f"host {host} answers again")

    async def _resync(self) -> None:
        """Read every container again after the engine was unreachable; adopt what runs."""
        found = {info.model_key: info for info in await self._runtime.list_models()}
        for key, slot in self._slots.items():
            if slot.instance.external:
                continue
            info = found.get(key)
            known = slot.instance.container_id
            if info is not None and info.status is ContainerStatus.RUNNING:
                if info.id != known or not slot.instance.running:
                    await self._adopt(info)
                continue
            if info is not None and info.exit_code not in CLEAN_EXIT_CODES:
                await self._adopt(info)  # exited with a failure: it says why
            elif known is not None or slot.instance.running:
                self._mark_stopped(key, "stopped while the Docker engine was unreachable")

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
        cancel_monitor(slot)
        code = event.exit_code
        if code in CLEAN_EXIT_CODES and not slot.oom:
            self._mark_stopped(key, "stopped outside ryx-desktop")
            return
        lines = await self._whole_log(event.container_id, deque())
        self._fail(key, exit_error(key, code, oom=slot.oom, lines=lines))

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
            if slot.instance.state is not inst.state:
                return  # it changed meanwhile (put to sleep, stopping): this probe is stale
            if self.sleep_mode_of(key) and self._found_asleep(key, metrics):
                return  # put to sleep by someone else
            changes: dict[str, Any] = {"state": InstanceState.READY, "metrics": metrics}
            if inst.state is not InstanceState.READY:
                changes.update(progress=None, started_at=inst.started_at or self._clock.now())
            self._set(key, **changes)
            return
        if slot.instance.state is not inst.state:
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
        """Enforce the idle timers; True when the model was stopped (the monitor ends).

        A sleep-mode model idle for ``idle_ttl`` is put to sleep (a refusal stops it instead),
        and stopped once it has slept for ``sleep_ttl``; any other model is stopped.
        """
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return False
        slot = self._slots[key]
        inst = slot.instance
        now = self._clock.now()
        if inst.state is InstanceState.SLEEPING and slot.asleep_since is not None:
            sleep_ttl = self._sleep_ttl(key)
            if sleep_ttl is None or now - slot.asleep_since < sleep_ttl:
                return False
            slot.monitor_task = None  # this task ends here; stop must not cancel it
            await self.stop(key, reason=f"stopped after {sleep_ttl:g} s asleep")
            return True
        ttl = model.idle_ttl or self._config.idle_ttl
        if ttl is None or slot.in_flight or inst.state is not InstanceState.READY:
            return False
        since = slot.last_used if slot.last_used is not None else inst.started_at
        if since is None or now - since < ttl:
            return False
        if self.sleep_mode_of(key):
            try:
                level = await self._level_for(key)
                await self.sleep(key, level, reason=f"idle for {ttl:g} s")
                return False
            except RyxError as error:
                log.warning("%s: could not sleep (%s); stopping it", key, error.message)
        slot.monitor_task = None  # this task ends here; stop must not cancel it
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
