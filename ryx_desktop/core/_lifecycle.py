"""Starting and stopping one model: room on its GPUs, the container, readiness, the first answer.

A start plans evictions, creates the container, follows its log for load progress and wakes on
vLLM's "startup complete" line or the container's death; it is ready when ``/health`` answers,
``/v1/models`` lists the served name and (``first_answer_check``) a 1-token completion comes back.
A failed start reads the container's whole log for vLLM's root cause. A stop drains first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from ryx_desktop.config import ModelConfig
from ryx_desktop.core._placing import Placing
from ryx_desktop.core._supervisor_base import (
    ANSWER_EXIT_GRACE,
    LOG_SETTLE,
    LOG_TAIL,
    Slot,
    cancel_monitor,
)
from ryx_desktop.core.credentials import api_key_of
from ryx_desktop.core.errors import ContainerExitedError, RyxError, StartTimeoutError
from ryx_desktop.core.failures import DIAGNOSIS_LINES, exit_error
from ryx_desktop.core.planner import GpuClaim, gpus_of, plan_evictions
from ryx_desktop.core.ports import ContainerInfo, ContainerStatus, PullProgress
from ryx_desktop.core.progress import LoadProgress
from ryx_desktop.core.readiness import (
    FirstAnswerError,
    first_answer_hint,
    parse_startup_complete,
    sleep_or_wake,
)
from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import Instance, InstanceState, Progress, ProgressPhase

log = logging.getLogger(__name__)


class Lifecycle(Placing):
    """Starts and stops models; the part of the supervisor that changes containers."""

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

    async def _run_start(self, key: str) -> Instance:
        model = self._config.models[key]
        assert isinstance(model, ModelConfig)
        async with self._slots[key].lock:
            pass  # let a stop that is under way finish first
        self._slots[key].spec_hash = None
        self._slots[key].sleep_refused = False  # a new container: its vLLM may sleep
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
            host = await self._host_for_start(key)
            self._set(key, host=host)
            await self._make_room(key)
            spec = build_spec(key, self._config, self._environ, host=host)
            self._slots[key].spec_hash = spec.spec_hash

            def on_pull(p: PullProgress) -> None:
                detail = f"pulling {p.image}: {p.layers_done}/{p.layers_total} layers"
                self._set(key, progress=Progress(ProgressPhase.PULL, p.percent, detail))

            await self._runtime.ensure_image(spec.image, on_pull, host=host)

            def on_wait(why: str) -> None:
                self._set(key, progress=Progress(ProgressPhase.CREATE, None, why))

            # Two vLLMs sizing their KV cache on one GPU at once both get it wrong: take turns.
            gpus = gpus_of(model.devices, self._gpu_indices)
            async with self._gpu_starts.hold(key, gpus, on_wait, host=host):
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
        host = self._slots[key].instance.host
        claims = (self._claim(k) for k in self._slots if k != key and self._on_host(k, host))
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
        recent: deque[str] = deque(maxlen=LOG_TAIL)
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
                    self._now_ready(key)
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

    def _now_ready(self, key: str, **found: Any) -> None:
        """``key`` serves: ready from now (``found``: what an adoption learnt of it), probed."""
        slot = self._slots[key]
        slot.failed_probes = 0
        slot.last_used = slot.last_used or self._clock.now()
        self._set(
            key,
            state=InstanceState.READY,
            progress=None,
            started_at=self._clock.now(),
            last_used=slot.last_used,
            **found,
        )
        self._ensure_monitor(key)

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
        exits within ``ANSWER_EXIT_GRACE`` that exit, with its log, is the failure. Otherwise
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
        grace_end = self._clock.now() + ANSWER_EXIT_GRACE
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
            first_answer_hint(key),
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
            lines = await self._runtime.logs(container_id, LOG_TAIL)
        except RyxError:
            lines = []
        return tuple(lines[-LOG_TAIL:] or recent)

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
            await asyncio.wait({follower}, timeout=LOG_SETTLE)
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
        cancel_monitor(slot)
        if container_id is not None:
            await self._runtime.stop(container_id, self._config.docker.stop_timeout)
        self._mark_stopped(key, reason)

    async def _wait_drained(self, slot: Slot) -> None:
        if slot.drained.is_set():
            return
        waiter = asyncio.create_task(slot.drained.wait())
        timer = asyncio.create_task(self._clock.sleep(self._drain_timeout))
        await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        timer.cancel()
