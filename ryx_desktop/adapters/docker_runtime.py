"""The container runtime on a real Docker engine, through the docker SDK.

Every SDK call is blocking, so each one runs in an executor; the two long-lived streams (a
container's log and the engine's events) are read by daemon threads that hand items to the event
loop with ``call_soon_threadsafe``. Docker's exceptions are translated once, here, into
``ryx_desktop.core.errors`` types (see ``_docker_errors``).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import functools
import math
import os
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import docker.utils

from ryx_desktop.adapters._docker_errors import (
    DEFAULT_DOCKER_HOST,
    conflicting_port,
    image_missing,
    image_not_local,
    is_port_conflict,
    pull_failed,
    translate,
)
from ryx_desktop.core.errors import (
    DockerError,
    DockerUnavailableError,
    ModelPathMissingError,
    RyxError,
)
from ryx_desktop.core.ports import (
    ContainerInfo,
    ContainerStatus,
    PullProgress,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.setup_checks import EngineInfo
from ryx_desktop.core.spec import (
    CONTAINER_PORT,
    CONTAINER_PREFIX,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_SPEC_HASH,
    LOCAL_HOST,
    ContainerSpec,
    key_from_container_name,
)

T = TypeVar("T")

_RUNNING = {"running", "restarting", "paused"}
_EVENT_KINDS = {kind.value: kind for kind in RuntimeEventKind}
_LAYER_DONE = {"Pull complete", "Already exists"}
_LAYER_DOWNLOADED = {"Download complete", "Verifying Checksum", "Extracting", *_LAYER_DONE}
_LAYER_STATUSES = {"Pulling fs layer", "Waiting", "Downloading", *_LAYER_DOWNLOADED}
_JOIN_TIMEOUT = 2.0
_SOCKET_CHECK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class _End:
    """Marks the end of a stream handed to the event loop; ``error`` when it broke."""

    error: RyxError | None = None


class _Feed:
    """One long-lived docker stream read by a daemon thread; closable from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self.stopped = False
        self.thread: threading.Thread | None = None
        #: Ends the consumer's iteration; set by the pump, called when the runtime closes.
        self.wake: Callable[[], None] = lambda: None

    def attach(self, stream: Any) -> bool:
        """Remember the opened stream; False (and the stream closed) when already stopped."""
        with self._lock:
            if not self.stopped:
                self._stream = stream
                return True
        _close_stream(stream)
        return False

    def stop(self) -> None:
        """Stop reading: closing the stream's socket wakes the thread out of its read."""
        with self._lock:
            self.stopped = True
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_stream(stream)

    def release(self, stream: Any) -> None:
        """Called by the reader thread when it is done with the stream."""
        with self._lock:
            if self._stream is stream:
                self._stream = None
        _close_stream(stream)


