"""Making room with vLLM sleep mode: which models to sleep or stop before a target starts or wakes.

Pure functions over frozen inputs; no I/O. :func:`plan_room` answers "to start (or wake) this
model on its GPUs, what must be put to sleep or stopped first?", :func:`choose_level` picks a
sleep level from host RAM, and :func:`idle_due` tells the idle timers what is due.

Rules of :func:`plan_room`:

* Memory is counted per GPU, as a fraction of that GPU. A GPU with an NVML reading (total and
  free bytes) is planned on **measured** memory: its free bytes already take away what other
  processes and our sleeping models hold; a model's measured ``awake_bytes``/``asleep_bytes``
  say what a sleep or stop gives back (its ``share`` and ``asleep_share`` when not measured).
  A GPU without a reading is planned on the **configured shares**: each awake model holds its
  ``share`` (``gpu_memory_utilization``), each sleeping one a little (``asleep_share``).
* The target needs its ``share`` of each of its GPUs (vLLM asks for ``gpu_memory_utilization`` of
  the total to be free at startup), less what it holds there while asleep.
* ``exclusive``: every awake model on one of the target's GPUs is put to sleep (or stopped when it
  cannot sleep); then memory must fit with no headroom. ``fractional``: memory must fit with
  ``headroom`` of each GPU kept free.
* To make memory fit, first the least recently used idle *awake* models with sleep mode are put to
  sleep (a sleep costs a sub-second wake); then, still least recently used first, what cannot
  sleep is stopped: idle awake models without sleep mode (or unhealthy ones) and sleeping models,
  including ones this plan put to sleep (their sleep becomes a stop), which frees the little they
  still hold. Any stop costs a cold start later, so sleeping is tried first. Never-used models
  count as least recently used.
* Nothing busy (``in_flight > 0``) is ever slept or stopped, nor, under ``fractional``, a model that
  is starting (``exclusive`` stops an idle starting one, as planner.py does). When only those
  stand in the way, :class:`RoomRefusedError` says so in one sentence and lists the busy keys.
* Models already ``stopping`` count as gone: the caller waits for their stops before it starts.
* Levels are chosen last, in plan order: level 1 (weights to host RAM) while the weights fit in the
  host RAM left, summed over the plan's level-1 sleeps; else level 2 (weights dropped). Unknown
  weights or unknown RAM mean level 2: an over-committed host RAM risks the OOM killer, a level 2
  wake only reloads the weights from disk. Sleepers are never stopped to free RAM, since level 2
  is always possible, and the RAM of sleepers the plan stops is not counted as freed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ryx_desktop.core.errors import BudgetExceededError
from ryx_desktop.core.gpu import GpuStatus
from ryx_desktop.core.states import InstanceState

#: A sleeping model's GPU footprint, as a share of the GPU, when it was never measured
#: (vLLM keeps e.g. 1.4 of 80 GiB: the CUDA context and allocator pools).
ASLEEP_SHARE = 0.03
_GIB = 1024**3
_EPSILON = 1e-9
_AWAKE = frozenset({InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY})
_Phase = Literal["awake", "asleep", "gone"]


class RoomRefusedError(BudgetExceededError):
    """No room can be made now: busy (or starting) models or other processes hold the memory."""

    def __init__(self, message: str, hint: str | None = None, *, busy: Iterable[str] = ()) -> None:
        super().__init__(message, hint)
        #: The busy models in the way; waiting for them to drain may make room.
        self.busy = tuple(busy)


@dataclass(frozen=True, slots=True)
class ModelClaim:
    """One model as the planner sees it. Byte maps are keyed by GPU index; missing = unmeasured."""

    key: str
    gpus: frozenset[int]
    share: float  # gpu_memory_utilization
    state: InstanceState = InstanceState.STOPPED
    in_flight: int = 0
    last_used: float | None = None
    sleep_mode: bool = False
    sleep_level: int | None = None  # the level it sleeps at, when SLEEPING
    awake_bytes: Mapping[int, int] = field(default_factory=dict)
    asleep_bytes: Mapping[int, int] = field(default_factory=dict)
    weights_bytes: int | None = None  # host RAM a level-1 sleep takes; None: unknown


@dataclass(frozen=True, slots=True)
class RoomAction:
    """One step of a plan: sleep ``key`` at ``level``, or stop it (``level`` None)."""

    kind: Literal["sleep", "stop"]
    key: str
    level: int | None = None

    def as_tuple(self) -> tuple[str, str] | tuple[str, str, int]:
        """``("sleep", key, level)`` or ``("stop", key)``."""
        if self.kind == "sleep" and self.level is not None:
            return ("sleep", self.key, self.level)
        return (self.kind, self.key)


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """The actions to run, in order, before the target starts or wakes."""

    actions: tuple[RoomAction, ...] = ()
    measured_gpus: frozenset[int] = frozenset()  # planned on NVML figures; the others on shares
    host_ram_bytes: int = 0  # host RAM the plan's level-1 sleeps take

    @property
    def sleeps(self) -> tuple[RoomAction, ...]:
        return tuple(a for a in self.actions if a.kind == "sleep")

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.actions if a.kind == "stop")


class Due(enum.StrEnum):
    """What an idle timer should do now."""

    NOTHING = "nothing"
    SLEEP = "sleep"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class IdleDecision:
    """What is due, and in how many seconds the next step falls due (None: never, as things are)."""

    due: Due
    wait: float | None = None


def choose_level(weights_bytes: int | None, available_ram_bytes: int | None) -> Literal[1, 2]:
    """Level 1 when the weights are known to fit in the available host RAM, else level 2."""
    if weights_bytes is None or available_ram_bytes is None:
        return 2
    return 1 if weights_bytes <= available_ram_bytes else 2


def idle_due(
    *,
    state: InstanceState,
    in_flight: int,
    sleep_mode: bool,
    last_used: float | None,
    asleep_since: float | None,
    now: float,
    idle_ttl: float | None,
    sleep_ttl: float | None,
) -> IdleDecision:
    """An awake (ready) model idle for ``idle_ttl`` is due to sleep (sleep mode) or stop; a model
    asleep for ``sleep_ttl`` (from ``asleep_since``) is due to stop. Pass the start time as
    ``last_used`` for a model never used. Busy models and other states are never due."""
    if in_flight > 0:
        return IdleDecision(Due.NOTHING)
    if state is InstanceState.READY:
        since, ttl, action = last_used, idle_ttl, Due.SLEEP if sleep_mode else Due.STOP
    elif state is InstanceState.SLEEPING:
        since, ttl, action = asleep_since, sleep_ttl, Due.STOP
    else:
        return IdleDecision(Due.NOTHING)
    if since is None or ttl is None:
        return IdleDecision(Due.NOTHING)
    left = since + ttl - now
    return IdleDecision(action, 0.0) if left <= 0 else IdleDecision(Due.NOTHING, left)


@dataclass(slots=True)
class _Gpu:
    """One of the target's GPUs while planning: free memory and need, as fractions of it."""

    index: int
    total: int | None
    measured: bool
    free: float
    need: float
    reserve: float
    other: float = 0.0  # measured memory none of our models account for

    def short(self) -> float:
        return self.need + self.reserve - self.free


