"""What ``ryx-desktop hosts`` tells about each Docker engine: a frozen report, its JSON and texts.

A :class:`HostReport` is one engine at one moment, the local one (``local``) or one of the
config's ``hosts:``: whether it answered (and if not, why in one sentence, with a hint), its
Docker version and runtimes, its GPUs (or why none are listed), the models configured on it and
how many model containers run there. The adapter in ``adapters/host_check.py`` fills it in;
this module only describes and formats it (no I/O), so the CLI and the window can share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.gpu import GpuReading
from ryx_desktop.core.spec import LOCAL_HOST as LOCAL

#: A model's ``host: any``: the scheduler places it.
ANY = "any"
#: The prefix of NVIDIA's CDI device names (``nvidia.com/gpu=0``).
NVIDIA_CDI_PREFIX = "nvidia.com/gpu"
GIB = 1024**3
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True, slots=True)
class HostGpu:
    """One GPU of a host: None where its memory could not be read."""

    index: int
    name: str
    used_bytes: int | None = None
    total_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class HostReport:
    """One Docker engine as ``ryx-desktop hosts`` found it.

    ``url`` is how it is reached, as shown (for a ``context:`` host, the context and its
    endpoint). ``reason`` and ``hint`` say why it is not ``reachable``. ``gpus_note`` says why
    ``gpus`` is empty (no GPU, nvidia-smi failing, GPUs not readable from here), and is empty
    itself when the GPUs were not read because the host did not answer. ``models`` are the keys
    of the models configured on it; ``containers_running`` is how many model containers run
    there (None when the engine did not answer).
    """

    name: str
    url: str
    reachable: bool
    reason: str = ""
    hint: str = ""
    engine_version: str = ""
    runtimes: tuple[str, ...] = ()
    gpu_runtime: bool = False  # the nvidia runtime or NVIDIA CDI devices: containers get GPUs
    gpus: tuple[HostGpu, ...] = ()
    gpus_note: str = ""
    models: tuple[str, ...] = ()
    containers_running: int | None = None


def gpus_of(reading: GpuReading) -> tuple[tuple[HostGpu, ...], str]:
    """A probe's reading as the report's GPUs, and the note that says why there are none."""
    gpus = tuple(
        HostGpu(gpu.index, gpu.name, gpu.used_bytes, gpu.total_bytes) for gpu in reading.gpus
    )
    if gpus:
        return gpus, ""
    return (), reading.message or "no GPU was listed"


def has_gpu_runtime(runtimes: tuple[str, ...], cdi_devices: tuple[str, ...]) -> bool:
    """Whether Docker can hand GPUs to containers: the nvidia runtime or NVIDIA CDI devices."""
    return "nvidia" in runtimes or any(d.startswith(NVIDIA_CDI_PREFIX) for d in cdi_devices)


def models_on(config: Config, host: str) -> tuple[str, ...]:
    """The keys of the models pinned to ``host`` (``local``: those without ``host:``)."""
    return tuple(
        key
        for key, model in config.models.items()
        if isinstance(model, ModelConfig) and model.host == host
    )


def host_names(config: Config) -> tuple[str, ...]:
    """Every engine of ``config``: ``local`` first, then the ``hosts:`` in the file's order."""
    return (LOCAL, *config.hosts)


def gpu_summary(report: HostReport) -> str:
    """The GPUS cell: each kind of GPU with its count (``2\N{MULTIPLICATION SIGN} RTX 4090``),
    then the memory used of all of them (``(3.1/48.0 GiB used)``); ``none: <why>``; ``-`` when
    they were not read (the host did not answer)."""
    if not report.gpus:
        return f"none: {report.gpus_note}" if report.gpus_note else "-"
    counts: dict[str, int] = {}
    for gpu in report.gpus:
        counts[gpu.name] = counts.get(gpu.name, 0) + 1
    kinds = ", ".join(f"{count}{TIMES} {name}" for name, count in counts.items())
    used = [gpu.used_bytes for gpu in report.gpus]
    total = [gpu.total_bytes for gpu in report.gpus]
    if any(value is None for value in (*used, *total)):
        return kinds
    used_gib = sum(value or 0 for value in used) / GIB
    total_gib = sum(value or 0 for value in total) / GIB
    return f"{kinds} ({used_gib:.1f}/{total_gib:.1f} GiB used)"


def docker_summary(report: HostReport) -> str:
    """The DOCKER cell: the engine's version, ``(nvidia)`` when it can give containers GPUs."""
    if not report.reachable or not report.engine_version:
        return "-"
    return f"{report.engine_version} (nvidia)" if report.gpu_runtime else report.engine_version


def host_report_json(report: HostReport) -> dict[str, Any]:
    """The report as plain JSON types (``hosts --json``)."""
    return {
        "name": report.name,
        "url": report.url,
        "reachable": report.reachable,
        "reason": report.reason,
        "hint": report.hint,
        "engine_version": report.engine_version,
        "runtimes": list(report.runtimes),
        "gpu_runtime": report.gpu_runtime,
        "gpus": [
            {
                "index": gpu.index,
                "name": gpu.name,
                "used_bytes": gpu.used_bytes,
                "total_bytes": gpu.total_bytes,
            }
            for gpu in report.gpus
        ],
        "gpus_note": report.gpus_note,
        "models": list(report.models),
        "containers_running": report.containers_running,
    }
