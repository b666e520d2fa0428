"""The multi-engine runtime over in-memory engines: routing by host, the container-to-host map,
port forwards for remote models, partial listings, and merged events that outlive one host.

Each engine is a ``FakeRuntime`` tagged with its host (``FlakyEngine`` adds an engine that goes
away and comes back); port forwards are recorded by ``FakePorts``; time is a ``VirtualClock``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
import pytest_asyncio

from ryx_desktop.adapters.multi_engine import RETRY_MAX, MultiEngineRuntime
from ryx_desktop.config import Config
from ryx_desktop.core.errors import (
    ConfigError,
    DockerUnavailableError,
    HostUnreachableError,
)
from ryx_desktop.core.ports import (
    ContainerRuntime,
    ContainerStatus,
    RuntimeEvent,
    RuntimeEventKind,
)
from ryx_desktop.core.spec import ContainerSpec, build_spec
from tests.support.fakes import FakeRuntime, VirtualClock, settle
from tests.support.host_fakes import FakePorts, FlakyEngine

pytestmark = pytest.mark.asyncio

REMOTE = "gpu2"
CONFIG = Config.model_validate(
    {
        "hosts": {REMOTE: {"url": "ssh://me@box2"}},
        "models": {
            "a": {"model": "/models/a", "port": 8001, "devices": "none"},
            "b": {"model": "/models/b", "port": 8002, "devices": "none", "host": REMOTE},
        },
    }
)


@dataclass
class Rig:
    runtime: MultiEngineRuntime[tuple[str, int]]
    local: FlakyEngine
    remote: FlakyEngine
    ports: FakePorts
    clock: VirtualClock
    heard: list[tuple[str, str | None]]

    def heard_of(self, host: str) -> list[str | None]:
        return [problem for name, problem in self.heard if name == host]


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    local, remote = FlakyEngine("local"), FlakyEngine(REMOTE)
    ports, clock = FakePorts(), VirtualClock()
    heard: list[tuple[str, str | None]] = []
    runtime = MultiEngineRuntime(
        {"local": local, REMOTE: remote},
        ports.open_port,
        ports.close_port,
        on_host=lambda host, problem: heard.append((host, problem)),
        clock=clock,
    )
    yield Rig(runtime, local, remote, ports, clock, heard)
    await runtime.close()


def spec(key: str) -> ContainerSpec:
    return build_spec(key, CONFIG)


async def next_event(events: AsyncIterator[RuntimeEvent]) -> RuntimeEvent:
    return await asyncio.wait_for(anext(events), 1.0)


async def test_the_composite_is_a_container_runtime() -> None:
    def accepts(runtime: ContainerRuntime) -> ContainerRuntime:
        return runtime

    ports = FakePorts()
    runtime = MultiEngineRuntime({"local": FakeRuntime()}, ports.open_port, ports.close_port)
    assert accepts(runtime) is runtime
    assert runtime.hosts == ("local",)


async def test_build_spec_takes_the_models_host() -> None:
    assert spec("a").host == "local"
    assert spec("b").host == REMOTE
    # Where it runs is not what it runs: the hash (and so adoption) ignores the host.
    assert replace(spec("b"), host="local").spec_hash == spec("b").spec_hash


# ---- routing ---------------------------------------------------------------------------------


async def test_start_runs_on_the_specs_host_and_forwards_a_remote_port(rig: Rig) -> None:
    b = await rig.runtime.start(spec("b"))
    assert b.host == REMOTE and b.id in rig.remote.containers
    assert ("start", "b") not in rig.local.calls
    assert rig.ports.live == [(REMOTE, 8002)]
    assert rig.runtime.forwarded_ports() == {8002: REMOTE}

    a = await rig.runtime.start(spec("a"))
    assert a.host == "local" and a.id in rig.local.containers
    assert rig.ports.opened == [(REMOTE, 8002)]  # the local model needs no forward
    assert rig.runtime.host_of(a.id) == "local" and rig.runtime.host_of(b.id) == REMOTE

    inspected = await rig.runtime.inspect(b.id)
    assert inspected is not None and inspected.host == REMOTE
    assert await rig.runtime.logs(b.id, 2) == list(FakeRuntime.LOAD_LINES[-2:])
    assert [line async for line in rig.runtime.follow_logs(b.id)] == list(FakeRuntime.LOAD_LINES)

    await rig.runtime.stop(b.id, timeout=5)
    assert b.id not in rig.remote.containers
    assert rig.ports.live == [] and rig.ports.closed == [(REMOTE, 8002)]
    assert rig.runtime.host_of(b.id) is None
    await rig.runtime.stop(a.id, timeout=5)
    assert rig.local.containers == {}
    assert rig.ports.closed == [(REMOTE, 8002)]


async def test_remove_of_a_remote_container_ends_its_forward(rig: Rig) -> None:
    b = await rig.runtime.start(spec("b"))
    rig.remote.exit(b.id, 1)
    await rig.runtime.remove(b.id)
    assert rig.remote.containers == {}
    assert rig.ports.live == []


async def test_an_unknown_host_is_a_config_error_with_a_hint(rig: Rig) -> None:
    with pytest.raises(ConfigError) as caught:
        await rig.runtime.start(replace(spec("b"), host="gpu9"))
    assert "'gpu9'" in caught.value.message and "gpu2, local" in caught.value.message
    assert "hosts:" in caught.value.hint
    with pytest.raises(ConfigError):
        await rig.runtime.ensure_image("img", host="gpu9")
    assert rig.local.containers == {} and rig.remote.containers == {}


async def test_ensure_image_pulls_on_the_named_host(rig: Rig) -> None:
    await rig.runtime.ensure_image("vllm/vllm-openai:v1", host=REMOTE)
    assert rig.remote.calls == [("ensure_image", "vllm/vllm-openai:v1")]
    assert rig.local.calls == []
    await rig.runtime.ensure_image("vllm/vllm-openai:v2")
    assert rig.local.calls == [("ensure_image", "vllm/vllm-openai:v2")]


async def test_a_port_that_cannot_be_forwarded_undoes_the_start(rig: Rig) -> None:
    rig.ports.refuse.add(REMOTE)
    with pytest.raises(HostUnreachableError) as caught:
        await rig.runtime.start(spec("b"))
    message = caught.value.message
    assert "host gpu2" in message and "port 8002" in message and "refused" in message
    assert caught.value.host == REMOTE
    assert rig.remote.containers == {}  # stopped (and removed) again
    assert ("stop", "b") in rig.remote.calls
    assert rig.runtime.forwarded_ports() == {}

    rig.ports.refuse.clear()  # a failed forward is tried anew by the next start
    await rig.runtime.start(spec("b"))
    assert rig.ports.live == [(REMOTE, 8002)]


async def test_a_start_takes_over_a_port_forwarded_from_another_host(rig: Rig) -> None:
    # The model moved: its old container on gpu3 still holds the forward of its port.
    gpu3 = FakeRuntime("gpu3")
    old = gpu3.add_running("b", 8002, "b", spec_hash=None)
    ports = FakePorts()
    runtime = MultiEngineRuntime(
        {"local": FakeRuntime(), REMOTE: rig.remote, "gpu3": gpu3},
        ports.open_port,
        ports.close_port,
    )
    try:
        await runtime.list_models()
        assert ports.live == [("gpu3", 8002)]
        await runtime.start(spec("b"))
        assert ports.live == [(REMOTE, 8002)]
        # A listing that finds the old one still running does not take the port back.
        await runtime.list_models()
        assert ports.live == [(REMOTE, 8002)]
        await runtime.stop(old, timeout=1)
        assert ports.live == [(REMOTE, 8002)]
    finally:
        await runtime.close()
    assert ports.live == []


# ---- listing ---------------------------------------------------------------------------------


async def test_list_models_tags_every_container_with_its_host(rig: Rig) -> None:
    a = rig.local.add_running("a", 8001, "a", spec_hash=None)
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)
    found = {info.id: info.host for info in await rig.runtime.list_models()}
    assert found == {a: "local", b: REMOTE}
    assert rig.runtime.host_of(b) == REMOTE
    # The adopted remote model is reached here: its port is forwarded.
    assert rig.ports.live == [(REMOTE, 8002)]
    assert rig.heard == [("local", None), (REMOTE, None)]


async def test_a_host_that_fails_is_left_out_and_reported(rig: Rig) -> None:
    a = rig.local.add_running("a", 8001, "a", spec_hash=None)
    rig.remote.add_running("b", 8002, "b", spec_hash=None)
    rig.remote.down = "no Docker engine answers at ssh://me@box2"
    assert [info.id for info in await rig.runtime.list_models()] == [a]
    assert rig.heard == [("local", None), (REMOTE, "no Docker engine answers at ssh://me@box2")]
    assert rig.runtime.host_problems == {
        "local": None,
        REMOTE: "no Docker engine answers at ssh://me@box2",
    }
    listing = await rig.runtime.list_hosts()
    assert listing.answered == ("local",)
    assert listing.problems == {REMOTE: "no Docker engine answers at ssh://me@box2"}
    assert [info.id for info in listing.containers] == [a]
    with pytest.raises(DockerUnavailableError):
        await rig.runtime.list_host(REMOTE)

    rig.remote.down = None
    assert len(await rig.runtime.list_models()) == 2
    assert rig.heard_of(REMOTE) == ["no Docker engine answers at ssh://me@box2", None]


async def test_the_list_fails_only_when_every_host_fails_with_the_local_error(rig: Rig) -> None:
    rig.remote.down = "remote down"
    rig.local.down = "local down"
    with pytest.raises(DockerUnavailableError, match="local down"):
        await rig.runtime.list_models()
    listing = await rig.runtime.list_hosts()  # the listing itself never raises
    assert listing.answered == () and set(listing.problems) == {"local", REMOTE}

    rig.local.down = None
    assert await rig.runtime.list_models() == []

    ports = FakePorts()
    only_remote = MultiEngineRuntime({REMOTE: rig.remote}, ports.open_port, ports.close_port)
    try:
        with pytest.raises(DockerUnavailableError, match="remote down"):
            await only_remote.list_models()  # no local engine: the first host's error
    finally:
        await only_remote.close()


async def test_a_container_no_longer_listed_loses_its_forward(rig: Rig) -> None:
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)
    await rig.runtime.list_models()
    assert rig.ports.live == [(REMOTE, 8002)]
    del rig.remote.containers[b]  # removed while we did not look
    await rig.runtime.list_models()
    assert rig.ports.live == []
    assert rig.runtime.host_of(b) is None


async def test_an_exited_remote_container_gets_no_forward(rig: Rig) -> None:
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)
    rig.remote.exit(b, 1)
    await rig.runtime.list_models()
    assert rig.ports.opened == []
    assert rig.runtime.host_of(b) == REMOTE  # still known: its logs and removal are routed


async def test_an_unknown_id_is_looked_for_on_every_host(rig: Rig) -> None:
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)  # never listed
    info = await rig.runtime.inspect(b)
    assert info is not None and info.host == REMOTE and info.status is ContainerStatus.RUNNING
    assert rig.runtime.host_of(b) == REMOTE

    other = rig.remote.add_running("c", 8003, "c", spec_hash=None)
    assert await rig.runtime.logs(other, 1) == []  # found on gpu2 (it has no lines)
    assert rig.runtime.host_of(other) == REMOTE
    await rig.runtime.stop(other, timeout=1)
    assert other not in rig.remote.containers

    assert await rig.runtime.inspect("nowhere") is None
    assert await rig.runtime.logs("nowhere", 5) == []
    assert [line async for line in rig.runtime.follow_logs("nowhere")] == []
    await rig.runtime.stop("nowhere", timeout=1)  # missing is fine
    await rig.runtime.remove("nowhere")

    # Not found anywhere while a host does not answer: that host's error, not "gone".
    rig.remote.down = "remote down"
    with pytest.raises(DockerUnavailableError, match="remote down"):
        await rig.runtime.inspect("nowhere")


# ---- events ----------------------------------------------------------------------------------


async def test_events_of_every_host_arrive_tagged_with_their_host(rig: Rig) -> None:
    events = rig.runtime.events()
    await settle()
    assert set(rig.heard) == {("local", None), (REMOTE, None)} and len(rig.heard) == 2
    a = await rig.runtime.start(spec("a"))
    b = await rig.runtime.start(spec("b"))
    rig.remote.exit(b.id, 1)
    rig.local.exit(a.id, 0)
    got = [await next_event(events), await next_event(events)]
    assert {(e.container_id, e.host, e.kind) for e in got} == {
        (b.id, REMOTE, RuntimeEventKind.DIE),
        (a.id, "local", RuntimeEventKind.DIE),
    }
    await _aclose(events)


async def test_one_host_going_away_leaves_the_others_events_flowing_and_is_retried(
    rig: Rig,
) -> None:
    events = rig.runtime.events()
    await settle()
    a = await rig.runtime.start(spec("a"))
    b = await rig.runtime.start(spec("b"))

    rig.remote.crash("no Docker engine answers at ssh://me@box2")
    await settle()
    assert rig.heard_of(REMOTE) == [None, "the engine of gpu2 closed its event stream"]
    rig.local.exit(a.id, 137)
    event = await next_event(events)
    assert (event.container_id, event.host) == (a.id, "local")

    # Retried after 1, 2, 4 ... s (doubling up to 30 s): each try lists the host first.
    tries = [rig.remote.lists]
    for step in (1, 2, 4, 8, 16, 30, 30):
        await rig.clock.advance(step - 0.5)
        assert rig.remote.lists == tries[-1], f"tried again before {step} s"
        await rig.clock.advance(0.5)
        tries.append(rig.remote.lists)
        assert tries[-1] == tries[-2] + 1, f"not tried after {step} s"
    assert rig.heard_of(REMOTE) == [
        None,
        "the engine of gpu2 closed its event stream",
        "no Docker engine answers at ssh://me@box2",  # what the retries said, told once
    ]
    assert RETRY_MAX == 30

    rig.remote.revive()
    await rig.clock.advance(30)
    assert rig.heard_of(REMOTE)[-1] is None
    # Back with its events: a container of gpu2 dying is heard again.
    assert rig.remote.containers[b.id].info.status is ContainerStatus.RUNNING
    rig.remote.exit(b.id, 1)
    event = await next_event(events)
    assert (event.container_id, event.host, event.kind) == (b.id, REMOTE, RuntimeEventKind.DIE)
    assert rig.heard_of("local") == [None]
    await _aclose(events)


async def test_a_listing_that_finds_a_followed_host_away_reconnects_it(rig: Rig) -> None:
    events = rig.runtime.events()
    await settle()
    assert rig.heard_of(REMOTE) == [None]
    rig.remote.down = "hung"  # its event stream still looks open
    await rig.runtime.list_models()
    await settle()
    assert rig.heard_of(REMOTE) == [None, "hung"]

    rig.remote.down = None
    # A listing that finds it answering does not call it back (its events do not flow yet),
    # but cuts the wait short: the follower reconnects at once.
    await rig.runtime.list_models()
    assert rig.heard_of(REMOTE) == [None, "hung"]
    await settle()
    assert rig.heard_of(REMOTE) == [None, "hung", None]
    b = await rig.runtime.start(spec("b"))
    rig.remote.exit(b.id, 1)
    event = await next_event(events)
    assert (event.container_id, event.host) == (b.id, REMOTE)
    await _aclose(events)


async def test_a_host_away_at_the_start_is_followed_once_it_answers(rig: Rig) -> None:
    rig.remote.down = "not yet"
    events = rig.runtime.events()
    await settle()
    assert rig.heard_of(REMOTE) == ["not yet"]
    assert rig.heard_of("local") == [None]
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)  # ran before it answered
    rig.remote.revive()
    await rig.clock.advance(1)
    assert rig.heard_of(REMOTE) == ["not yet", None]
    # Read on reconnect, before the host counted as back: known, and its port forwarded.
    assert rig.runtime.host_of(b) == REMOTE
    assert rig.ports.live == [(REMOTE, 8002)]
    await _aclose(events)


async def test_a_start_event_of_a_remote_container_forwards_its_port_first(rig: Rig) -> None:
    events = rig.runtime.events()
    await settle()
    b = rig.remote.add_running("b", 8002, "b", spec_hash=None)  # started by someone else
    rig.remote.emit(RuntimeEvent(RuntimeEventKind.START, b, "b"))
    event = await next_event(events)
    assert (event.kind, event.host) == (RuntimeEventKind.START, REMOTE)
    assert rig.ports.live == [(REMOTE, 8002)]  # before the event was handed on
    assert rig.runtime.host_of(b) == REMOTE

    del rig.remote.containers[b]
    rig.remote.emit(RuntimeEvent(RuntimeEventKind.DESTROY, b, "b"))
    event = await next_event(events)
    assert event.kind is RuntimeEventKind.DESTROY
    assert rig.ports.live == []
    assert rig.runtime.host_of(b) is None
    await _aclose(events)


async def test_remove_returns_once_the_forward_is_closed_even_if_its_destroy_event_came_first(
    rig: Rig,
) -> None:
    events = rig.runtime.events()
    await settle()
    b = await rig.runtime.start(spec("b"))
    rig.ports.close_gate = asyncio.Event()  # ssh takes its time to exit
    # Docker's destroy event outruns the remove call that caused it: the follower lets go first.
    rig.remote.emit(RuntimeEvent(RuntimeEventKind.DESTROY, b.id, "b"))
    await settle()  # the follower is closing the forward (the event goes on once it is)
    remove = asyncio.create_task(rig.runtime.remove(b.id))
    await settle()
    assert not remove.done()  # the forward is still being closed
    rig.ports.close_gate.set()
    await asyncio.wait_for(remove, 1.0)
    assert rig.ports.closed == [(REMOTE, 8002)] and rig.ports.live == []
    assert (await next_event(events)).kind is RuntimeEventKind.DESTROY
    await _aclose(events)


async def test_a_start_and_its_own_start_event_share_one_forward(rig: Rig) -> None:
    events = rig.runtime.events()
    await settle()
    b = await rig.runtime.start(spec("b"))
    rig.remote.emit(RuntimeEvent(RuntimeEventKind.START, b.id, "b"))
    await next_event(events)
    assert rig.ports.opened == [(REMOTE, 8002)]
    await rig.runtime.stop(b.id, timeout=1)
    assert rig.ports.live == []
    await _aclose(events)


async def test_close_ends_the_streams_the_forwards_and_the_engines(rig: Rig) -> None:
    closed: list[str] = []

    class Closing(FakeRuntime):
        async def close(self) -> None:
            closed.append(self.host)

    ports = FakePorts()
    runtime = MultiEngineRuntime(
        {"local": Closing(), REMOTE: Closing(REMOTE)}, ports.open_port, ports.close_port
    )
    events = runtime.events()
    await runtime.start(spec("b"))
    waiting = asyncio.ensure_future(anext(events))
    await settle()
    await runtime.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1.0)
    assert sorted(closed) == ["gpu2", "local"]
    assert ports.live == []
    await runtime.close()  # twice is fine
    assert [e async for e in runtime.events()] == []


async def test_a_host_listener_that_raises_does_not_break_the_runtime() -> None:
    def rude(host: str, problem: str | None) -> None:
        raise RuntimeError("listener bug")

    ports = FakePorts()
    runtime = MultiEngineRuntime(
        {"local": FakeRuntime()}, ports.open_port, ports.close_port, on_host=rude
    )
    try:
        assert await runtime.list_models() == []
        assert runtime.host_problems == {"local": None}
    finally:
        await runtime.close()


async def _aclose(events: AsyncIterator[RuntimeEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    assert aclose is not None
    await aclose()
