"""GPU policy: which running models must stop before another one starts.

Pure functions over snapshots. ``exclusive`` time-shares each GPU: a model evicts every other
model that shares one of its GPUs. ``fractional`` packs models by their planned share of each
GPU (``gpu_memory_utilization``) plus a headroom, evicting the least recently used idle models
until the new one fits, and refuses when only busy models could make room.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ryx_desktop.core.errors import BudgetExceededError
from ryx_desktop.core.states import InstanceState

#: States in which a model holds its GPU memory.
_HOLDING = frozenset(
    {
        InstanceState.STARTING,
        InstanceState.READY,
        InstanceState.UNHEALTHY,
        InstanceState.SLEEPING,
    }
)
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class GpuClaim:
    """What one model plans to take: its GPUs and its share of each."""

    key: str
    gpus: frozenset[int]
    share: float
    state: InstanceState = InstanceState.STOPPED
    in_flight: int = 0
    last_used: float | None = None

    @property
    def holding(self) -> bool:
        return self.state in _HOLDING


def gpus_of(devices: str | Sequence[int], all_gpus: Iterable[int]) -> frozenset[int]:
    """The GPU indices a ``devices`` setting names."""
    if devices == "all":
        return frozenset(all_gpus)
    if devices == "none" or isinstance(devices, str):
        return frozenset()
    return frozenset(devices)


def plan_evictions(
    target: GpuClaim, others: Sequence[GpuClaim], policy: str, headroom: float
) -> list[str]:
    """Keys to stop, in order, so ``target`` can start. Raises BudgetExceededError."""
    sharing = [c for c in others if c.key != target.key and c.holding and c.gpus & target.gpus]
    if policy == "exclusive":
        return [c.key for c in sharing]
    return _fractional(target, sharing, headroom)


def _fractional(target: GpuClaim, sharing: list[GpuClaim], headroom: float) -> list[str]:
    evict: list[str] = []
    for gpu in sorted(target.gpus):
        on_gpu = [c for c in sharing if gpu in c.gpus and c.key not in evict]
        used = sum(c.share for c in on_gpu)
        budget = 1.0 - headroom
        # Least recently used first; never-used models go before any used one.
        idle = sorted(
            (c for c in on_gpu if c.in_flight == 0 and c.state is not InstanceState.STARTING),
            key=lambda c: (c.last_used is not None, c.last_used or 0.0),
        )
        while used + target.share > budget + _EPSILON and idle:
            victim = idle.pop(0)
            evict.append(victim.key)
            used -= victim.share
        if used + target.share > budget + _EPSILON:
            busy = ", ".join(f"{c.key} ({c.share:.0%})" for c in on_gpu if c.key not in evict)
            raise BudgetExceededError(
                f"{target.key} needs {target.share:.0%} of GPU {gpu}, but only "
                f"{max(0.0, budget - used):.0%} of its {budget:.0%} budget "
                f"({headroom:.0%} headroom kept) is free and the models using it are busy: {busy}"
            )
    return evict
