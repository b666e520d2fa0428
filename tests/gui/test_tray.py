"""The tray icon over the real supervisor (fake runtime, virtual clock) through the real bridge.

Each test runs on a qasync loop, as the app does: the tray's actions spawn the bridge's
coroutines, the supervisor's tasks run, and its snapshots come back as Qt signals.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from ryx_desktop.core.gpu import GpuVram, VramReport
from ryx_desktop.core.states import InstanceState
from ryx_desktop.ui.icons import AMBER, GREEN, GREY, RED
from ryx_desktop.ui.tray import GIB, TrayIcon, load_percent
from tests.gui.fixtures_engine import EngineRig, engine_rig, managed, run_on_qt
from tests.support.fakes import settle
from tests.support.waiting import wait_for

MODELS: dict[str, Any] = {
    "a": managed(8001, name="Alpha 7B"),
    "b": managed(8002, name="Beta 3B", devices="none"),  # no GPU: runs beside a
    "r": {"url": "http://127.0.0.1:9", "name": "Remote"},
}


def centre_colour(tray: TrayIcon) -> str:
    """The colour in the middle of the tray icon as drawn at 64 px."""
    image = tray.tray.icon().pixmap(64, 64).toImage()
    return str(image.pixelColor(32, 32).name())


def named(colour: QColor) -> str:
    return str(colour.name())


def action(tray: TrayIcon, name: str) -> QAction:
    found = tray.action(name)
    assert found is not None, f"the menu has no action {name!r}"
    return found


async def reach(rig: EngineRig, key: str, state: InstanceState) -> None:
    await wait_for(lambda: rig.supervisor.get(key).state is state, f"{key} to be {state}")


def open_menu(tray: TrayIcon) -> None:
    """Open the context menu as a click would (its aboutToShow rebuilds it), then close it."""
    tray.menu.popup(QPoint(0, 0))
    assert tray.menu.isVisible()
    tray.menu.hide()


def test_icon_colour_follows_the_selected_models_state(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            rig.runtime.behaviour.update(a="slow", b="crash")
            tray = TrayIcon(rig.bridge)
            assert centre_colour(tray) == named(GREY)  # stopped

            action(tray, "start:a").trigger()
            await reach(rig, "a", InstanceState.STARTING)
            await settle()
            assert centre_colour(tray) == named(AMBER)

            rig.container("a").serving = True
            await rig.clock.advance(1)
            await reach(rig, "a", InstanceState.READY)
            assert centre_colour(tray) == named(GREEN)
            ready_key = tray.tray.icon().cacheKey()

            # Another model's change leaves the icon alone; selecting it shows its state.
            await rig.bridge.start("b")
            assert rig.supervisor.get("b").state is InstanceState.FAILED
            assert centre_colour(tray) == named(GREEN)
            rig.bridge.select("b")
            assert centre_colour(tray) == named(RED)

            rig.bridge.select("a")
            assert centre_colour(tray) == named(GREEN)
            assert tray.tray.icon().cacheKey() == ready_key  # drawn once, reused

            await rig.bridge.stop("a")
            assert centre_colour(tray) == named(GREY)

    run_on_qt(qapp, scenario())


def test_tooltip_names_the_model_state_load_vram_and_proxy(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            rig.runtime.behaviour["a"] = "slow"
            tray = TrayIcon(rig.bridge)
            lines = tray.tray.toolTip().splitlines()
            assert lines == ["ryx-desktop", "Alpha 7B: stopped", "Proxy http://127.0.0.1:8420/v1"]

            rig.vram.push(
                VramReport(gpus=(GpuVram(0, "RTX 4090", total_bytes=24 * GIB, used_bytes=6 * GIB),))
            )
            assert "VRAM 6.0 / 24.0 GiB" in tray.tray.toolTip().splitlines()

            rig.bridge.spawn(rig.bridge.start("a"))

            def loading() -> bool:
                progress = rig.supervisor.get("a").progress
                return progress is not None and progress.percent is not None

            await wait_for(loading, "a to report its load progress")
            await settle()
            inst = rig.supervisor.get("a")
            assert inst.progress is not None and inst.progress.percent is not None
            assert f"Alpha 7B: starting {round(inst.progress.percent)} %" in tray.tray.toolTip()

            rig.container("a").serving = True
            await rig.clock.advance(1)
            await reach(rig, "a", InstanceState.READY)
            assert "Alpha 7B: ready" in tray.tray.toolTip().splitlines()

            rig.bridge.select("r")
            assert "Remote: unreachable" in tray.tray.toolTip().splitlines()

        async with engine_rig(MODELS, proxy_url=None) as rig:
            tray = TrayIcon(rig.bridge)
            assert tray.tray.toolTip().splitlines() == [
                "ryx-desktop",
                "No model selected",
                "Proxy off",
            ]
            assert centre_colour(tray) == named(GREY)

    run_on_qt(qapp, scenario())


def test_menu_is_rebuilt_from_live_state_each_time_it_opens(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            tray = TrayIcon(rig.bridge)
            open_menu(tray)
            assert "stopped" in action(tray, "menu:a").text()
            assert action(tray, "menu:a").isChecked() and action(tray, "model:a").isChecked()
            assert not action(tray, "menu:b").isChecked()
            assert action(tray, "menu:a").text().endswith("(selected)")
            assert "(selected)" not in action(tray, "menu:b").text()
            assert action(tray, "start:a").isEnabled()
            for name in ("stop:a", "restart:a", "logs:a", "stop-all"):
                assert not action(tray, name).isEnabled(), name
            # An external model can be selected but not started or stopped.
            assert action(tray, "model:r").isEnabled()
            assert tray.action("start:r") is None and tray.action("stop:r") is None

            await rig.supervisor.ensure_ready("a")
            assert "stopped" in action(tray, "menu:a").text()  # not rebuilt until it opens

            open_menu(tray)
            assert "Alpha 7B — ready" in action(tray, "menu:a").text()
            assert not action(tray, "start:a").isEnabled()
            for name in ("stop:a", "restart:a", "logs:a", "stop-all"):
                assert action(tray, name).isEnabled(), name
            assert action(tray, "start:b").isEnabled()

            rig.supervisor.select("b")
            await rig.supervisor.stop("a")
            open_menu(tray)
            assert action(tray, "menu:b").isChecked() and action(tray, "model:b").isChecked()
            assert not action(tray, "menu:a").isChecked()
            assert not action(tray, "model:a").isChecked()
            assert "(selected)" in action(tray, "menu:b").text()
            assert "(selected)" not in action(tray, "menu:a").text()
            assert action(tray, "start:a").isEnabled()
            assert not action(tray, "stop:a").isEnabled()
            assert not action(tray, "stop-all").isEnabled()

    run_on_qt(qapp, scenario())


def test_menu_commands_go_through_the_supervisor(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            tray = TrayIcon(rig.bridge)
            action(tray, "start:a").trigger()
            await reach(rig, "a", InstanceState.READY)
            assert rig.starts() == ["a"]
            first = rig.container("a").info.id

            tray.rebuild_menu()
            action(tray, "restart:a").trigger()
            await wait_for(lambda: len(rig.starts()) == 2, "a second start")
            await reach(rig, "a", InstanceState.READY)
            assert rig.container("a").info.id != first

            tray.rebuild_menu()
            action(tray, "start:b").trigger()
            await reach(rig, "b", InstanceState.READY)
            tray.rebuild_menu()
            action(tray, "stop:b").trigger()
            await reach(rig, "b", InstanceState.STOPPED)
            assert rig.runtime.by_key("b") is None

            tray.rebuild_menu()
            action(tray, "stop-all").trigger()
            await reach(rig, "a", InstanceState.STOPPED)
            assert rig.runtime.containers == {}

    run_on_qt(qapp, scenario())


def test_selecting_a_model_in_the_menu_selects_it(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            tray = TrayIcon(rig.bridge)
            await rig.supervisor.ensure_ready("b")
            assert centre_colour(tray) == named(GREY)
            action(tray, "model:b").trigger()
            assert rig.bridge.selected() == "b"
            assert centre_colour(tray) == named(GREEN)
            assert "Beta 3B: ready" in tray.tray.toolTip()
            open_menu(tray)
            assert action(tray, "model:b").isChecked()
            assert not action(tray, "model:a").isChecked()
            action(tray, "model:r").trigger()
            assert rig.bridge.selected() == "r"
            assert centre_colour(tray) == named(RED)  # unreachable

    run_on_qt(qapp, scenario())


def test_copy_proxy_url_puts_it_on_the_clipboard(qapp: QApplication) -> None:
    async def scenario() -> None:
        clipboard = QApplication.clipboard()
        clipboard.setText("something else")
        async with engine_rig(MODELS, proxy_url="http://127.0.0.1:8555/v1") as rig:
            tray = TrayIcon(rig.bridge, clipboard=clipboard)
            copy = action(tray, "copy-proxy-url")
            assert "http://127.0.0.1:8555/v1" in copy.text()
            copy.trigger()
            assert clipboard.text() == "http://127.0.0.1:8555/v1"
            assert tray.action("proxy-off") is None
        async with engine_rig(MODELS, proxy_url=None) as rig:
            tray = TrayIcon(rig.bridge, clipboard=clipboard)
            assert tray.action("copy-proxy-url") is None
            off = action(tray, "proxy-off")
            assert off.text() == "Proxy not running" and not off.isEnabled()

    run_on_qt(qapp, scenario())


def test_notifications_on_ready_failure_idle_stop_and_failed_commands(
    qapp: QApplication,
) -> None:
    async def scenario() -> None:
        models = {**MODELS, "a": managed(8001, name="Alpha 7B", idle_ttl=60)}
        async with engine_rig(models, default_model="a") as rig:
            rig.runtime.behaviour["b"] = "crash"
            tray = TrayIcon(rig.bridge)
            shown: list[tuple[str, str]] = []
            tray.notified.connect(lambda title, message: shown.append((title, message)))
            failed: list[str] = []
            rig.bridge.commandFailed.connect(lambda key, message, hint: failed.append(key))
            assert tray.notifications == []  # the states seen at the start are no news

            await rig.bridge.start("a")
            assert shown == [("Alpha 7B is ready", "Serving /models/m8001 on port 8001")]

            await rig.bridge.start("b")
            assert failed == ["b"]  # the bridge reported it, the tray tells it once
            [(title, message)] = shown[1:]
            failure = rig.supervisor.get("b").failure
            assert failure is not None
            assert title == "Beta 3B failed"
            assert message.splitlines()[0] == failure.message
            assert "exited with code 1" in message
            # No log line is shown here: the hint names the real key and points at no lines.
            assert message.splitlines()[-1] == "`ryx-desktop logs b` shows the whole log."
            assert tray.notifications[-1].warning

            await rig.clock.advance(61)
            await reach(rig, "a", InstanceState.STOPPED)
            assert shown[-1] == ("Alpha 7B stopped", "Stopped after 60 s idle.")

            rig.bridge.select("nowhere")
            title, message = shown[-1]
            assert title == "ryx-desktop: not done"
            assert "no model is called 'nowhere'" in message
            assert len(shown) == 4

            await rig.bridge.stop("b")  # stopped by the user: no notification
            assert len(shown) == 4

    run_on_qt(qapp, scenario())


def test_tray_signals_for_the_window_logs_and_quit(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            tray = TrayIcon(rig.bridge)
            events: list[object] = []
            tray.openManagerRequested.connect(lambda: events.append("manager"))
            tray.showLogsRequested.connect(lambda key: events.append(("logs", key)))
            tray.quitRequested.connect(lambda stop: events.append(("quit", stop)))
            tray.settingsRequested.connect(lambda: events.append("settings"))

            tray.tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
            tray.tray.activated.emit(QSystemTrayIcon.ActivationReason.Context)
            assert events == ["manager"]

            await rig.supervisor.ensure_ready("a")
            tray.rebuild_menu()
            for name in ("logs:a", "open-manager", "settings", "quit", "stop-all-quit"):
                action(tray, name).trigger()
            assert events[1:] == [
                ("logs", "a"),
                "manager",
                "settings",
                ("quit", False),
                ("quit", True),
            ]

            assert not tray.is_visible()
            tray.show()
            assert tray.is_visible()
            tray.hide()
            assert not tray.is_visible()

    run_on_qt(qapp, scenario())


def test_a_cold_start_of_another_model_shows_in_the_icon_and_tooltip(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a") as rig:
            rig.runtime.behaviour["b"] = "slow"
            tray = TrayIcon(rig.bridge)
            await rig.bridge.start("a")
            await settle()
            assert centre_colour(tray) == named(GREEN)

            # A request names b: the proxy starts it, the selection stays on a.
            starting = rig.bridge.spawn(rig.supervisor.ensure_ready("b"))

            def loading() -> bool:
                progress = rig.supervisor.get("b").progress
                return progress is not None and progress.percent is not None

            await wait_for(loading, "b to report its load progress")
            await settle()
            percent = load_percent(rig.supervisor.get("b"))
            lines = tray.tray.toolTip().splitlines()
            assert "Alpha 7B: ready" in lines
            assert f"loading Beta 3B {percent} %" in lines
            assert centre_colour(tray) == named(AMBER)  # something loads
            open_menu(tray)  # rebuilt from the live snapshots as it opens
            assert f"Beta 3B — starting {percent} %" in action(tray, "menu:b").text()

            rig.container("b").serving = True
            await rig.clock.advance(1)
            await starting
            await settle()
            assert not any("Beta 3B" in line for line in tray.tray.toolTip().splitlines())
            assert centre_colour(tray) == named(GREEN)

    run_on_qt(qapp, scenario())
