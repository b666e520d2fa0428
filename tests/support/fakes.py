"""In-memory stand-ins for the runtime, the health probe and the clock, for core unit tests.

They implement the Protocols of ``ryx_desktop.core.ports`` with the same observable behaviour as
the real adapters (which are tested against the real engine), but no I/O and virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from ryx_desktop.core.errors import ImageMissingError, PortInUseError
from ryx_desktop.core.ports import (
    AnswerResult,
    ContainerInfo,
    ContainerStatus,
    ProbeResult,
    PullProgress,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.spec import LOCAL_HOST, ContainerSpec
from ryx_desktop.core.states import ModelMetrics


async def settle(rounds: int = 50) -> None:
    """Let every task that is ready to run do so (no wall-clock time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class VirtualClock:
    """A clock whose time only moves when a test calls ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order and letting them run."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target
        await settle()


@dataclass
class FakeContainer:
    info: ContainerInfo
    spec: ContainerSpec | None
    served_name: str
    serving: bool = False
    log_lines: list[str] = field(default_factory=list)
    api_key: str | None = None  # what vLLM's --api-key / VLLM_API_KEY made it require


class FakeRuntime:
    """Containers in a dict. ``on_start`` decides what a new container does."""

    LOAD_LINES = (
        "INFO 11-26 17:05:38 api_server.py:585] vLLM API server version 0.6.4.post1",
        "Loading safetensors checkpoint shards:   0% Completed | 0/2 [00:00<?, ?it/s]",
        "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01,  1.00it/s]",
        "Loading safetensors checkpoint shards: 100% Completed | 2/2 [00:02<00:00,  1.00it/s]",
        "INFO:     Application startup complete.",
    )

    def __init__(self, host: str = LOCAL_HOST) -> None:
        self.host = host  # the engine's host name: what its containers and events are tagged with
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []  # (verb, key)
        self.behaviour: dict[str, str] = {}  # key -> "ok" | "slow" | "crash" | "oom" | "port"
        self.missing_images: set[str] = set()
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self._log_waiters: dict[str, asyncio.Event] = {}
        self.live_logs = False  # follow_logs waits for write_log lines until the container ends
        self.inspects = 0  # calls of inspect: the start loop must not hammer Docker

    # -- helpers for tests --
    def by_key(self, key: str) -> FakeContainer | None:
        for c in self.containers.values():
            if c.info.model_key == key:
                return c
        return None

    def add_running(
        self, key: str, port: int, served_name: str, *, spec_hash: str | None, managed: bool = True
    ) -> str:
        """A container that already runs, as if started before the app (or by compose)."""
        cid = self._new_id()
        info = ContainerInfo(
            id=cid,
            name=f"ryx-vllm-{key}",
            model_key=key,
            status=ContainerStatus.RUNNING,
            spec_hash=spec_hash,
            host_port=port,
            managed=managed,
            host=self.host,
        )
        self.containers[cid] = FakeContainer(info, None, served_name, serving=True)
        return cid

    def _new_id(self) -> str:
        """``c1``, ``c2``...; on another host ``<host>-c1``...: unique across engines."""
        number = next(self._ids)
        return f"c{number}" if self.host == LOCAL_HOST else f"{self.host}-c{number}"

    def write_log(self, cid: str, *lines: str) -> None:
        """The container prints ``lines``; a live ``follow_logs`` yields them at once."""
        self.containers[cid].log_lines.extend(lines)
        self._wake_log_followers(cid)

    def _wake_log_followers(self, cid: str) -> None:
        waiter = self._log_waiters.pop(cid, None)
        if waiter is not None:
            waiter.set()

    def emit(self, event: RuntimeEvent) -> None:
        self._events.put_nowait(event)

    def exit(self, cid: str, code: int, *, oom: bool = False) -> None:
        """The container's process ends (crash, OOM kill, or outside stop)."""
        c = self.containers[cid]
        c.serving = False
        c.info = replace(c.info, status=ContainerStatus.EXITED, exit_code=code, oom_killed=oom)
        self.emit(RuntimeEvent(RuntimeEventKind.DIE, cid, c.info.model_key, code, host=self.host))
        self._wake_log_followers(cid)

    # -- ContainerRuntime --
    async def list_models(self) -> list[ContainerInfo]:
        return [c.info for c in self.containers.values()]

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        self.calls.append(("ensure_image", image))
        if image in self.missing_images:
            raise ImageMissingError(f"image {image} is not available and could not be pulled")

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        self.calls.append(("start", spec.key))
        behaviour = self.behaviour.get(spec.key, "ok")
        if behaviour == "port":
            raise PortInUseError(f"port {spec.host_port} is already in use")
        await asyncio.sleep(0)
        cid = self._new_id()
        info = ContainerInfo(
            id=cid,
            name=spec.name,
            model_key=spec.key,
            status=ContainerStatus.RUNNING,
            spec_hash=spec.spec_hash,
            host_port=spec.host_port,
            host=self.host,
        )
        served = _served_name(spec.command)
        container = FakeContainer(
            info, spec, served, log_lines=list(self.LOAD_LINES), api_key=_required_key(spec)
        )
        self.containers[cid] = container
        if behaviour == "ok":
            container.serving = True
        elif behaviour == "crash":
            container.log_lines.append("RuntimeError: CUDA error: an illegal memory access")
            container.info = replace(info, status=ContainerStatus.EXITED, exit_code=1)
        elif behaviour == "oom":
            container.info = replace(
                info, status=ContainerStatus.EXITED, exit_code=137, oom_killed=True
            )
        return container.info

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self.inspects += 1
        c = self.containers.get(container_id)
        return c.info if c else None

    async def stop(self, container_id: str, timeout: float) -> None:
        c = self.containers.pop(container_id, None)
        if c is not None:
            self.calls.append(("stop", c.info.model_key))
        self._wake_log_followers(container_id)

    async def remove(self, container_id: str) -> None:
        self.containers.pop(container_id, None)
        self._wake_log_followers(container_id)

    async def logs(self, container_id: str, tail: int) -> list[str]:
        c = self.containers.get(container_id)
        return list(c.log_lines[-tail:]) if c else []

    async def follow_logs(self, container_id: str, tail: int = 0) -> AsyncIterator[str]:
        c = self.containers.get(container_id)
        if not self.live_logs or c is None:
            for line in list(c.log_lines) if c else []:
                await asyncio.sleep(0)
                yield line
            return
        sent = 0
        while True:
            while sent < len(c.log_lines):
                sent += 1
                await asyncio.sleep(0)
                yield c.log_lines[sent - 1]
            if self.containers.get(container_id) is not c or not _running(c):
                return
            await self._log_waiters.setdefault(container_id, asyncio.Event()).wait()

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        while True:
            yield await self._events.get()

    async def close(self) -> None:
        return None


def _running(c: FakeContainer) -> bool:
    return c.info.status is ContainerStatus.RUNNING


def _served_name(args: tuple[str, ...]) -> str:
    """What vLLM would answer to: ``--served-model-name``, else the model (positional or
    ``--model``, as older command lines gave it)."""
    for flag in ("--served-model-name", "--model"):
        if flag in args:
            return args[args.index(flag) + 1]
    start = 1 if args and args[0] == "serve" else 0
    return args[start]


def _required_key(spec: ContainerSpec) -> str | None:
    """The key vLLM would require: ``--api-key`` first, else ``VLLM_API_KEY``."""
    args = list(spec.command)
    for index, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--api-key", "--api_key"):
            return value if eq else args[index + 1]
    return spec.env.get("VLLM_API_KEY") or None


class FakeHealth:
    """Answers probes from what the fake runtime's containers are doing.

    A container that requires an API key answers ``/v1/models`` (so: the probe's served names)
    only to a probe that sends it, as vLLM does. ``answers`` scripts the first answer per
    served name (default: answered); ``external`` lists an external server's models by URL.
    """

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.external_up: set[str] = set()  # URLs of external servers serving ("remote",)
        self.external: dict[str, tuple[str, ...]] = {}  # URL -> the models it lists
        self.answers: dict[str, AnswerResult] = {}
        self.probes = 0
        self.keys_sent: list[tuple[str, str | None]] = []  # (what, api_key) for every call
        self.first_answers: list[str] = []  # served names asked for a first answer
        self.on_first_answer: Callable[[str], None] | None = None

    def _serving(self, base_url: str) -> list[FakeContainer]:
        port = int(base_url.rsplit(":", 1)[1])
        return [
            c
            for c in self.runtime.containers.values()
            if c.serving and c.info.status is ContainerStatus.RUNNING and c.info.host_port == port
        ]

    async def probe(self, base_url: str, api_key: str | None = None) -> ProbeResult:
        self.probes += 1
        self.keys_sent.append(("probe", api_key))
        if base_url in self.external:
            return ProbeResult(reachable=True, healthy=True, served_names=self.external[base_url])
        if base_url in self.external_up:
            return ProbeResult(reachable=True, healthy=True, served_names=("remote",))
        serving = self._serving(base_url)
        if not serving:
            return ProbeResult(reachable=False, healthy=False, error="connection refused")
        if any(c.api_key is not None and c.api_key != api_key for c in serving):
            return ProbeResult(reachable=True, healthy=True, error="/v1/models answered HTTP 401")
        return ProbeResult(
            reachable=True, healthy=True, served_names=tuple(c.served_name for c in serving)
        )

    async def metrics(self, base_url: str, api_key: str | None = None) -> ModelMetrics | None:
        self.keys_sent.append(("metrics", api_key))
        return ModelMetrics(requests_running=0.0, requests_waiting=0.0, kv_cache_usage=0.1)

    async def first_answer(
        self, base_url: str, served_name: str, api_key: str | None = None
    ) -> AnswerResult:
        self.keys_sent.append(("first_answer", api_key))
        self.first_answers.append(served_name)
        if self.on_first_answer is not None:
            self.on_first_answer(served_name)
        await asyncio.sleep(0)
        return self.answers.get(served_name, AnswerResult(ok=True, status=200))

    async def close(self) -> None:
        return None