def plan_room(
    target: ModelClaim,
    others: Sequence[ModelClaim],
    *,
    policy: str,
    headroom: float,
    gpus: Sequence[GpuStatus] = (),
    available_ram_bytes: int | None = None,
    asleep_share: float = ASLEEP_SHARE,
) -> RoomPlan:
    """What to sleep or stop, in order, so ``target`` can start or wake. See the module docstring.

    ``gpus`` is the NVML reading (empty without NVML); ``available_ram_bytes`` the host RAM
    available now (sleepers' RAM already taken), None when unknown. Raises RoomRefusedError.
    """
    if policy not in ("exclusive", "fractional"):
        raise ValueError(f"unknown gpu policy {policy!r}")
    if not target.gpus or target.state in _AWAKE:
        return RoomPlan()
    planner = _Planner(target, others, policy, headroom, gpus, asleep_share)
    planner.make_room()
    return planner.plan(available_ram_bytes)


class _Planner:
    def __init__(
        self,
        target: ModelClaim,
        others: Sequence[ModelClaim],
        policy: str,
        headroom: float,
        readings: Sequence[GpuStatus],
        asleep_share: float,
    ) -> None:
        self.target = target
        self.policy = policy
        self.headroom = headroom if policy == "fractional" else 0.0
        self.asleep_share = asleep_share
        self.actions: dict[str, Literal["sleep", "stop"]] = {}
        # Least recently used first; never-used first of all; the key breaks ties.
        self.sharing = sorted(
            (c for c in others if c.key != target.key and c.gpus & target.gpus),
            key=lambda c: (c.last_used is not None, c.last_used or 0.0, c.key),
        )
        by_index = {s.index: s for s in readings}
        self.gpus = [self._gpu(g, by_index.get(g)) for g in sorted(target.gpus)]

    def _gpu(self, index: int, reading: GpuStatus | None) -> _Gpu:
        total = reading.total_bytes if reading is not None and reading.total_bytes else None
        free_bytes = None if reading is None else reading.free_bytes
        gpu = _Gpu(index, total, total is not None and free_bytes is not None, 0.0, 0.0, 0.0)
        gpu.reserve = self.headroom
        target_asleep = (
            self._hold(self.target, gpu, "asleep")
            if self.target.state is InstanceState.SLEEPING
            else 0.0
        )
        gpu.need = self.target.share - target_asleep
        on_gpu = [c for c in self.sharing if index in c.gpus]
        if gpu.measured and total is not None and free_bytes is not None:
            free = free_bytes / total
            ours = target_asleep
            for c in on_gpu:
                measured = _fraction(c.awake_bytes.get(index), total)
                now = self._hold(c, gpu, self._phase(c))
                if c.state is InstanceState.STOPPING:  # counted as gone, though NVML still sees it
                    now = c.share if measured is None else measured
                    free += now
                elif c.state is InstanceState.STARTING:  # will grow to its share
                    now = measured or 0.0
                    free -= max(0.0, c.share - now)
                ours += now
            gpu.free = free
            gpu.other = max(0.0, 1.0 - free_bytes / total - ours)
        else:
            held = sum(self._hold(c, gpu, self._phase(c)) for c in on_gpu)
            gpu.free = 1.0 - held - target_asleep
        return gpu

    def _phase(self, c: ModelClaim) -> _Phase:
        action = self.actions.get(c.key)
        if action is not None:
            return "gone" if action == "stop" else "asleep"
        if c.state in _AWAKE:
            return "awake"
        return "asleep" if c.state is InstanceState.SLEEPING else "gone"

    def _hold(self, c: ModelClaim, gpu: _Gpu, phase: _Phase) -> float:
        if phase == "gone":
            return 0.0
        if phase == "asleep":
            asleep = _fraction(c.asleep_bytes.get(gpu.index), gpu.total)
            return self.asleep_share if asleep is None else asleep
        awake = _fraction(c.awake_bytes.get(gpu.index), gpu.total) if gpu.measured else None
        if awake is None or c.state is InstanceState.STARTING:
            return max(awake or 0.0, c.share)
        return awake

    def _act(self, c: ModelClaim, kind: Literal["sleep", "stop"]) -> None:
        before = self._phase(c)
        self.actions[c.key] = kind
        after = self._phase(c)
        for gpu in self.gpus:
            if gpu.index in c.gpus:
                gpu.free += self._hold(c, gpu, before) - self._hold(c, gpu, after)

    def make_room(self) -> None:
        if self.policy == "exclusive":
            awake = [c for c in self.sharing if c.state in _AWAKE]
            busy = [c for c in awake if c.in_flight > 0]
            if busy:
                names = ", ".join(f"{c.key} ({c.in_flight} in flight)" for c in busy)
                gpus = ", ".join(str(g) for g in sorted(self.target.gpus))
                raise RoomRefusedError(
                    f"{self.target.key} cannot run on GPU {gpus} yet: gpu.policy exclusive keeps "
                    f"one model awake per GPU and the awake one is busy: {names}.",
                    "Wait for its requests to finish, or use `gpu.policy: fractional`.",
                    busy=(c.key for c in busy),
                )
            for c in awake:
                self._act(c, "sleep" if _can_sleep(c) else "stop")
        for gpu in self.gpus:
            while gpu.short() > _EPSILON:
                victim = self._victim(gpu.index)
                if victim is None:
                    raise self._refusal(gpu)
                self._act(*victim)

    def _victim(self, index: int) -> tuple[ModelClaim, Literal["sleep", "stop"]] | None:
        idle = [c for c in self.sharing if index in c.gpus and c.in_flight == 0]
        for c in idle:
            if self._phase(c) == "awake" and _can_sleep(c):
                return c, "sleep"
        for c in idle:
            phase = self._phase(c)
            if phase == "asleep" or (phase == "awake" and c.state is not InstanceState.STARTING):
                return c, "stop"
        return None

    def _refusal(self, gpu: _Gpu) -> RoomRefusedError:
        blockers = [c for c in self.sharing if gpu.index in c.gpus and self._phase(c) != "gone"]
        held = [
            f"{c.key} ({'starting' if c.in_flight == 0 else 'busy'}, "
            f"{self._amount(self._hold(c, gpu, self._phase(c)), gpu)})"
            for c in blockers
        ]
        parts = [f"held by {', '.join(held)}"] if held else []
        if gpu.other * (gpu.total or 0) >= 0.05 * _GIB:
            parts.append(f"other processes hold {self._amount(gpu.other, gpu)}")
        if gpu.reserve:
            parts.append(f"{gpu.reserve:.0%} headroom kept")
        free = max(0.0, gpu.free - gpu.reserve)
        return RoomRefusedError(
            f"{self.target.key} needs {self._amount(gpu.need, gpu)} of GPU {gpu.index} but only "
            f"{self._amount(free, gpu)} can be made free there ({'; '.join(parts)}).",
            "Wait for busy models to finish, stop other programs using the GPU, "
            "or lower `gpu_memory_utilization`.",
            busy=(c.key for c in blockers if c.in_flight > 0),
        )

    @staticmethod
    def _amount(fraction: float, gpu: _Gpu) -> str:
        if gpu.measured and gpu.total:
            return f"{fraction * gpu.total / _GIB:.1f} GiB"
        return f"{fraction:.0%}"

    def plan(self, available_ram_bytes: int | None) -> RoomPlan:
        by_key = {c.key: c for c in self.sharing}
        ram_left, ram_used = available_ram_bytes, 0
        actions: list[RoomAction] = []
        for key, kind in self.actions.items():
            if kind == "stop":
                actions.append(RoomAction("stop", key))
                continue
            weights = by_key[key].weights_bytes
            level = choose_level(weights, ram_left)
            if level == 1 and weights is not None and ram_left is not None:
                ram_left -= weights
                ram_used += weights
            actions.append(RoomAction("sleep", key, level))
        measured = frozenset(g.index for g in self.gpus if g.measured)
        return RoomPlan(tuple(actions), measured, ram_used)


def _can_sleep(c: ModelClaim) -> bool:
    return c.sleep_mode and c.state is InstanceState.READY


def _fraction(value: int | None, total: int | None) -> float | None:
    return None if value is None or not total else value / total