def _close_stream(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


class _LineSplitter:
    """Bytes chunks in, complete text lines out (``\\n``, ``\\r\\n`` and bare ``\\r`` end a line,
    so progress bars redrawn with ``\\r`` show up as lines); empty lines are dropped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += self._decoder.decode(chunk)
        if not self._buffer:
            return []
        # A trailing "\r" may be the first half of "\r\n": keep it until more arrives.
        keep_cr = self._buffer.endswith("\r")
        text = self._buffer[:-1] if keep_cr else self._buffer
        lines = text.splitlines(keepends=True)
        rest = ""
        if lines and not lines[-1].endswith(("\n", "\r")):
            rest = lines.pop()
        self._buffer = rest + ("\r" if keep_cr else "")
        return [s for s in (line.rstrip("\r\n") for line in lines) if s]

    def flush(self) -> list[str]:
        text = self._buffer + self._decoder.decode(b"", final=True)
        self._buffer = ""
        return [line for line in text.splitlines() if line]


def split_lines(data: bytes) -> list[str]:
    """A whole log as text lines, like :class:`_LineSplitter` would give them."""
    splitter = _LineSplitter()
    return splitter.feed(data) + splitter.flush()


class DockerRuntime:
    """``ContainerRuntime`` on the Docker engine at ``host`` (default: the environment's engine).

    ``executor`` runs the blocking SDK calls (default: the loop's default executor).
    ``check_model_paths`` checks the weights exist on this machine before a start; turn it off for
    an engine on another machine. ``address`` names the engine in messages when ``host`` is not
    how users know it: an engine on an ``ssh://`` host is reached through the local end of an SSH
    tunnel (``DockerRuntime(tunnel.url, address=target.url)``).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
        check_model_paths: bool = True,
        address: str | None = None,
    ) -> None:
        self._host = host
        self._address = address
        self._executor = executor
        self._check_model_paths = check_model_paths
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._feeds: set[_Feed] = set()
        self._feeds_lock = threading.Lock()

    @property
    def address(self) -> str:
        """The engine's address, for messages."""
        return self._address or self._endpoint

    @property
    def _endpoint(self) -> str:
        """Where the engine is connected to."""
        return self._host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    # -- plumbing ---------------------------------------------------------------------------

    def _get_client(self) -> Any:
        """The docker client, created on first use (blocking: call from a worker thread)."""
        with self._client_lock:
            if self._client is None:
                try:
                    self._check_socket()
                    if self._host is None:
                        self._client = docker.from_env()
                    else:
                        self._client = docker.DockerClient(base_url=self._host)
                except Exception as exc:
                    raise translate(exc, address=self.address) from exc
            return self._client

    def _check_socket(self) -> None:
        """Connect to a unix socket once, closing it properly, before the SDK does.

        The SDK leaks its socket when a unix connection fails (an unclosed-socket warning later);
        failing here first gives the same error without the leak.
        """
        endpoint = self._endpoint
        if not endpoint.startswith("unix://"):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(_SOCKET_CHECK_TIMEOUT)
            probe.connect(endpoint[len("unix://") :])

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in the executor; docker errors arrive translated."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except RyxError as known:
            self._forget_client_if_gone(known)
            raise
        except Exception as exc:
            error = translate(exc, address=self.address)
            self._forget_client_if_gone(error)
            raise error from exc

    def _forget_client_if_gone(self, error: RyxError) -> None:
        if isinstance(error, DockerUnavailableError):
            self._forget_client()

    def _forget_client(self) -> None:
        """Drop the client once the engine went away: the next call checks the socket first
        (``_check_socket``) rather than leak one more socket per try while the engine is away."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # -- ContainerRuntime -------------------------------------------------------------------

    async def list_models(self) -> list[ContainerInfo]:
        """Containers that belong to models: labelled ``io.ryx.managed`` or named ``ryx-vllm-*``."""
        return await self._run(self._list_models_sync)

    def _list_models_sync(self) -> list[ContainerInfo]:
        client = self._get_client()
        found: dict[str, Any] = {}
        for filters in ({"label": f"{LABEL_MANAGED}=true"}, {"name": CONTAINER_PREFIX}):
            for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
                found.setdefault(container.id, container)
        infos: list[ContainerInfo] = []
        for container in found.values():
            info = _info_from_attrs(container.attrs)
            if info is None:
                continue
            if info.status == ContainerStatus.RUNNING:
                info = _with_pids(info, self._pids(client, container.id))
            infos.append(info)
        infos.sort(key=lambda i: (i.model_key, i.name))
        return infos

    async def engine_info(self) -> EngineInfo:
        """What ``docker info`` tells: the engine's version, runtimes and CDI devices."""
        return await self._run(lambda: engine_info_of(self._get_client().info()))

    async def image_present(self, image: str) -> bool:
        """Whether ``image`` is on this engine already (no pull)."""
        return await self._run(self._image_present_sync, image)

    def _image_present_sync(self, image: str) -> bool:
        try:
            self._get_client().images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        """Pull ``image`` when it is not present locally, reporting progress on the loop.

        ``host`` is ignored: this runtime is one engine (a multi-engine runtime routes by it)."""
        loop = asyncio.get_running_loop()

        def report(progress: PullProgress) -> None:
            if on_progress is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(on_progress, progress)

        await self._run(self._ensure_image_sync, image, report)

    def _ensure_image_sync(self, image: str, report: Callable[[PullProgress], None]) -> None:
        client = self._get_client()
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        repo, tag = docker.utils.parse_repository_tag(image)
        tally = _PullTally(image)
        try:
            for entry in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if not isinstance(entry, dict):
                    continue
                if "error" in entry:
                    detail = entry.get("errorDetail") or {}
                    raise image_missing(image, str(detail.get("message") or entry["error"]))
                progress = tally.add(entry)
                if progress is not None:
                    report(progress)
        except RyxError:
            raise
        except Exception as exc:
            raise pull_failed(image, exc, address=self.address) from exc
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise image_missing(image, "the pull finished but the image is not there") from exc

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start the container; on failure nothing is left behind."""
        if self._check_model_paths and spec.host_model_path:
            exists = await asyncio.get_running_loop().run_in_executor(
                self._executor, os.path.exists, spec.host_model_path
            )
            if not exists:
                raise ModelPathMissingError(
                    f"model path {_container_model_path(spec)} not found: "
                    f"{spec.host_model_path} does not exist"
                )
        return await self._run(self._start_sync, spec)

    def _start_sync(self, spec: ContainerSpec) -> ContainerInfo:
        client = self._get_client()
        try:
            client.images.get(spec.image)
        except docker.errors.ImageNotFound as exc:
            raise image_not_local(spec.image) from exc
        self._clear_name(client, spec.name)
        if self._check_model_paths:
            for mount in spec.mounts:
                if not mount.read_only and not os.path.exists(mount.source):
                    with contextlib.suppress(OSError):
                        os.makedirs(mount.source, exist_ok=True)
        try:
            container = client.containers.create(
                spec.image,
                command=list(spec.command),
                name=spec.name,
                labels=dict(spec.labels),
                ports={f"{spec.container_port}/tcp": (spec.host_ip, spec.host_port)},
                mounts=[
                    docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                    for m in spec.mounts
                ],
                environment={**spec.env, **spec.secret_env},
                ipc_mode=spec.ipc_mode,
                device_requests=_device_requests(spec.devices),
                detach=True,
            )
        except Exception as exc:
            raise translate(
                exc, address=self.address, action=f"create container {spec.name}", image=spec.image
            ) from exc
        try:
            container.start()
        except Exception as exc:
            holder = None
            if is_port_conflict(exc):
                holder = self._port_holder(
                    client, conflicting_port(exc) or spec.host_port, container.id
                )
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise translate(
                exc,
                address=self.address,
                action=f"start container {spec.name}",
                image=spec.image,
                port=spec.host_port,
                port_holder=holder,
            ) from exc
        container.reload()
        info = _info_from_attrs(container.attrs) or _fallback_info(container.attrs, spec.key)
        if info.status == ContainerStatus.RUNNING:
            info = _with_pids(info, self._pids(client, container.id))
        return info

    def _clear_name(self, client: Any, name: str) -> None:
        """Remove a stopped container that holds ``name``; refuse when it runs."""
        try:
            existing = client.containers.get(name)
        except docker.errors.NotFound:
            return
        status = existing.attrs.get("State", {}).get("Status", "")
        if status in _RUNNING:
            raise DockerError(
                f"container {name} already runs",
                hint=f"Stop it first (`docker stop {name}`), or use the running one.",
            )
        with contextlib.suppress(docker.errors.NotFound):
            existing.remove(force=True)

    def _port_holder(self, client: Any, port: int, own_id: str) -> str | None:
        """The name of a running container that publishes host ``port`` (best effort)."""
        try:
            listed = client.api.containers()
        except Exception:
            return None
        candidates: list[str] = []
        for entry in listed:
            if entry.get("Id") == own_id:
                continue
            if any(p.get("PublicPort") == port for p in entry.get("Ports") or ()):
                names = entry.get("Names") or [entry.get("Id", "?")[:12]]
                candidates.append(str(names[0]).lstrip("/"))
        # Prefer one of ours when several match (IPv4 and IPv6 bindings list twice).
        candidates.sort(key=lambda n: not n.startswith(CONTAINER_PREFIX))
        return candidates[0] if candidates else None

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's current state, or None when it no longer exists."""
        return await self._run(self._inspect_sync, container_id)

    def _inspect_sync(self, container_id: str) -> ContainerInfo | None:
        client = self._get_client()
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        info = _info_from_attrs(attrs) or _fallback_info(attrs, None)
        if info.status == ContainerStatus.RUNNING:
            info = _with_pids(info, self._pids(client, info.id))
        return info

    async def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, SIGKILL, then remove. Missing is fine."""
        await self._run(self._stop_sync, container_id, timeout)

    def _stop_sync(self, container_id: str, timeout: float) -> None:
        client = self._get_client()
        try:
            client.api.stop(container_id, timeout=max(0, math.ceil(timeout)))
        except docker.errors.NotFound:
            return
        self._remove_sync(container_id)

    async def remove(self, container_id: str) -> None:
        """Remove a stopped container. Missing is fine."""
        await self._run(self._remove_sync, container_id)

    def _remove_sync(self, container_id: str) -> None:
        client = self._get_client()
        try:
            client.api.remove_container(container_id)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise translate(
                exc, address=self.address, action=f"remove container {container_id[:12]}"
            ) from exc

    async def logs(self, container_id: str, tail: int) -> list[str]:
        """The last ``tail`` lines of the container's log (stdout and stderr); [] when gone.

        A negative ``tail`` means the whole log.
        """
        return await self._run(self._logs_sync, container_id, tail)

    def _logs_sync(self, container_id: str, tail: int) -> list[str]:
        client = self._get_client()
        try:
            data = client.api.logs(container_id, stdout=True, stderr=True, tail=tail)
        except docker.errors.NotFound:
            return []
        return split_lines(data if isinstance(data, bytes) else bytes(data))

    def follow_logs(self, container_id: str, tail: int = 0) -> AsyncGenerator[str, None]:
        """Log lines as they are written (after the last ``tail`` old ones; negative: all),
        until the container stops or the iterator is closed (``aclose()``, or ``break``)."""

        def reader(feed: _Feed, deliver: Callable[[str | _End], None]) -> None:
            client = self._get_client()
            try:
                stream = client.api.logs(
                    container_id, stdout=True, stderr=True, stream=True, follow=True, tail=tail
                )
            except docker.errors.NotFound:
                deliver(_End())
                return
            if not feed.attach(stream):
                return
            splitter = _LineSplitter()
            try:
                for chunk in stream:
                    for line in splitter.feed(chunk):
                        deliver(line)
                for line in splitter.flush():
                    deliver(line)
            finally:
                feed.release(stream)
            deliver(_End())

        return self._pump(reader, f"ryx-logs-{container_id[:12]}")

    def events(self) -> AsyncGenerator[RuntimeEvent, None]:
        """Docker events (start, die, oom, destroy) of model containers from now on.

        Events are requested from the moment of this call, so none is lost between calling
        ``events()`` and starting to iterate. One daemon thread reads each iterator's stream;
        the iteration raises ``DockerError`` when the engine ends the stream, and simply ends
        when the iterator or the runtime is closed.
        """
        now = time.time_ns()
        since = f"{now // 1_000_000_000}.{now % 1_000_000_000:09d}"

        def reader(feed: _Feed, deliver: Callable[[RuntimeEvent | _End], None]) -> None:
            client = self._get_client()
            stream = client.events(
                decode=True,
                since=since,
                filters={"type": "container", "event": sorted(_EVENT_KINDS)},
            )
            if not feed.attach(stream):
                return
            try:
                for raw in stream:
                    event = _runtime_event(raw)
                    if event is not None:
                        deliver(event)
            finally:
                feed.release(stream)
            if not feed.stopped:
                self._forget_client()  # the engine went away, or will be asked again anew
                closed = f"the Docker engine at {self.address} closed its event stream"
                deliver(_End(DockerError(closed)))

        return self._pump(reader, "ryx-docker-events")

    async def _pump(
        self,
        reader: Callable[[_Feed, Callable[[T | _End], None]], None],
        name: str,
    ) -> AsyncGenerator[T, None]:
        """Run ``reader`` in a daemon thread and yield what it delivers, on this loop.

        The reader ends the stream by delivering an :class:`_End`; exceptions it raises end
        it with the translated error. Closing the iterator stops the thread.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        feed = _Feed()

        def deliver(item: Any) -> None:
            if feed.stopped:
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody listens any more
                feed.stop()

        def run() -> None:
            try:
                reader(feed, deliver)
            except Exception as exc:
                if not feed.stopped:
                    error = translate(exc, address=self.address)
                    self._forget_client_if_gone(error)
                    deliver(_End(error))
            finally:
                with self._feeds_lock:
                    self._feeds.discard(feed)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, _End())

        thread = threading.Thread(target=run, name=name, daemon=True)
        feed.thread = thread
        feed.wake = wake
        with self._feeds_lock:
            self._feeds.add(feed)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            feed.stop()

    async def close(self) -> None:
        """Stop the stream threads (closing their streams) and close the client."""
        with self._feeds_lock:
            feeds = list(self._feeds)
            self._feeds.clear()
        for feed in feeds:
            feed.stop()
            feed.wake()
        threads = [f.thread for f in feeds if f.thread is not None]
        with self._client_lock:
            client, self._client = self._client, None
        if not threads and client is None:
            return

        def finish() -> None:
            deadline = time.monotonic() + _JOIN_TIMEOUT
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, finish)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _pids(client: Any, container_id: str) -> tuple[int, ...]:
        """Host PIDs of the container's processes; empty when Docker cannot tell."""
        try:
            top = client.api.top(container_id)
            column = list(top.get("Titles") or []).index("PID")
            return tuple(int(row[column]) for row in top.get("Processes") or [])
        except Exception:
            return ()


