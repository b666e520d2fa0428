"""The outside world as core sees it: small Protocols with real versions in ``adapters``.

Core never imports docker, httpx or pynvml; it talks to these. Tests plug fakes in here.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ryx_desktop.core.spec import LOCAL_HOST, ContainerSpec
from ryx_desktop.core.states import ModelMetrics


class ContainerStatus(enum.StrEnum):
    """Docker's own container states."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the runtime knows about one container that belongs to a model."""

    id: str
    name: str
    model_key: str
    status: ContainerStatus
    exit_code: int | None = None
    oom_killed: bool = False
    spec_hash: str | None = None  # None for containers compose started (no labels)
    host_port: int | None = None
    managed: bool = True  # carries io.ryx.managed=true (False: adopted by name)
    pids: tuple[int, ...] = ()  # host PIDs, for mapping GPU memory to models
    host: str = LOCAL_HOST  # the engine it is on (config host name); set by a multi-engine runtime


class RuntimeEventKind(enum.StrEnum):
    """Docker events the supervisor cares about."""

    START = "start"
    DIE = "die"
    OOM = "oom"
    DESTROY = "destroy"


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """One Docker event for a model's container."""

    kind: RuntimeEventKind
    container_id: str
    model_key: str
    exit_code: int | None = None
    host: str = LOCAL_HOST  # the engine it happened on; set by a multi-engine runtime


@dataclass(frozen=True, slots=True)
class PullProgress:
    """Image download progress summed over layers."""

    image: str
    done_bytes: int
    total_bytes: int
    layers_done: int
    layers_total: int
    status: str = ""

    @property
    def percent(self) -> float | None:
        if self.total_bytes <= 0:
            return None
        return min(100.0, 100.0 * self.done_bytes / self.total_bytes)


class ContainerRuntime(Protocol):
    """Runs model containers. Every method runs the blocking work off the event loop.

    Methods raise ``ryx_desktop.core.errors`` types only.
    """

    async def list_models(self) -> list[ContainerInfo]:
        """Containers that belong to models: labelled ``io.ryx.managed`` or named ``ryx-vllm-*``."""
        ...

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        """Pull ``image`` when it is not present on engine ``host``, reporting progress.

        A runtime of one engine ignores ``host``; a multi-engine one pulls on that host."""
        ...

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start the container; leave nothing behind on failure."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's current state, or None when it no longer exists."""
        ...

    async def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, kill, then remove. Missing is fine."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove a stopped container. Missing is fine."""
        ...

    async def logs(self, container_id: str, tail: int) -> list[str]:
        """The last ``tail`` lines of the container's log (stdout and stderr)."""
        ...

    def follow_logs(self, container_id: str, tail: int = 0) -> AsyncIterator[str]:
        """Log lines as they are written, until the container stops or the iterator closes."""
        ...

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Docker events (start, die, oom, destroy) of model containers, as they happen."""
        ...

    async def close(self) -> None:
        """Stop background threads and close the connection."""
        ...


@dataclass(frozen=True, slots=True)
class HostListing:
    """Every host's containers, read at once: what answered, and why the others did not."""

    containers: tuple[ContainerInfo, ...]
    answered: tuple[str, ...]  # hosts whose engine listed its containers
    problems: Mapping[str, str] = field(default_factory=dict)  # host -> why it did not answer


@runtime_checkable
class HostsRuntime(Protocol):
    """What a runtime over several engines (one per host) adds to ``ContainerRuntime``.

    It reports each host's reachability itself (to a listener given at its construction), and
    its event stream never ends because one host went away.
    """

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts it has an engine for (``local`` among them)."""
        ...

    async def list_hosts(self) -> HostListing:
        """Every host's containers, tagged with their host; never raises for one host."""
        ...

    async def list_host(self, host: str) -> list[ContainerInfo]:
        """One host's containers (for a resync once it answers again); its error if not."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One health probe of a vLLM (or any OpenAI-compatible) server."""

    reachable: bool  # something answered HTTP
    healthy: bool  # /health answered 200
    served_names: tuple[str, ...] = ()  # ids listed by /v1/models
    error: str = ""

    def serves(self, served_name: str) -> bool:
        return self.healthy and served_name in self.served_names


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """A model server's answer to one tiny completion: can it really generate?"""

    ok: bool
    status: int | None = None  # HTTP status of the answer; None when none came
    error: str = ""  # the server's own error message, or why no answer came
    skipped: bool = False  # the server has no completion endpoint to ask (e.g. embeddings)


class HealthProbe(Protocol):
    """Asks a model server how it is.

    ``api_key`` is the key the server itself requires (vLLM's ``--api-key``); it is sent as
    ``Authorization: Bearer`` on every request, since vLLM guards every ``/v1/*`` path with it.
    """

    async def probe(self, base_url: str, api_key: str | None = None) -> ProbeResult:
        """GET /health and /v1/models."""
        ...

    async def metrics(self, base_url: str, api_key: str | None = None) -> ModelMetrics | None:
        """GET /metrics and read vLLM's request and KV-cache gauges; None when unavailable."""
        ...

    async def first_answer(
        self, base_url: str, served_name: str, api_key: str | None = None
    ) -> AnswerResult:
        """POST a 1-token completion (chat when completions is missing); never raises."""
        ...

    async def close(self) -> None: ...


class Clock(Protocol):
    """Time, injectable so tests never sleep for real."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SleepControl(Protocol):
    """Puts a vLLM engine to sleep and wakes it, through vLLM's dev-mode sleep routes.

    The routes exist only when the server runs with ``VLLM_SERVER_DEV_MODE=1`` and
    ``--enable-sleep-mode``. Level 1 moves the weights to host RAM and drops the KV cache;
    level 2 drops the weights too. ``api_key`` is sent as ``Authorization: Bearer`` when given.
    Methods raise ``ryx_desktop.core.errors`` types only: ``SleepNotSupportedError`` when a
    route answers 404, ``SleepFailedError`` for any other error answer or no answer.
    """

    async def sleep(self, base_url: str, level: int, api_key: str | None = None) -> None:
        """``POST /sleep?level=N`` (1 or 2). The engine must have no request decoding."""
        ...

    async def wake(self, base_url: str, level: int, api_key: str | None = None) -> None:
        """Wake from sleep ``level``: level 1 in one ``POST /wake_up``; level 2 in three steps
        (wake the weights, ``reload_weights`` through ``/collective_rpc``, wake the KV cache)."""
        ...

    async def is_sleeping(self, base_url: str, api_key: str | None = None) -> bool | None:
        """``GET /is_sleeping``; None when it cannot tell (no such route, no or odd answer)."""
        ...

    async def close(self) -> None: ...


class HostFacts(Protocol):
    """What the machine that runs the models can tell about its memory and a model's files.

    Both answer None when they cannot tell; the sleep planner then takes the safe choice
    (level 2, which needs no host RAM).
    """

    async def available_ram(self) -> int | None:
        """Bytes of host RAM available now (``MemAvailable``)."""
        ...

    async def weights_bytes(self, host_path: str) -> int | None:
        """Bytes of the weights in a model folder (what a level-1 sleep moves to host RAM)."""
        ...
