"""The Docker engine going away and coming back, against in-memory fakes (issue 11, items 3, 10).

The supervisor must say when the engine is unreachable, keep trying with backoff, and read every
container again once it answers: what was stopped meanwhile is stopped, what runs is adopted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import DockerError, DockerUnavailableError, RyxError
from ryx_desktop.core.ports import ContainerInfo, RuntimeEvent
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock, settle

pytestmark = pytest.mark.asyncio

DOWN = "Docker is not running at unix:///var/run/docker.sock"


class FlakyRuntime(FakeRuntime):
    """The in-memory runtime, with an engine that can go down and come back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lists = 0

    async def list_models(self) -> list[ContainerInfo]:
        self.lists += 1
        if self.down:
            raise DockerUnavailableError(DOWN)
        return await super().list_models()

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        if self.down:
            raise DockerUnavailableError(DOWN)
        async for event in super().events():
            if self.down:
                raise DockerError("the Docker engine closed its event stream")
            yield event

    def crash(self) -> None:
        """The engine goes away: the event stream ends (woken with a harmless event)."""
        self.down = True
        self._events.put_nowait(RuntimeEvent.__new__(RuntimeEvent))


def rig() -> tuple[Supervisor, FlakyRuntime, VirtualClock, list[str | None]]:
    config = Config.model_validate(
        {"models": {"a": {"model": "/models/a", "port": 8001, "devices": "none"}}}
    )
    runtime = FlakyRuntime()
    clock = VirtualClock()
    sup = Supervisor(config, runtime, FakeHealth(runtime), clock, probe_interval=1.0)
    heard: list[str | None] = []
    sup.subscribe_engine(heard.append)
    return sup, runtime, clock, heard


async def test_an_engine_down_at_launch_is_waited_for_and_what_runs_is_adopted() -> None:
    sup, runtime, clock, heard = rig()
    runtime.down = True
    await sup.open()  # no exception: the app starts and says what it waits for
    assert sup.engine_problem == DOWN
    assert heard == [DOWN]
    assert sup.get("a").state is InstanceState.STOPPED

    runtime.down = False
    runtime.add_running("a", 8001, "/models/a", spec_hash=None)
    await clock.advance(1)  # the first retry
    await settle()
    assert sup.engine_problem is None
    assert heard == [DOWN, None]
    await clock.advance(1)
    assert sup.get("a").state is InstanceState.READY
    assert sup.get("a").adopted
    await sup.close()


async def test_retries_back_off() -> None:
    sup, runtime, clock, _heard = rig()
    runtime.down = True
    await sup.open()
    await settle()
    tries = [runtime.lists]
    for _ in range(4):
        await clock.advance(1)
        await settle()
        tries.append(runtime.lists)
    # Tries (each reads the containers) at open and t=0, then t=1, t=3 (t=7 next): 1, 2, 4 s.
    assert tries == [2, 3, 3, 4, 4], tries
    await sup.close()


async def test_a_model_stopped_while_the_engine_was_away_shows_stopped() -> None:
    sup, runtime, clock, heard = rig()
    await sup.open()
    await sup.ensure_ready("a")
    container = runtime.by_key("a")
    assert container is not None

    runtime.crash()
    await settle()
    assert sup.engine_problem == "the Docker engine closed its event stream"
    runtime.containers.clear()  # `docker stop` while ryx-desktop could not see it
    runtime.down = False
    await clock.advance(1)
    await settle()
    assert sup.engine_problem is None
    assert heard[-1] is None
    inst = sup.get("a")
    assert inst.state is InstanceState.STOPPED
    assert inst.note == "stopped while the Docker engine was unreachable"
    await sup.close()


async def test_without_watching_an_unreachable_engine_is_an_error() -> None:
    sup, runtime, _clock, _heard = rig()
    runtime.down = True
    with pytest.raises(DockerUnavailableError):
        await sup.open(watch=False)


async def test_a_failed_start_is_remembered_for_the_cool_down_only() -> None:
    config = Config.model_validate(
        {"models": {"a": {"model": "/models/a", "port": 8001, "devices": "none"}}}
    )
    runtime = FakeRuntime()
    runtime.behaviour["a"] = "crash"
    clock = VirtualClock()
    sup = Supervisor(config, runtime, FakeHealth(runtime), clock)
    await sup.open(watch=False)
    assert sup.recent_failure("a", 30) is None  # never started
    with pytest.raises(RyxError):
        await sup.ensure_ready("a")
    failure = sup.recent_failure("a", 30)
    assert failure is not None
    assert failure == sup.get("a").failure
    await clock.advance(31)
    assert sup.recent_failure("a", 30) is None  # cooled down: a request may start it again