class _PullTally:
    """Sums a pull's per-layer progress into :class:`PullProgress` figures."""

    def __init__(self, image: str) -> None:
        self._image = image
        self._layers: dict[str, tuple[int, int]] = {}  # id -> (downloaded, total)
        self._done: set[str] = set()

    def add(self, entry: Mapping[str, Any]) -> PullProgress | None:
        status = str(entry.get("status") or "")
        layer = entry.get("id")
        if not layer or (status not in _LAYER_STATUSES and layer not in self._layers):
            return PullProgress(self._image, *self._sums(), status=status) if status else None
        layer = str(layer)
        current, total = self._layers.get(layer, (0, 0))
        detail = entry.get("progressDetail") or {}
        if status == "Downloading":
            total = int(detail.get("total") or total)
            current = int(detail.get("current") or current)
        elif status in _LAYER_DOWNLOADED:
            current = total
        if status in _LAYER_DONE:
            self._done.add(layer)
        self._layers[layer] = (current, total)
        return PullProgress(self._image, *self._sums(), status=status)

    def _sums(self) -> tuple[int, int, int, int]:
        done = sum(c for c, _ in self._layers.values())
        total = sum(t for _, t in self._layers.values())
        return done, total, len(self._done), len(self._layers)


def engine_info_of(raw: Mapping[str, Any]) -> EngineInfo:
    """``docker info``'s answer as an :class:`EngineInfo` (missing fields left empty)."""
    runtimes = raw.get("Runtimes")
    devices = raw.get("DiscoveredDevices")
    cdi = [
        str(d.get("ID"))
        for d in (devices if isinstance(devices, list) else ())
        if isinstance(d, Mapping) and d.get("Source", "cdi") == "cdi" and d.get("ID")
    ]
    return EngineInfo(
        version=str(raw.get("ServerVersion") or ""),
        runtimes=tuple(sorted(runtimes)) if isinstance(runtimes, Mapping) else (),
        cdi_devices=tuple(cdi),
    )


