"""Several Docker engines (one per host) as one ``ContainerRuntime``: a composite.

Why a composite: the supervisor already knows how to start, adopt, watch and stop models on one
``ContainerRuntime``; with models on more than one machine it keeps doing exactly that, on this
one. :class:`MultiEngineRuntime` holds one runtime per host (``engines``: host name to runtime,
``local`` being this machine's engine, the others usually ``DockerRuntime``s over SSH) and routes
every call to the right one:

* ``start(spec)`` goes to ``engines[spec.host]`` (an unknown host is a ``ConfigError``);
* ``inspect``, ``stop``, ``remove``, ``logs`` and ``follow_logs`` go where the container is,
  known from a map of container id to host that ``list_models``, ``start`` and the events fill
  (an id not in it is looked for on every host first);
* ``ensure_image(image, host=...)`` pulls on that host;
* ``list_models()`` asks every host at once and tags each ``ContainerInfo`` with its host;
* ``events()`` merges every host's events, each tagged with its host.

Reaching the models: containers publish their port on their own host's ``127.0.0.1`` only, so
no vLLM port is ever open on the network. For a remote host (every host but ``local`` unless
``tunnelled`` says otherwise) the runtime opens a forward of the model's port to the same port
on this machine through the injected ``open_port(host, port)`` (and ends it with
``close_port(handle)``): a remote model is then reached at ``http://127.0.0.1:<port>`` exactly
like a local one, so the supervisor's probes and the proxy need no change (model ports are
unique across hosts in the config). A forward is opened after a remote ``start`` (if it cannot
be, the container is stopped again and the start fails naming the host), and for every running
remote container found by a listing or a ``start`` event (adopted ones too); it is closed when
its container is stopped, removed, destroyed or no longer listed. The real pair is an
:class:`~ryx_desktop.adapters.ssh_tunnel.TunnelSet` over ``SshTunnel(target, port,
local_port=port)``: ``open_port = lambda host, port: tunnels.acquire(targets[host], port)``,
``close_port = tunnels.release`` (``SshTunnel`` reopens a dropped tunnel by itself).

Hosts that do not answer: each host's event stream is followed by a task of its own that, when
the stream ends or fails, reports the host away through ``on_host(host, reason)`` and reconnects
with backoff (1 s doubling to 30 s, on the injected clock). On each (re)connection it subscribes
to the host's events first, then lists the host's containers (so nothing that happens in
between is lost, as the supervisor does), and only then reports ``on_host(host, None)``: a
host reported back has a live event stream, so the supervisor may read it again (per-host
resync) right then. ``on_host`` is called on every change of a host's state, starting with its
first (so a window can light every host). ``list_models()`` leaves a host that fails out (it
reports it through ``on_host`` and makes that host's follower reconnect now) and fails only
when every host fails, with the local engine's error (or the first). :meth:`list_hosts` says
which hosts answered, for a per-host resync.

Decision: the merged event stream never ends because one host's stream did, the local engine's
included; it ends only with ``close()``. Ending it with the local engine would stop the remote
hosts' events for as long as the local engine is away (each new stream would fail at once),
and the supervisor's resync after it would see a partial list and take the local models for
stopped. Instead every host, ``local`` too, is reported through ``on_host``, which the app wires
to ``Supervisor.host_changed``: ``local``'s state is the supervisor's ``engine_problem``, and a
host's problem turns its models ``unreachable`` (``adapters.host_engines`` builds it all).

Nothing here blocks the loop; the engines do their own blocking work off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, TypeVar

from ryx_desktop.adapters._port_forwards import PortForwards
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import ConfigError, DockerError, HostUnreachableError, RyxError
from ryx_desktop.core.ports import (
    Clock,
    ContainerInfo,
    ContainerRuntime,
    ContainerStatus,
    HostListing,
    PullProgress,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.spec import LOCAL_HOST, ContainerSpec

log = logging.getLogger(__name__)

H = TypeVar("H")

#: Called with a host's name and why it does not answer, or None once it answers (again).
HostListener = Callable[[str, str | None], None]

#: Seconds between tries to reach a host's engine again: doubling up to the maximum.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
#: How long one host may take to list its containers before it counts as not answering.
LIST_TIMEOUT = 30.0
#: How long a container gets to stop when its start is undone (its port could not be reached).
UNDO_STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class _Answer:
    host: str
    containers: list[ContainerInfo] | None = None
    error: RyxError | None = None


class _Closed:
    """Ends a subscriber's merged stream."""


