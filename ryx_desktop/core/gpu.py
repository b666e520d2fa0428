"""What the GPUs hold: typed readings from the GPU probe and the VRAM report the UI draws.

A field NVML cannot give (unsupported on this GPU, no permission) is ``None`` and shown as
N/A; it never raises. ``VramReport`` joins a reading with the models' containers and their
planned budgets, so the gauge has one immutable thing to render. With several Docker engines
(``hosts:``) it holds every host's GPUs, each marked with its host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ryx_desktop.config import ModelConfig

#: What a model without a GPU (``devices: none``) shows where others show their budget.
NO_GPU = "no GPU"


def gpu_budget(model: ModelConfig) -> float | None:
    """The share of each of its GPUs ``model`` plans to take (``gpu_memory_utilization``).

    None for a model that runs without a GPU (``devices: none``, or an empty list): it has no GPU
    budget, whatever its ``gpu_memory_utilization`` says. The CLI, the window's table and the
    gauge all ask here, so they agree.
    """
    if model.devices == "none" or not model.devices:
        return None
    return model.gpu_memory_utilization


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process using a GPU, as NVML lists it (host PID)."""

    pid: int
    used_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """One GPU at one moment."""

    index: int
    name: str
    uuid: str | None = None
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    utilization_percent: float | None = None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One poll of every GPU; ``message`` says why there is nothing (e.g. no NVIDIA driver)."""

    gpus: tuple[GpuStatus, ...] = ()
    message: str = ""
    hint: str = ""


class GpuProbe(Protocol):
    """Reads the GPUs. The real one wraps NVML lazily and runs it off the event loop."""

    async def read(self) -> GpuReading:
        """Every GPU's memory, utilisation and processes; never raises for a missing driver."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelVram:
    """One model's share of one GPU: measured use and planned budget."""

    key: str
    name: str
    used_bytes: int | None = None  # measured from its container's processes; None: unknown
    budget_fraction: float | None = None  # gpu_memory_utilization, the planned share
    running: bool = False


@dataclass(frozen=True, slots=True)
class GpuVram:
    """One GPU as the gauge draws it; ``host`` is the Docker engine's machine it belongs to."""

    index: int
    name: str
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    utilization_percent: float | None = None
    models: tuple[ModelVram, ...] = ()
    host: str = "local"

    @property
    def models_bytes(self) -> int:
        """Memory measured for the models (unknown counts as 0)."""
        return sum(m.used_bytes or 0 for m in self.models)

    @property
    def other_bytes(self) -> int | None:
        """Memory used by everything that is not one of our models; None when unknown."""
        if self.used_bytes is None:
            return None
        return max(0, self.used_bytes - self.models_bytes)


@dataclass(frozen=True, slots=True)
class HostGpuProblem:
    """Why one host's GPUs could not be read (its GPUs show budgets only)."""

    host: str
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True)
class VramReport:
    """Every GPU with its models; ``message`` (and ``hint``) when no GPU could be read.

    ``hosts`` are the hosts whose GPUs were asked for, in order (empty: only this machine's);
    ``host_problems`` says, when there are several, why a host's GPUs could not be read, while
    ``message`` is only set when no host gave any GPU.
    """

    gpus: tuple[GpuVram, ...] = ()
    message: str = ""
    hint: str = ""
    hosts: tuple[str, ...] = ()
    host_problems: tuple[HostGpuProblem, ...] = ()

    @property
    def found(self) -> bool:
        """True when NVML answered and at least one GPU was read."""
        return not self.message

    @property
    def several_hosts(self) -> bool:
        """True when the GPUs of more than one host were asked for (titles name the host)."""
        return len(self.hosts) > 1

    def used_by(self, key: str) -> int | None:
        """VRAM measured for model ``key`` over all GPUs; None when nothing was measured."""
        values = [m.used_bytes for g in self.gpus for m in g.models if m.key == key]
        known = [v for v in values if v is not None]
        return sum(known) if known else None