def _device_requests(devices: str | tuple[int, ...]) -> list[docker.types.DeviceRequest]:
    if devices == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if devices == "none" or not devices:
        return []
    return [
        docker.types.DeviceRequest(device_ids=[str(i) for i in devices], capabilities=[["gpu"]])
    ]


def _container_model_path(spec: ContainerSpec) -> str:
    """The model as the container sees it: ``vllm serve MODEL`` (or an older ``--model MODEL``)."""
    command = list(spec.command)
    if command and not command[0].startswith("-"):
        return command[0]
    if "--model" in command and command.index("--model") + 1 < len(command):
        return command[command.index("--model") + 1]
    return spec.host_model_path or "?"


def _model_key(name: str, labels: Mapping[str, str]) -> str | None:
    return labels.get(LABEL_MODEL) or key_from_container_name(name)


def _status(attrs: Mapping[str, Any]) -> ContainerStatus:
    raw = str((attrs.get("State") or {}).get("Status") or "")
    try:
        return ContainerStatus(raw)
    except ValueError:
        return ContainerStatus.DEAD


def _host_port(attrs: Mapping[str, Any]) -> int | None:
    bindings: Mapping[str, Any] = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    if not bindings:
        bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    wanted = f"{CONTAINER_PORT}/tcp"
    ordered = [wanted, *(k for k in bindings if k != wanted)]
    for key in ordered:
        for binding in bindings.get(key) or ():
            port = str(binding.get("HostPort") or "")
            if port.isdigit():
                return int(port)
    return None


