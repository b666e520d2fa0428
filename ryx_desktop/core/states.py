"""Immutable snapshots of what each model is doing, the only state observers ever see."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class InstanceState(enum.StrEnum):
    """Lifecycle of one model's instance (see DESIGN.md, Instance states)."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SLEEPING = "sleeping"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    UNREACHABLE = "unreachable"  # external (url:) model not answering, or its host's engine away


class ProgressPhase(enum.StrEnum):
    """What a starting instance is busy with."""

    PULL = "pull"  # downloading the image
    CREATE = "create"  # creating the container
    LOAD = "load"  # vLLM loading weights
    WAKE = "wake"  # a sleeping model coming back


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a start has come; ``percent`` is None when nothing tells."""

    phase: ProgressPhase
    percent: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an instance failed: the user-facing sentence, hint and evidence."""

    message: str
    hint: str = ""
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """Figures read from vLLM's ``/metrics``; None where the server did not report one."""

    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    sleep_level: int | None = None  # vllm:engine_sleep_state: 0 awake, 1 or 2 asleep


@dataclass(frozen=True, slots=True)
class Instance:
    """One model's state at one moment. Replaced, never mutated."""

    key: str
    name: str
    served_name: str
    aliases: tuple[str, ...] = ()
    external: bool = False
    port: int | None = None
    url: str | None = None  # base URL the proxy and probes talk to
    gpu_memory_utilization: float | None = None
    state: InstanceState = InstanceState.STOPPED
    progress: Progress | None = None
    failure: Failure | None = None
    container_id: str | None = None
    started_at: float | None = None  # clock time it became ready
    in_flight: int = 0
    last_used: float | None = None
    metrics: ModelMetrics | None = None
    config_changed: bool = False  # runs with a spec that differs from the config
    adopted: bool = False  # found running rather than started by us
    note: str = ""  # last state-change reason, e.g. "stopped after 600 s idle"
    sleep_level: int | None = None  # vLLM's sleep level (1 or 2) while SLEEPING
    host_ram_bytes: int | None = None  # host RAM a level-1 sleep holds (its weights), if known
    #: The Docker engine it runs on (or will run on): ``local`` or a name from ``hosts:``; a
    #: stopped ``host: any`` model shows ``any`` until the scheduler places it.
    host: str = "local"

    @property
    def busy(self) -> bool:
        """True when requests are in flight."""
        return self.in_flight > 0

    @property
    def running(self) -> bool:
        """True when a container exists and is not on its way out."""
        return self.state in (
            InstanceState.STARTING,
            InstanceState.READY,
            InstanceState.UNHEALTHY,
            InstanceState.SLEEPING,
        )


def instance_json(inst: Instance) -> dict[str, Any]:
    """A snapshot as plain JSON types (``status --json`` and the proxy's ``/api/instances``)."""
    data = asdict(inst)
    # Times on this process's monotonic clock mean nothing to a reader of the JSON.
    del data["started_at"], data["last_used"]
    data["state"] = inst.state.value
    data["aliases"] = list(inst.aliases)
    if inst.progress is not None:
        data["progress"]["phase"] = inst.progress.phase.value
    if inst.failure is not None:
        data["failure"]["log_tail"] = list(inst.failure.log_tail)
    data["vram_used_bytes"] = None  # measured by the GPU probe of the desktop app
    return data


def instance_from_json(data: dict[str, Any]) -> Instance:
    """The snapshot :func:`instance_json` wrote (``started_at``/``last_used`` are lost).

    Raises ``KeyError``, ``TypeError`` or ``ValueError`` on data of another shape.

    >>> inst = Instance("a", "A", "a", state=InstanceState.STARTING,
    ...                 progress=Progress(ProgressPhase.LOAD, 40.0, "weights 2/4 shards"))
    >>> instance_from_json(instance_json(inst)) == inst
    True
    """
    progress = data.get("progress")
    failure = data.get("failure")
    metrics = data.get("metrics")
    return Instance(
        key=str(data["key"]),
        name=str(data["name"]),
        served_name=str(data["served_name"]),
        aliases=tuple(data.get("aliases") or ()),
        external=bool(data.get("external", False)),
        port=data.get("port"),
        url=data.get("url"),
        gpu_memory_utilization=data.get("gpu_memory_utilization"),
        state=InstanceState(data["state"]),
        progress=None
        if progress is None
        else Progress(
            ProgressPhase(progress["phase"]), progress.get("percent"), progress.get("detail", "")
        ),
        failure=None
        if failure is None
        else Failure(
            failure["message"],
            failure.get("hint", ""),
            failure.get("exit_code"),
            tuple(failure.get("log_tail") or ()),
        ),
        container_id=data.get("container_id"),
        in_flight=int(data.get("in_flight", 0)),
        metrics=None if metrics is None else ModelMetrics(**metrics),
        config_changed=bool(data.get("config_changed", False)),
        adopted=bool(data.get("adopted", False)),
        note=str(data.get("note", "")),
        sleep_level=data.get("sleep_level"),
        host_ram_bytes=data.get("host_ram_bytes"),
        host=str(data.get("host", "local")),
    )
