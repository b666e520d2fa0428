"""The bridge relays snapshots to widgets: states at once, request counters a few times a second."""

from __future__ import annotations

import asyncio

from PySide6.QtWidgets import QApplication

from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.ui.bridge import EngineBridge
from tests.gui.fixtures_engine import engine_rig, managed, run_on_qt
from tests.support.waiting import wait_for


def test_request_counters_are_coalesced_and_state_changes_are_not(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig({"a": managed(8001)}) as rig:
            bridge = EngineBridge(rig.supervisor, rig.runtime, usage_interval_ms=60_000)
            seen: list[Instance] = []
            bridge.instanceChanged.connect(seen.append)
            try:
                published: list[Instance] = []
                rig.supervisor.subscribe(published.append)
                for _ in range(20):
                    rig.supervisor.request_started("a")
                    await asyncio.sleep(0)
                    rig.supervisor.request_finished("a")
                    await asyncio.sleep(0)
                await wait_for(
                    lambda: len(published) >= 2 and published[-1].in_flight == 0,
                    "the supervisor's snapshots of the counters",
                )
                # The first snapshot goes up (nothing was shown yet); the counters wait.
                assert len(seen) <= 1
                # A state change goes up at once, the held counters with it.
                start = asyncio.ensure_future(rig.supervisor.ensure_ready("a"))
                await wait_for(
                    lambda: any(i.state is InstanceState.STARTING for i in seen), "starting"
                )
                assert seen[-1].last_used is not None
                rig.container("a").serving = True
                await rig.clock.advance(1)
                await start
                await wait_for(lambda: seen[-1].state is InstanceState.READY, "ready")
            finally:
                bridge.close()

    run_on_qt(qapp, scenario())


def test_held_counters_arrive_on_the_usage_timer(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig({"a": managed(8001)}) as rig:
            bridge = EngineBridge(rig.supervisor, rig.runtime, usage_interval_ms=20)
            seen: list[Instance] = []
            bridge.instanceChanged.connect(seen.append)
            try:
                rig.supervisor.request_started("a")
                await wait_for(lambda: bool(seen) and seen[-1].in_flight == 1, "one in flight")
                rig.supervisor.request_finished("a")
                await wait_for(lambda: seen[-1].in_flight == 0, "none in flight")
            finally:
                bridge.close()

    run_on_qt(qapp, scenario())