def _info_from_attrs(attrs: Mapping[str, Any], key: str | None = None) -> ContainerInfo | None:
    """A model container's info from ``docker inspect`` data; None when it is not a model's."""
    name = str(attrs.get("Name") or "").lstrip("/")
    labels: Mapping[str, str] = (attrs.get("Config") or {}).get("Labels") or {}
    model_key = _model_key(name, labels) or key
    if model_key is None:
        return None
    state = attrs.get("State") or {}
    status = _status(attrs)
    exit_code = None
    if status in (ContainerStatus.EXITED, ContainerStatus.DEAD):
        exit_code = int(state.get("ExitCode") or 0)
    return ContainerInfo(
        id=str(attrs.get("Id") or ""),
        name=name,
        model_key=model_key,
        status=status,
        exit_code=exit_code,
        oom_killed=bool(state.get("OOMKilled")),
        spec_hash=labels.get(LABEL_SPEC_HASH),
        host_port=_host_port(attrs),
        managed=labels.get(LABEL_MANAGED) == "true",
    )


def _fallback_info(attrs: Mapping[str, Any], key: str | None) -> ContainerInfo:
    """Info for a container that is not recognisably a model's: keyed by its name."""
    name = str(attrs.get("Name") or "").lstrip("/")
    info = _info_from_attrs(attrs, key or name)
    assert info is not None
    return info


