"""Sleep and wake: vLLM's sleep mode as a state of its own, with honest fallbacks.

A model with ``sleep_mode: true`` runs with ``--enable-sleep-mode`` in dev mode. ``sleep`` marks
it ``sleeping`` at once (so every new request waits for a wake instead of reaching an engine on
its way to sleep), lets its requests drain (a sleep with requests decoding crashes vLLM), then
asks vLLM to sleep: level 1 keeps the weights in host RAM, level 2 drops them. A wake is shared
by every request that waits, like a start: the sleeping model turns ``starting`` with the wake's
progress, vLLM wakes it (level 2 in three steps), and it is ``ready`` once it answers again.

Fallbacks, each leaving its reason on the model: a vLLM without sleep routes (or one that
refuses) is left running and the caller is told; a wake that fails or outlasts ``wake_timeout``
stops the container and starts the model afresh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from ryx_desktop.config import ModelConfig
from ryx_desktop.core._lifecycle import Lifecycle
from ryx_desktop.core.credentials import api_key_of
from ryx_desktop.core.errors import (
    RyxError,
    SleepFailedError,
    SleepNotSupportedError,
)
from ryx_desktop.core.gpu import GpuStatus
from ryx_desktop.core.planner import gpus_of
from ryx_desktop.core.sleep_planner import ModelClaim, choose_level, plan_room
from ryx_desktop.core.spec import LOCAL_HOST, build_spec
from ryx_desktop.core.states import Instance, InstanceState, Progress, ProgressPhase

log = logging.getLogger(__name__)

#: States a model can be put to sleep from.
_AWAKE = (InstanceState.READY, InstanceState.UNHEALTHY)


class Sleeping(Lifecycle):
    """Puts idle sleep-mode models to sleep and wakes them for the next request."""

    def sleep_mode_of(self, key: str) -> bool:
        """Whether model ``key`` runs with vLLM's sleep mode (and ryx-desktop can wake it)."""
        model = self._config.models[key]
        if not isinstance(model, ModelConfig) or not model.sleep_mode or self._sleep is None:
            return False
        return not self._slots[key].sleep_refused

    async def sleep(self, name: str, level: int = 1, *, reason: str = "") -> Instance:
        """Put a ready model to sleep at ``level`` (1 or 2), after its requests finish."""
        key = self.resolve(name)
        if level not in (1, 2):
            raise ValueError(f"sleep level {level} does not exist: use 1 or 2")
        if not self.sleep_mode_of(key):
            raise SleepNotSupportedError(
                f"{key} does not run with sleep mode",
                "Set `sleep_mode: true` for it; its next start turns vLLM's sleep mode on.",
            )
        slot = self._slots[key]
        async with slot.lock:
            inst = slot.instance
            if inst.state is InstanceState.SLEEPING and (inst.sleep_level or 0) >= level:
                return inst
            if inst.state not in _AWAKE:
                raise SleepFailedError(
                    f"{key} is {inst.state.value}: only a ready model can be put to sleep",
                    "Start it first, or wait until it is ready.",
                )
            started = self._clock.now()
            self._set(key, state=InstanceState.SLEEPING, note=f"going to sleep (level {level})")
            await self._wait_drained(slot)
            assert self._sleep is not None
            try:
                await self._sleep.sleep(inst.url or "", level, api_key_of(self._config, key))
            except RyxError as error:
                refused = isinstance(error, SleepNotSupportedError)
                slot.sleep_refused = refused
                note = "vLLM refused sleep mode" if refused else "could not sleep"
                self._set(key, state=InstanceState.READY, note=f"{note}: {error.message}")
                if type(error) is SleepFailedError and error.hint == SleepFailedError.hint:
                    error.hint = f"It stays awake; `ryx-desktop logs {key}` shows vLLM's side."
                raise
            slot.asleep_since = self._clock.now()
            took = slot.asleep_since - started
            words = f"asleep at level {level}" + (f", {reason}" if reason else "")
            held = (await self._model_claim(key)).weights_bytes if level == 1 else None
            return self._set(
                key,
                state=InstanceState.SLEEPING,
                sleep_level=level,
                host_ram_bytes=held,
                metrics=None,
                progress=None,
                note=f"{words} (took {took:.1f} s)",
            )

    async def _run_wake(self, key: str) -> Instance:
        """The shared task of a wake; falls back to a fresh start when the wake fails."""
        slot = self._slots[key]
        async with slot.lock:  # a sleep under way finishes first
            inst = slot.instance
            if inst.state is not InstanceState.SLEEPING or inst.sleep_level is None:
                fallback = None if inst.state in _AWAKE else "it was not asleep"
            else:
                fallback = await self._wake_locked(key, inst.sleep_level)
        if fallback is None:
            return self._slots[key].instance
        log.warning("%s: wake failed (%s); starting it afresh", key, fallback)
        await self.stop(key, reason=f"wake failed: {fallback}")
        await self._run_start(key)
        return self._set(key, note=f"restarted: the wake failed ({fallback})")

    async def _wake_locked(self, key: str, level: int) -> str | None:
        """Wake ``key`` from ``level``; None when it is ready, else why the wake failed."""
        inst = self._slots[key].instance
        began = self._clock.now()
        self._set(
            key,
            state=InstanceState.STARTING,
            progress=Progress(ProgressPhase.WAKE, None, f"waking from sleep level {level}"),
            note="",
        )
        api_key = api_key_of(self._config, key)
        timeout = self._wake_timeout(key)
        assert self._sleep is not None
        model = self._config.models[key]
        gpus = gpus_of(model.devices, self._gpu_indices) if isinstance(model, ModelConfig) else ()

        def on_wait(why: str) -> None:
            self._set(key, progress=Progress(ProgressPhase.WAKE, None, why))

        try:
            # One start or wake at a time per GPU: each plans its room on what the others left.
            async with self._gpu_starts.hold(key, gpus, on_wait):
                self._slots[key].waking_from = level
                try:
                    await self._make_room(key)
                finally:
                    self._slots[key].waking_from = None
                self._set(
                    key, progress=Progress(ProgressPhase.WAKE, None, f"waking (level {level})")
                )
                waking = self._sleep.wake(inst.url or "", level, api_key)
                await asyncio.wait_for(waking, timeout)
                probing = self._health.probe(inst.url or "", api_key)
                result = await asyncio.wait_for(probing, timeout)
        except TimeoutError:
            return f"no answer within wake_timeout ({timeout:g} s)"
        except RyxError as error:
            return error.message
        if not result.serves(inst.served_name):
            return result.error or f"it does not list {inst.served_name} after waking"
        self._slots[key].asleep_since = None
        took = self._clock.now() - began
        self._set(
            key,
            state=InstanceState.READY,
            sleep_level=None,
            host_ram_bytes=None,
            progress=None,
            note=f"woken from level {level} in {took:.2f} s",
        )
        self._ensure_monitor(key)
        return None

    async def _make_room(self, key: str) -> None:
        """Room for ``key`` on its GPUs: sleep idle sleep-mode models first, stop the rest.

        Where no model that shares the target's GPUs can sleep, the plain planner decides
        (stops only), as before sleep mode.
        """
        model = self._config.models[key]
        if not isinstance(model, ModelConfig):
            return
        gpus = gpus_of(model.devices, self._gpu_indices)
        host = self._slots[key].instance.host
        others = [
            k
            for k in self._slots
            if k != key and self._on_host(k, host) and self._shares_gpus(k, gpus)
        ]
        if not any(self.sleep_mode_of(k) for k in others):
            await super()._make_room(key)
            return
        # Measured memory when the host's GPUs answer: other processes' use, what each holds.
        probe = self._gpu_probe_of(host)
        reading = await probe.read() if probe is not None else None
        measured = tuple(g for g in reading.gpus if g.index in gpus) if reading else ()
        # The target shows as starting by now; to the planner it is what it comes from.
        waking = self._slots[key].waking_from
        target = dataclasses.replace(
            await self._model_claim(key, measured),
            state=InstanceState.SLEEPING if waking else InstanceState.STOPPED,
            sleep_level=waking,
        )
        claims = [await self._model_claim(k, measured) for k in others]
        ram = await self._available_ram(host)
        plan = plan_room(
            target,
            claims,
            policy=self._config.gpu.policy,
            headroom=self._config.gpu.headroom,
            gpus=measured,
            available_ram_bytes=ram,
        )
        for action in plan.actions:
            if action.kind == "sleep":
                try:
                    level = action.level or 2
                    await self.sleep(action.key, level, reason=f"to make room for {key}")
                    continue
                except RyxError as error:
                    log.warning("%s could not sleep (%s): stopping it", action.key, error.message)
            await self.stop(action.key, reason=f"stopped to make room for {key}")

    async def _level_for(self, key: str) -> int:
        """Level 1 when the model's weights fit in the host RAM available, else level 2."""
        ram = await self._available_ram(self._slots[key].instance.host)
        return choose_level((await self._model_claim(key)).weights_bytes, ram)

    async def _available_ram(self, host: str) -> int | None:
        """RAM free on ``host``: known for this machine only (None: sleeps are level 2)."""
        if self._host is None or host != LOCAL_HOST:
            return None
        return await self._host.available_ram()

    def _shares_gpus(self, key: str, gpus: frozenset[int]) -> bool:
        model = self._config.models[key]
        return isinstance(model, ModelConfig) and bool(
            gpus_of(model.devices, self._gpu_indices) & gpus
        )

    async def _model_claim(self, key: str, measured: Sequence[GpuStatus] = ()) -> ModelClaim:
        """``key`` as the planner sees it; with GPU readings, what its processes hold."""
        model = self._config.models[key]
        assert isinstance(model, ModelConfig)
        slot = self._slots[key]
        weights = None
        if self.sleep_mode_of(key) and self._host is not None and slot.instance.host == LOCAL_HOST:
            path = build_spec(key, self._config, self._environ).host_model_path
            weights = await self._host.weights_bytes(path) if path else None
        held: dict[int, int] = {}
        container_id = slot.instance.container_id
        if measured and container_id is not None:
            info = await self._runtime.inspect(container_id)
            pids = set(info.pids) if info is not None else set()
            for gpu in measured:
                used = [p.used_bytes for p in gpu.processes if p.pid in pids]
                if pids and all(u is not None for u in used):
                    held[gpu.index] = sum(u for u in used if u is not None)
        asleep = slot.instance.state is InstanceState.SLEEPING
        return ModelClaim(
            key=key,
            gpus=gpus_of(model.devices, self._gpu_indices),
            share=model.gpu_memory_utilization,
            state=slot.instance.state,
            in_flight=slot.in_flight,
            last_used=slot.last_used,
            sleep_mode=self.sleep_mode_of(key),
            sleep_level=slot.instance.sleep_level,
            awake_bytes={} if asleep else held,
            asleep_bytes=held if asleep else {},
            weights_bytes=weights,
        )

    def _wake_timeout(self, key: str) -> float:
        model = self._config.models[key]
        if isinstance(model, ModelConfig) and model.wake_timeout is not None:
            return model.wake_timeout
        return self._config.wake_timeout

    def _sleep_ttl(self, key: str) -> float | None:
        model = self._config.models[key]
        if isinstance(model, ModelConfig) and model.sleep_ttl is not None:
            return model.sleep_ttl
        return self._config.sleep_ttl