_CLOSED = _Closed()


class MultiEngineRuntime(Generic[H]):
    """``ContainerRuntime`` over one runtime per host; see the module docstring.

    ``engines`` maps host names to runtimes (``local``: this machine's engine); the runtime owns
    them and closes them with itself. ``open_port(host, port)`` forwards ``port`` of ``host``'s
    loopback to this machine's and returns a handle that ``close_port`` ends; ``tunnelled``
    names the hosts that need it (default: every host but ``local``). ``on_host(host,
    problem)`` hears each change of a host's reachability. ``clock`` paces the reconnections.
    """

    def __init__(
        self,
        engines: Mapping[str, ContainerRuntime],
        open_port: Callable[[str, int], Awaitable[H]],
        close_port: Callable[[H], Awaitable[None]],
        *,
        on_host: HostListener | None = None,
        tunnelled: Collection[str] | None = None,
        clock: Clock | None = None,
        list_timeout: float = LIST_TIMEOUT,
        undo_stop_timeout: float = UNDO_STOP_TIMEOUT,
    ) -> None:
        if not engines:
            raise ValueError("a multi-engine runtime needs at least one engine")
        self._engines = dict(engines)
        self._forwards: PortForwards[H] = PortForwards(open_port, close_port)
        self._on_host = on_host
        self._tunnelled = frozenset(
            tunnelled if tunnelled is not None else (h for h in engines if h != LOCAL_HOST)
        )
        self._clock: Clock = clock or MonotonicClock()
        self._list_timeout = list_timeout
        self._undo_stop_timeout = undo_stop_timeout
        self._where: dict[str, str] = {}  # container id -> host
        self._learned: dict[str, int] = {}  # container id -> tick it was last seen at
        self._ticks = itertools.count()
        self._problems: dict[str, str | None] = {}  # host -> its problem; None: it answers
        self._subscribers: set[asyncio.Queue[RuntimeEvent | _Closed]] = set()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._nudged: dict[str, str] = {}  # host -> why its reader was cut short
        self._wake: dict[str, asyncio.Event] = {}
        self._closed = False

    # ---- what it knows -----------------------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._engines)

    @property
    def host_problems(self) -> Mapping[str, str | None]:
        """Each host's last known state: why it does not answer, or None when it does (hosts
        not asked yet are absent)."""
        return dict(self._problems)

    def host_of(self, container_id: str) -> str | None:
        """The host a container is known to be on (None: not known)."""
        return self._where.get(container_id)

    def forwarded_ports(self) -> dict[int, str]:
        """Ports forwarded (or being forwarded) from a remote host now: port -> host."""
        return self._forwards.ports()

    # ---- listing -----------------------------------------------------------------------------

    async def list_hosts(self) -> HostListing:
        """Every host's containers at once, tagged with their host; never raises for a host."""
        answers = await asyncio.gather(*(self._list_one(host) for host in self._engines))
        containers: list[ContainerInfo] = []
        problems: dict[str, str] = {}
        for answer in answers:
            if answer.containers is not None:
                containers += answer.containers
            elif answer.error is not None:
                problems[answer.host] = answer.error.message
        answered = tuple(a.host for a in answers if a.containers is not None)
        return HostListing(tuple(containers), answered, problems)

    async def list_models(self) -> list[ContainerInfo]:
        """Containers of every host that answers; the error of the local engine (or the first
        host) when none answers."""
        answers = await asyncio.gather(*(self._list_one(host) for host in self._engines))
        if all(a.containers is None for a in answers):
            errors = {a.host: a.error for a in answers if a.error is not None}
            raise errors.get(LOCAL_HOST) or next(iter(errors.values()))
        return [info for a in answers for info in a.containers or ()]

    async def list_host(self, host: str) -> list[ContainerInfo]:
        """One host's containers, tagged (for a per-host resync); that host's error if it fails."""
        self._engine(host)
        answer = await self._list_one(host)
        if answer.containers is None:
            assert answer.error is not None
            raise answer.error
        return answer.containers

    async def _list_one(self, host: str) -> _Answer:
        mark = next(self._ticks)
        try:
            async with asyncio.timeout(self._list_timeout):
                found = await self._engines[host].list_models()
        except TimeoutError:
            error: RyxError = HostUnreachableError(
                f"the Docker engine of host {host} did not answer within {self._list_timeout:g} s",
                host=host,
            )
        except RyxError as exc:
            error = exc
        except Exception as exc:  # an engine should raise RyxError only; never fail the rest
            log.exception("listing the containers of host %s failed", host)
            error = DockerError(f"listing the containers of host {host} failed: {exc}")
        else:
            infos = [replace(info, host=host) for info in found]
            await self._learn(host, infos, mark)
            if host not in self._followers:
                self._report(host, None)
            elif self._problems.get(host) is not None:
                # A followed host is back only once its events flow again: try that now.
                self._wake[host].set()
            return _Answer(host, infos)
        self._report(host, error.message)
        self._nudge(host, error.message)
        return _Answer(host, error=error)

    async def _learn(self, host: str, infos: list[ContainerInfo], mark: int) -> None:
        """Take ``infos`` as all of ``host``'s containers (as of ``mark``): remember where they
        are, forget the ones gone, forward the ports of the running ones."""
        listed = {info.id for info in infos}
        gone = [
            cid
            for cid, where in self._where.items()
            if where == host and cid not in listed and self._learned.get(cid, -1) < mark
        ]
        for cid in gone:
            await self._forget(cid)
        for info in infos:
            self._remember(info.id, host)
        if host in self._tunnelled:
            await asyncio.gather(
                *(self._adopt_forward(info) for info in infos if _forwardable(info))
            )

    # ---- one container -----------------------------------------------------------------------

    async def ensure_image(
        self,
        image: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        host: str = LOCAL_HOST,
    ) -> None:
        """Pull ``image`` on ``host``'s engine when it is not there."""
        await self._engine(host).ensure_image(image, on_progress)

    async def start(self, spec: ContainerSpec) -> ContainerInfo:
        """Start ``spec`` on its host; for a remote host forward its port here (or undo it)."""
        host = spec.host
        engine = self._engine(host)
        info = replace(await engine.start(spec), host=host)
        self._remember(info.id, host)
        if host not in self._tunnelled:
            return info
        try:
            await self._forwards.ensure(host, spec.host_port, info.id, take_over=True)
        except HostUnreachableError as error:
            await asyncio.shield(self._undo_start(host, info.id))
            raise HostUnreachableError(
                f"model {spec.key} started on host {host}, but its port {spec.host_port} "
                f"cannot be reached from here: {error.message}",
                error.hint or None,
                host=host,
            ) from error
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_start(host, info.id))
            raise
        return info

    async def _undo_start(self, host: str, container_id: str) -> None:
        with contextlib.suppress(RyxError):
            await self._engines[host].stop(container_id, self._undo_stop_timeout)
        await self._forget(container_id)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's state from its host; an unknown id is looked for on every host."""
        host = self._where.get(container_id)
        if host is not None:
            info = await self._engines[host].inspect(container_id)
            if info is None:
                await self._forget(container_id)
                return None
            return replace(info, host=host)
        return await self._search(container_id)

    async def _search(self, container_id: str) -> ContainerInfo | None:
        """Ask every host about an unknown id; the error of a host that failed when none has it."""

        async def ask(host: str) -> ContainerInfo | RyxError | None:
            try:
                return await self._engines[host].inspect(container_id)
            except RyxError as error:
                return error

        answers = await asyncio.gather(*(ask(host) for host in self._engines))
        errors: list[RyxError] = []
        for host, answer in zip(self._engines, answers, strict=True):
            if isinstance(answer, ContainerInfo):
                self._remember(container_id, host)
                return replace(answer, host=host)
            if isinstance(answer, RyxError):
                errors.append(answer)
        if errors:
            raise errors[0]
        return None

    async def _locate(self, container_id: str) -> str | None:
        host = self._where.get(container_id)
        if host is None and await self._search(container_id) is not None:
            host = self._where.get(container_id)
        return host

    async def stop(self, container_id: str, timeout: float) -> None:
        """Stop (and remove) it on its host, and end its port's forward. Missing is fine."""
        host = await self._locate(container_id)
        if host is None:
            return
        await self._engines[host].stop(container_id, timeout)
        await self._forget(container_id)

    async def remove(self, container_id: str) -> None:
        """Remove it on its host, and end its port's forward. Missing is fine."""
        host = await self._locate(container_id)
        if host is None:
            return
        await self._engines[host].remove(container_id)
        await self._forget(container_id)

    async def logs(self, container_id: str, tail: int) -> list[str]:
        host = await self._locate(container_id)
        if host is None:
            return []
        return await self._engines[host].logs(container_id, tail)

    def follow_logs(self, container_id: str, tail: int = 0) -> AsyncIterator[str]:
        return self._follow_logs(container_id, tail)

    async def _follow_logs(self, container_id: str, tail: int) -> AsyncIterator[str]:
        host = await self._locate(container_id)
        if host is None:
            return
        lines = self._engines[host].follow_logs(container_id, tail)
        try:
            async for line in lines:
                yield line
        finally:
            await _aclose(lines)

    # ---- events ------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Every host's events from now on, each tagged with its host, until ``close()``.

        The first call starts one follower per host (see the module docstring); each call
        gets its own stream of every event from the moment of the call.
        """
        queue: asyncio.Queue[RuntimeEvent | _Closed] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(_CLOSED)
        else:
            self._subscribers.add(queue)
            for host in self._engines:
                if host not in self._followers:
                    self._wake[host] = asyncio.Event()
                    self._followers[host] = asyncio.create_task(
                        self._follow(host), name=f"ryx-events-{host}"
                    )
        return self._merged(queue)

    async def _merged(
        self, queue: asyncio.Queue[RuntimeEvent | _Closed]
    ) -> AsyncIterator[RuntimeEvent]:
        try:
            while not isinstance(item := await queue.get(), _Closed):
                yield item
        finally:
            self._subscribers.discard(queue)

    async def _follow(self, host: str) -> None:
        """Follow ``host``'s events for good: reconnect with backoff whenever they stop."""
        engine = self._engines[host]
        delay = RETRY_FIRST
        while True:
            stream = engine.events()  # events from now on: none lost while listing
            answered = asyncio.Event()
            reader = asyncio.create_task(
                self._read(host, engine, stream, answered), name=f"ryx-read-{host}"
            )
            self._readers[host] = reader
            try:
                await asyncio.wait({reader})
            finally:
                self._readers.pop(host, None)
                if not reader.done():
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                await _aclose(stream)
            if answered.is_set():
                delay = RETRY_FIRST  # it answered this time: the next break starts afresh
            self._report(host, self._why_stopped(host, reader))
            await self._pause(host, delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _read(
        self,
        host: str,
        engine: ContainerRuntime,
        stream: AsyncIterator[RuntimeEvent],
        answered: asyncio.Event,
    ) -> None:
        mark = next(self._ticks)
        found = await engine.list_models()  # does it answer? what ran while we did not look?
        await self._learn(host, [replace(info, host=host) for info in found], mark)
        answered.set()
        self._report(host, None)
        async for event in stream:
            await self._on_event(host, engine, replace(event, host=host))
        raise DockerError(f"the Docker engine of host {host} closed its event stream")

    def _why_stopped(self, host: str, reader: asyncio.Task[None]) -> str:
        nudged = self._nudged.pop(host, None)
        if reader.cancelled():
            return nudged or f"the event stream of host {host} was cut"
        error = reader.exception()
        if isinstance(error, RyxError):
            return error.message
        log.error("following the events of host %s failed", host, exc_info=error)
        return f"following the events of host {host} failed: {error}"

    async def _pause(self, host: str, delay: float) -> None:
        """Sleep ``delay`` on the clock, or less when a listing found the host answering."""
        wake = self._wake[host]
        wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, woken):
                task.cancel()
            await asyncio.gather(sleeper, woken, return_exceptions=True)

    def _nudge(self, host: str, reason: str) -> None:
        """A listing found ``host`` not answering: its follower reconnects now (it reports the
        host back only once its events flow again)."""
        reader = self._readers.get(host)
        if reader is not None and not reader.done():
            self._nudged[host] = reason
            reader.cancel()

    async def _on_event(self, host: str, engine: ContainerRuntime, event: RuntimeEvent) -> None:
        cid = event.container_id
        if event.kind is RuntimeEventKind.DESTROY:
            await self._forget(cid)
        else:
            self._remember(cid, host)
        if event.kind is RuntimeEventKind.START and host in self._tunnelled:
            try:
                info = await engine.inspect(cid)
            except RyxError as error:
                log.warning("cannot inspect %s on host %s: %s", cid, host, error)
                info = None
            if info is not None and _forwardable(info):
                await self._adopt_forward(replace(info, host=host))
        for queue in list(self._subscribers):
            queue.put_nowait(event)

    # ---- forwards ----------------------------------------------------------------------------

    async def _adopt_forward(self, info: ContainerInfo) -> None:
        """Forward the port of a running remote container found (never fails the caller)."""
        assert info.host_port is not None
        try:
            await self._forwards.ensure(info.host, info.host_port, info.id, take_over=False)
        except HostUnreachableError as error:
            log.warning("cannot reach %s of host %s: %s", info.name, info.host, error)

    # ---- bookkeeping -------------------------------------------------------------------------

    def _engine(self, host: str) -> ContainerRuntime:
        engine = self._engines.get(host)
        if engine is None:
            known = ", ".join(sorted(self._engines))
            raise ConfigError(
                f"host {host!r} has no Docker engine here (known hosts: {known})",
                f"Add {host!r} under `hosts:` in the config, or set the model's `host:` to one "
                "of the known hosts.",
            )
        return engine

    def _remember(self, cid: str, host: str) -> None:
        self._where[cid] = host
        self._learned[cid] = next(self._ticks)

    async def _forget(self, cid: str) -> None:
        self._where.pop(cid, None)
        self._learned.pop(cid, None)
        await self._forwards.release(cid)

    def _report(self, host: str, problem: str | None) -> None:
        if host in self._problems and self._problems[host] == problem:
            return
        self._problems[host] = problem
        if self._on_host is not None:
            try:
                self._on_host(host, problem)
            except Exception:
                log.exception("a host listener failed")

    # ---- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """End the followers and the merged streams, every forward, and every engine."""
        if self._closed:
            return
        self._closed = True
        followers = list(self._followers.values())
        self._followers.clear()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for queue in list(self._subscribers):
            queue.put_nowait(_CLOSED)
        self._subscribers.clear()
        await self._forwards.close()
        results = await asyncio.gather(
            *(engine.close() for engine in self._engines.values()), return_exceptions=True
        )
        for host, result in zip(self._engines, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing the engine of host %s failed: %s", host, result)


def _forwardable(info: ContainerInfo) -> bool:
    return info.status is ContainerStatus.RUNNING and info.host_port is not None


async def _aclose(stream: AsyncIterator[object]) -> None:
    """Close an async generator (a plain iterator has nothing to close)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RyxError):
            await aclose()


if TYPE_CHECKING:

    def _is_a_runtime(runtime: MultiEngineRuntime[object]) -> ContainerRuntime:
        return runtime  # mypy checks that the composite keeps to the protocol
