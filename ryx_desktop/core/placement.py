"""Where a ``host: any`` model starts: the host with room, by measured memory, then load.

Pure: the supervisor gathers one :class:`HostRoom` per host whose engine answers (its GPUs as
its probe read them, how many models run there) and :func:`pick_host` ranks them:

1. hosts where the model fits (each of its GPUs has ``share`` of its memory free, as measured)
   before hosts where it does not, and hosts whose memory is unknown after both;
2. among those, the most free memory on the model's GPUs (their smallest free figure: a model
   split over GPUs needs room on each);
3. then the least loaded host (fewest running models);
4. then the config's order (``local`` first).

A model without a GPU (``devices: none``) is placed by load and order alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ryx_desktop.core.gpu import GpuStatus


@dataclass(frozen=True, slots=True)
class HostRoom:
    """One candidate host as measured now."""

    host: str
    gpus: tuple[GpuStatus, ...] | None  # None: its GPUs could not be read
    running: int = 0  # models running (or starting) there


@dataclass(frozen=True, slots=True)
class Placement:
    """The host picked, and why (a short phrase for the log and the model's note)."""

    host: str
    reason: str


def pick_host(
    candidates: Sequence[HostRoom],
    *,
    gpu_indices: frozenset[int] | None,
    share: float | None,
) -> Placement | None:
    """The best of ``candidates`` for a model on ``gpu_indices`` (None: every GPU of the host;
    an empty set: no GPU) wanting ``share`` of each; None when there is no candidate."""
    if not candidates:
        return None
    ranked = sorted(
        enumerate(candidates),
        key=lambda item: _rank(item[1], item[0], gpu_indices, share),
    )
    best = ranked[0][1]
    free = _free_bytes(best, gpu_indices)
    if len(candidates) == 1:
        reason = "the only host that answers"
    elif free is not None and gpu_indices != frozenset():
        reason = f"most free GPU memory ({free / 2**30:.1f} GiB)"
    else:
        reason = f"least loaded ({best.running} running)"
    return Placement(best.host, reason)


def _rank(
    room: HostRoom, order: int, gpu_indices: frozenset[int] | None, share: float | None
) -> tuple[int, float, int, int]:
    if gpu_indices == frozenset():
        return (0, 0.0, room.running, order)
    free = _free_bytes(room, gpu_indices)
    if free is None:
        return (2, 0.0, room.running, order)
    fits = _fits(room, gpu_indices, share)
    return (0 if fits else 1, -float(free), room.running, order)


def _model_gpus(room: HostRoom, gpu_indices: frozenset[int] | None) -> list[GpuStatus]:
    gpus = room.gpus or ()
    return [g for g in gpus if gpu_indices is None or g.index in gpu_indices]


def _free_bytes(room: HostRoom, gpu_indices: frozenset[int] | None) -> int | None:
    """The smallest free memory among the model's GPUs on ``room``; None when unknown."""
    gpus = _model_gpus(room, gpu_indices)
    free = [g.free_bytes for g in gpus]
    if not free or any(f is None for f in free):
        return None
    return min(f for f in free if f is not None)


def _fits(room: HostRoom, gpu_indices: frozenset[int] | None, share: float | None) -> bool:
    gpus = _model_gpus(room, gpu_indices)
    if share is None:
        return True
    for gpu in gpus:
        if gpu.free_bytes is None or gpu.total_bytes is None:
            return False
        if gpu.free_bytes < share * gpu.total_bytes:
            return False
    return bool(gpus)
