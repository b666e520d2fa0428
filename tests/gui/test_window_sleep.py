"""The manager window and sleep mode: Sleep, Wake and the row menu's level-2 sleep, and errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from PySide6.QtWidgets import QApplication

from ryx_desktop.core.errors import SleepFailedError
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.window import ACTIONS, NO_SLEEP_TIP, ROW_MENU, ManagerWindow, action_states
from tests.gui.fixtures_engine import engine_rig, run_on_qt
from tests.gui.sleep_fixtures import SLEEP_MODELS, RecordingSleep
from tests.support.waiting import wait_for

SLEEP_ACTIONS = ("sleep", "sleep-deep", "wake")


@contextlib.contextmanager
def manager_window(bridge: EngineBridge) -> Iterator[ManagerWindow]:
    """A window that is never shown (closing a shown one could quit Qt's loop)."""
    window = ManagerWindow(bridge)
    try:
        yield window
    finally:
        window.log_view.stop()
        window.deleteLater()


def sleep_enabled(window: ManagerWindow) -> set[str]:
    return {name for name in SLEEP_ACTIONS if window.action(name).isEnabled()}


def test_sleep_actions_follow_the_state_and_sleep_mode() -> None:
    ready = Instance("s", "s", "s", state=InstanceState.READY, container_id="c1")
    asleep = Instance("s", "s", "s", state=InstanceState.SLEEPING, sleep_level=1)
    stopped = Instance("s", "s", "s")

    def on(inst: Instance, can_sleep: bool) -> set[str]:
        states = action_states(inst, None, can_sleep)
        return {name for name in SLEEP_ACTIONS if states[name]}

    assert on(ready, True) == {"sleep", "sleep-deep"}
    assert on(ready, False) == set()  # no sleep mode: it can only stop
    assert on(asleep, True) == {"wake"}
    assert on(stopped, True) == set()
    assert action_states(asleep, None, True)["stop"]  # a sleeping container can be stopped
    assert not action_states(asleep, None, True)["start"]
    assert {"sleep", "wake"} <= set(ACTIONS)
    assert "sleep-deep" in ROW_MENU and "sleep-deep" not in ACTIONS


def test_sleep_and_wake_from_the_toolbar_and_the_row_menu(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        async with engine_rig(SLEEP_MODELS, sleep_control=control) as rig:
            with manager_window(rig.bridge) as window:
                # A model without sleep mode: no sleep, and the tip says how to get it.
                window.select_model("p")
                await rig.bridge.start("p")
                assert sleep_enabled(window) == set()
                assert window.action("sleep").toolTip() == NO_SLEEP_TIP

                window.select_model("s")
                assert sleep_enabled(window) == set()  # stopped
                await rig.bridge.start("s")
                assert sleep_enabled(window) == {"sleep", "sleep-deep"}
                assert window.action("sleep").toolTip() != NO_SLEEP_TIP
                url = rig.bridge.instance("s").url

                window.action("sleep").trigger()
                await wait_for(lambda: rig.bridge.instance("s").sleep_level == 1, "s asleep")
                assert control.calls == [("sleep", url, 1)]
                assert sleep_enabled(window) == {"wake"}
                assert window.action("stop").isEnabled() and not window.action("start").isEnabled()
                details = window.details.toPlainText()
                assert "sleeping (level 1)" in details and "host RAM" in details

                task = window.wake()
                assert task is not None
                woken = await task
                assert woken is not None and woken.state is InstanceState.READY
                assert control.verbs() == [("sleep", 1), ("wake", 1)]
                assert sleep_enabled(window) == {"sleep", "sleep-deep"}

                # The row's right-click menu shares the actions, with the level-2 sleep.
                row = window.model.row_of("s")
                assert row is not None
                window.select_model("p")
                rect = window.table.visualRect(window.model.index(row, 0))
                window.table.customContextMenuRequested.emit(rect.center())
                assert window.current_key() == "s"  # the clicked row became current
                assert window.row_menu.isVisible()
                names = [a.objectName() for a in window.row_menu.actions() if a.objectName()]
                assert names == [name for name in ROW_MENU if name is not None]
                window.row_menu.hide()
                window.action("sleep-deep").trigger()
                await wait_for(lambda: rig.bridge.instance("s").sleep_level == 2, "s asleep")
                assert control.verbs()[-1] == ("sleep", 2)
                assert "sleeping (level 2)" in window.details.toPlainText()

    run_on_qt(qapp, scenario())


def test_a_sleep_error_shows_its_message_and_hint(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        control.errors["sleep"] = SleepFailedError(
            "s did not go to sleep: vLLM answered HTTP 500 to POST /sleep?level=1",
            "Look at `ryx-desktop logs s` for vLLM's side.",
        )
        async with engine_rig(SLEEP_MODELS, sleep_control=control) as rig:
            with manager_window(rig.bridge) as window:
                window.select_model("s")
                await rig.bridge.start("s")
                task = window.sleep()
                assert task is not None
                assert await task is None  # the bridge reported it instead of raising
                assert window.notice_text() == (
                    "s did not go to sleep: vLLM answered HTTP 500 to POST /sleep?level=1\n"
                    "Look at `ryx-desktop logs s` for vLLM's side."
                )
                assert "Traceback" not in window.notice_text()
                assert rig.bridge.instance("s").state is InstanceState.READY
                assert sleep_enabled(window) == {"sleep", "sleep-deep"}  # it can try again

                # Asked of a model without sleep mode, the supervisor's own sentence and hint.
                window.hide_notice()
                await rig.bridge.start("p")
                assert await rig.bridge.sleep("p") is None
                text = window.notice_text()
                assert text.startswith("p does not run with sleep mode")
                assert "sleep_mode: true" in text.splitlines()[-1]

    run_on_qt(qapp, scenario())
