"""The tray and sleep mode: Sleep and Wake in a sleep-mode model's menu, the sleep colour, errors.

The real supervisor runs over the fake runtime with a recording ``SleepControl``; the tray's
actions spawn the bridge's coroutines, and what reaches the control is what the test checks.
"""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication

from ryx_desktop.core.errors import SleepFailedError
from ryx_desktop.core.states import InstanceState
from ryx_desktop.ui.icons import AMBER, GREEN, GREY, INDIGO
from ryx_desktop.ui.tray import TrayIcon
from tests.gui.fixtures_engine import EngineRig, engine_rig, managed, run_on_qt
from tests.gui.sleep_fixtures import SLEEP_MODELS, RecordingSleep
from tests.support.fakes import settle
from tests.support.waiting import wait_for


def action(tray: TrayIcon, name: str) -> QAction:
    found = tray.action(name)
    assert found is not None, f"the menu has no action {name!r}"
    return found


def centre_colour(tray: TrayIcon) -> str:
    image = tray.tray.icon().pixmap(64, 64).toImage()
    return str(image.pixelColor(32, 32).name())


async def reach(rig: EngineRig, key: str, state: InstanceState) -> None:
    await wait_for(lambda: rig.supervisor.get(key).state is state, f"{key} to be {state}")


def test_sleep_and_wake_from_the_menu_reach_the_supervisor(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        async with engine_rig(SLEEP_MODELS, default_model="s", sleep_control=control) as rig:
            tray = TrayIcon(rig.bridge)
            # Stopped: the sleep entries are there, and neither applies yet.
            assert not action(tray, "sleep:s").isEnabled()
            assert not action(tray, "wake:s").isEnabled()
            # A model without sleep mode has none.
            assert tray.action("sleep:p") is None and tray.action("wake:p") is None

            await rig.bridge.start("s")
            tray.rebuild_menu()
            assert action(tray, "sleep:s").isEnabled()
            assert not action(tray, "wake:s").isEnabled()
            assert centre_colour(tray) == GREEN.name()

            action(tray, "sleep:s").trigger()
            await wait_for(lambda: rig.supervisor.get("s").sleep_level == 1, "s asleep")
            url = rig.supervisor.get("s").url
            assert control.calls == [("sleep", url, 1)]  # level 1 from the tray
            await settle()
            assert centre_colour(tray) == INDIGO.name()
            assert "Sleepy 7B: sleeping (level 1)" in tray.tray.toolTip().splitlines()
            # The user's own sleep is no news.
            assert [n.title for n in tray.notifications] == ["Sleepy 7B is ready"]

            tray.rebuild_menu()
            assert "Sleepy 7B — sleeping (level 1)" in action(tray, "menu:s").text()
            assert not action(tray, "sleep:s").isEnabled()
            assert action(tray, "wake:s").isEnabled()
            assert not action(tray, "start:s").isEnabled()
            assert action(tray, "stop:s").isEnabled()

            # Waking shows as loading, then ready.
            gate = control.hold("wake")
            action(tray, "wake:s").trigger()
            await wait_for(lambda: ("wake", 1) in control.verbs(), "the wake call")
            await settle()
            assert "Sleepy 7B: waking" in tray.tray.toolTip().splitlines()
            assert centre_colour(tray) == AMBER.name()
            tray.rebuild_menu()
            assert "Sleepy 7B — waking" in action(tray, "menu:s").text()
            assert not action(tray, "sleep:s").isEnabled()
            assert not action(tray, "wake:s").isEnabled()
            gate.set()
            await reach(rig, "s", InstanceState.READY)
            assert control.verbs() == [("sleep", 1), ("wake", 1)]
            await settle()
            assert centre_colour(tray) == GREEN.name()

    run_on_qt(qapp, scenario())


def test_a_failed_sleep_is_told_with_its_hint(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        control.errors["sleep"] = SleepFailedError(
            "s did not go to sleep: vLLM answered HTTP 500 to POST /sleep?level=1",
            "Look at `ryx-desktop logs s` for vLLM's side.",
        )
        async with engine_rig(SLEEP_MODELS, default_model="s", sleep_control=control) as rig:
            tray = TrayIcon(rig.bridge)
            failed: list[tuple[str, str, str]] = []
            rig.bridge.commandFailed.connect(lambda *args: failed.append(args))
            await rig.bridge.start("s")
            tray.rebuild_menu()
            action(tray, "sleep:s").trigger()
            await wait_for(lambda: bool(failed), "the failed sleep to be reported")
            [(key, message, hint)] = failed
            assert key == "s" and "HTTP 500" in message
            assert hint == "Look at `ryx-desktop logs s` for vLLM's side."
            note = tray.notifications[-1]
            assert note.title == "Sleepy 7B: not done"
            assert note.message == f"{message}\n{hint}"  # one sentence and the hint, no trace
            assert note.warning
            assert rig.supervisor.get("s").state is InstanceState.READY  # it stayed awake

    run_on_qt(qapp, scenario())


def test_a_model_put_to_sleep_when_idle_is_announced(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        models = {**SLEEP_MODELS, "s": managed(8011, name="Sleepy 7B", sleep_mode=True)}
        async with engine_rig(models, sleep_control=control, idle_ttl=60) as rig:
            tray = TrayIcon(rig.bridge)
            await rig.bridge.start("s")
            await rig.clock.advance(61)
            # The level is the engine's choice (host RAM decides); the tray tells what it chose.
            await wait_for(lambda: rig.supervisor.get("s").sleep_level is not None, "s asleep")
            level = rig.supervisor.get("s").sleep_level
            await settle()
            [ready, note] = tray.notifications
            assert ready.title == "Sleepy 7B is ready"
            assert note.title == "Sleepy 7B is asleep"
            assert note.message.startswith(f"Asleep at level {level}, idle for 60 s")
            assert not note.warning

    run_on_qt(qapp, scenario())


def test_a_failed_sleep_without_a_hint_of_its_own_names_the_models_log(
    qapp: QApplication,
) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        control.errors["sleep"] = SleepFailedError("sleep failed: POST /sleep got no answer")
        async with engine_rig(SLEEP_MODELS, default_model="s", sleep_control=control) as rig:
            tray = TrayIcon(rig.bridge)
            await rig.bridge.start("s")
            await rig.bridge.sleep("s", 1)
            note = tray.notifications[-1]
            assert note.title == "Sleepy 7B: not done"
            hint = note.message.splitlines()[-1]
            assert hint == "It stays awake; `ryx-desktop logs s` shows vLLM's side."
            assert rig.supervisor.get("s").state is InstanceState.READY

    run_on_qt(qapp, scenario())


def test_another_model_waking_shows_in_the_icon_and_tooltip(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        async with engine_rig(SLEEP_MODELS, default_model="p", sleep_control=control) as rig:
            tray = TrayIcon(rig.bridge)
            await rig.bridge.start("s")
            await rig.bridge.sleep("s", 1)
            await settle()
            assert centre_colour(tray) == GREY.name()  # p, the selected one, is stopped
            gate = control.hold("wake")
            waking = rig.bridge.spawn(rig.supervisor.ensure_ready("s"))  # a request wakes it
            await wait_for(lambda: ("wake", 1) in control.verbs(), "the wake call")
            await settle()
            assert "waking Sleepy 7B" in tray.tray.toolTip().splitlines()
            assert centre_colour(tray) == AMBER.name()
            gate.set()
            await waking
            await settle()
            assert not any("Sleepy" in line for line in tray.tray.toolTip().splitlines())

    run_on_qt(qapp, scenario())