def _with_pids(info: ContainerInfo, pids: tuple[int, ...]) -> ContainerInfo:
    return ContainerInfo(
        id=info.id,
        name=info.name,
        model_key=info.model_key,
        status=info.status,
        exit_code=info.exit_code,
        oom_killed=info.oom_killed,
        spec_hash=info.spec_hash,
        host_port=info.host_port,
        managed=info.managed,
        pids=pids,
    )


def _runtime_event(raw: Any) -> RuntimeEvent | None:
    """A :class:`RuntimeEvent` for a docker event of one of our containers, else None."""
    if not isinstance(raw, Mapping) or raw.get("Type", "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "")
    kind = _EVENT_KINDS.get(action)
    if kind is None:
        return None
    actor = raw.get("Actor") or {}
    attributes: Mapping[str, str] = actor.get("Attributes") or {}
    name = str(attributes.get("name") or "")
    key = attributes.get(LABEL_MODEL) or key_from_container_name(name)
    if key is None:
        return None
    exit_code = None
    if kind == RuntimeEventKind.DIE:
        code = str(attributes.get("exitCode") or "")
        exit_code = int(code) if code.lstrip("-").isdigit() else None
    container_id = str(actor.get("ID") or raw.get("id") or "")
    return RuntimeEvent(kind=kind, container_id=container_id, model_key=key, exit_code=exit_code)
