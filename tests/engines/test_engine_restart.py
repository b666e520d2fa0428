"""The Docker engine going away and coming back under a running supervisor (issue 11, item 3).

Found by an adversarial run: the engine restarted, then ``docker stop ryx-vllm-<key>``, and
``serve`` (and the GUI) still showed the model ready. Here a real dockerd of the test's own
(``ExtraDockerd``) is stopped and started under a ``Supervisor`` on the real ``DockerRuntime``
with the fake vLLM: the supervisor must say the engine is unreachable while it is (the window
and the tray say "Docker engine unreachable" / "Waiting for the Docker engine"), reconnect its
event stream with backoff, read every container again on reconnect, and from then on follow
``docker stop`` again.

Two engine set-ups, as users have them: by default dockerd stops every container when it shuts
down (so after the restart the model is stopped, not ready); with ``--live-restore`` the
container outlives the engine and is followed again once the engine is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from PySide6.QtWidgets import QApplication, QLabel

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.spec import container_name
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.event_loop import QtAsyncioLoop
from ryx_desktop.ui.tray import TrayIcon
from ryx_desktop.ui.window import ManagerWindow
from tests.engines.conftest import MakeEngine, fake_image_on
from tests.support.extra_dockerd import ExtraDockerd
from tests.support.waiting import wait_for

KEY = "m"
NAME = container_name(KEY)
#: The supervisor retries the engine after 1, 2, 4, 8 ... s: an engine back within a few
#: seconds is seen again within about ten.
RECONNECT_DEADLINE = 40.0


@dataclass
class Rig:
    """A watching supervisor on the real runtime, and what it said about the engine."""

    supervisor: Supervisor
    runtime: DockerRuntime
    heard: list[str | None] = field(default_factory=list)

    def state(self) -> InstanceState:
        return self.supervisor.get(KEY).state


@contextlib.asynccontextmanager
async def supervised(config: Config) -> AsyncIterator[Rig]:
    runtime = DockerRuntime(config.docker.host)
    health = HttpHealthProbe()
    supervisor = Supervisor(
        config, runtime, health, MonotonicClock(), probe_interval=0.1, unhealthy_after=3
    )
    rig = Rig(supervisor, runtime)
    supervisor.subscribe_engine(rig.heard.append)
    await supervisor.open()
    try:
        yield rig
    finally:
        await supervisor.close()
        await health.close()
        await runtime.close()


def docker_stop(engine: ExtraDockerd, name: str) -> None:
    """``docker stop NAME`` on ``engine``, as a user would."""
    with contextlib.closing(engine.client()) as client:
        client.api.stop(name, timeout=5)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.asyncio
async def test_after_an_engine_restart_the_model_shows_stopped_and_docker_stop_is_followed(
    make_engine: MakeEngine, engine_config: Callable[..., Config]
) -> None:
    engine = make_engine("a")  # dockerd's default: it stops every container on shutdown
    image = await asyncio.to_thread(fake_image_on, engine)
    async with supervised(engine_config(engine, image)) as rig:
        sup = rig.supervisor
        inst = await sup.ensure_ready(KEY)
        assert inst.state is InstanceState.READY
        assert sup.engine_problem is None

        await asyncio.to_thread(engine.stop)
        await wait_for(lambda: sup.engine_problem is not None, "the engine reported unreachable")
        problem = sup.engine_problem
        assert problem is not None and engine.docker_host in problem, problem
        # Its container was stopped with the engine: never shown ready while the engine is away.
        await wait_for(lambda: rig.state() is not InstanceState.READY, "the model not ready", 15)
        assert rig.state() in (InstanceState.STOPPED, InstanceState.UNHEALTHY), rig.state()

        await asyncio.to_thread(engine.start)
        await wait_for(
            lambda: sup.engine_problem is None, "the engine answering again", RECONNECT_DEADLINE
        )
        # Every container was read again before the engine counted as back.
        inst = sup.get(KEY)
        assert inst.state is InstanceState.STOPPED, inst
        assert inst.container_id is None
        assert rig.heard[0] is not None and rig.heard[-1] is None, rig.heard
        assert all(problem is not None for problem in rig.heard[:-1]), rig.heard

        # The event stream is back: a model started now and stopped from outside shows stopped.
        inst = await sup.ensure_ready(KEY)
        assert inst.state is InstanceState.READY
        await asyncio.to_thread(docker_stop, engine, NAME)
        await wait_for(lambda: rig.state() is InstanceState.STOPPED, "docker stop followed", 15)
        assert sup.get(KEY).note == "stopped outside ryx-desktop"
        assert sup.engine_problem is None


@pytest.mark.asyncio
async def test_a_model_stopped_while_a_crashed_engine_was_away_is_read_again_as_stopped(
    make_engine: MakeEngine, engine_config: Callable[..., Config]
) -> None:
    # dockerd killed (a crash, the OOM killer): its containers live on, unseen. Started again
    # without live-restore it stops them before it answers, so no event tells the supervisor:
    # only reading every container on reconnect does.
    engine = make_engine("c")
    image = await asyncio.to_thread(fake_image_on, engine)
    async with supervised(engine_config(engine, image)) as rig:
        sup = rig.supervisor
        inst = await sup.ensure_ready(KEY)
        assert inst.container_id is not None
        info = await rig.runtime.inspect(inst.container_id)
        assert info is not None and info.pids, info

        await asyncio.to_thread(engine.kill)
        await wait_for(lambda: sup.engine_problem is not None, "the engine reported unreachable")
        assert all(alive(pid) for pid in info.pids), "the container outlived the engine"
        # Its published port went with the engine (Docker's userland proxy dies with dockerd).
        await wait_for(lambda: rig.state() is InstanceState.UNHEALTHY, "the model unhealthy", 15)
        # A retry (1 s on) finds no engine, and says so (it leaks no socket doing so).
        await wait_for(
            lambda: (sup.engine_problem or "").startswith("no Docker engine answers at "),
            "a retry finding the engine away",
        )
        assert engine.docker_host in (sup.engine_problem or "")

        await asyncio.to_thread(engine.start)
        await wait_for(
            lambda: sup.engine_problem is None, "the engine answering again", RECONNECT_DEADLINE
        )
        inst = sup.get(KEY)
        assert inst.state is InstanceState.STOPPED, inst
        assert inst.note == "stopped while the Docker engine was unreachable"
        assert inst.container_id is None
        assert not any(alive(pid) for pid in info.pids)


@pytest.mark.qt
def test_a_model_that_outlives_the_engine_is_followed_again_and_the_gui_says_so(
    qapp: QApplication, make_engine: MakeEngine, engine_config: Callable[..., Config]
) -> None:
    # The issue's own sequence: the engine restarts (its containers live on), then
    # `docker stop ryx-vllm-<key>`.
    engine = make_engine("b", live_restore=True)
    image = fake_image_on(engine)
    config = engine_config(engine, image)

    async def scenario() -> None:
        async with supervised(config) as rig:
            sup = rig.supervisor
            with shown(EngineBridge(sup, rig.runtime)) as (bridge, window, tray):
                signalled: list[str | None] = []
                bridge.engineChanged.connect(signalled.append)
                label = window.findChild(QLabel, "engine-status")
                assert label is not None and label.isHidden()

                inst = await sup.ensure_ready(KEY)
                assert inst.state is InstanceState.READY and inst.container_id is not None
                info = await rig.runtime.inspect(inst.container_id)
                assert info is not None and info.pids, info

                await asyncio.to_thread(engine.stop)
                await wait_for(lambda: sup.engine_problem is not None, "the engine unreachable")
                assert all(alive(pid) for pid in info.pids), "live-restore kept it running"
                assert signalled and signalled[-1] == sup.engine_problem
                assert label.text() == "Docker engine unreachable" and not label.isHidden()
                assert label.toolTip() == sup.engine_problem
                assert window.notice_text().startswith("Waiting for the Docker engine: ")
                assert "Waiting for the Docker engine" in tray.tray.toolTip().splitlines()

                await asyncio.to_thread(engine.start)
                await wait_for(
                    lambda: sup.engine_problem is None, "the engine back", RECONNECT_DEADLINE
                )
                assert signalled[-1] is None
                assert label.isHidden()
                assert window.notice_text() == ""
                assert "Waiting for the Docker engine" not in tray.tray.toolTip()
                # Still the same container, read again, and probed ready again.
                await wait_for(lambda: rig.state() is InstanceState.READY, "ready again", 15)
                assert sup.get(KEY).container_id == inst.container_id

                await asyncio.to_thread(docker_stop, engine, NAME)
                await wait_for(
                    lambda: rig.state() is InstanceState.STOPPED, "docker stop followed", 15
                )
                assert sup.get(KEY).note == "stopped outside ryx-desktop"

    loop = QtAsyncioLoop(qapp)
    with loop:
        loop.run_until_complete(scenario())


@contextlib.contextmanager
def shown(bridge: EngineBridge) -> Iterator[tuple[EngineBridge, ManagerWindow, TrayIcon]]:
    """The manager window (never shown: closing a shown one could quit Qt's loop) and the tray
    icon over ``bridge``; all closed after the block."""
    window = ManagerWindow(bridge)
    tray = TrayIcon(bridge)
    try:
        yield bridge, window, tray
    finally:
        tray.deleteLater()
        window.log_view.stop()
        window.deleteLater()
        bridge.close()
