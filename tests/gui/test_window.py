"""The model manager window over a real supervisor: toolbar actions reach the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.instances_model import PROGRESS_ROLE, Column
from ryx_desktop.ui.model_dialog import ModelDialog
from ryx_desktop.ui.settings import SettingsDialog
from ryx_desktop.ui.window import (
    ACTIONS,
    TITLE,
    ManagerWindow,
    action_states,
    config_without,
    requests_per_second,
)
from tests.gui.fixtures_engine import engine_rig, run_on_qt
from tests.gui.window_fixtures import (
    FRACTIONAL,
    MODELS,
    RecordingApply,
    bridge_with,
    cancel,
    vram_report,
)
from tests.support.artifacts import artifact_path
from tests.support.waiting import wait_for


@contextlib.contextmanager
def manager_window(bridge: EngineBridge, **options: Any) -> Iterator[ManagerWindow]:
    """A window that is never shown (closing a shown one could quit Qt's loop)."""
    window = ManagerWindow(bridge, **options)
    try:
        yield window
    finally:
        window.log_view.stop()
        window.deleteLater()


def enabled(window: ManagerWindow) -> set[str]:
    return {name for name in ACTIONS if window.action(name).isEnabled()}


#: Sleep and Wake: never enabled for a model without sleep mode (see test_window_sleep.py).
SLEEP = {"sleep", "wake"}


def test_action_states_follow_the_row() -> None:
    stopped = Instance(key="a", name="a", served_name="a", port=8001)
    ready = Instance(
        key="a", name="a", served_name="a", state=InstanceState.READY, container_id="c1"
    )
    external = Instance(
        key="r", name="r", served_name="r", external=True, state=InstanceState.UNREACHABLE
    )
    always = {"add", "settings", "setup"}
    assert {k for k, v in action_states(None, None).items() if v} == always
    assert {k for k, v in action_states(stopped, None).items() if v} == always | {
        "start",
        "select",
        "logs",
        "edit",
        "remove",
    }
    assert {k for k, v in action_states(ready, "a").items() if v} == always | {
        "stop",
        "restart",
        "logs",
        "edit",
        "remove",
    }
    assert {k for k, v in action_states(external, "a").items() if v} == always | {
        "select",
        "edit",
        "remove",
    }


def test_requests_per_second_from_two_samples() -> None:
    assert requests_per_second(None, (10.0, 5)) is None
    assert requests_per_second((10.0, 5), (12.0, 25)) == 10.0
    assert requests_per_second((10.0, 5), (10.0, 25)) is None  # no time passed
    assert requests_per_second((10.0, None), (11.0, None)) is None  # no proxy
    assert requests_per_second((10.0, 500), (11.0, 3)) == 3.0  # the proxy restarted


def test_start_and_stop_from_the_toolbar(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a", **FRACTIONAL) as rig:
            with manager_window(rig.bridge, clock=rig.clock.now) as window:
                assert window.windowTitle() == TITLE
                window.select_model("b")
                assert window.current_key() == "b"
                assert enabled(window) == set(ACTIONS) - {"stop", "restart"} - SLEEP
                row = window.model.row_of("b")
                assert row is not None
                seen: list[str] = []
                window.model.dataChanged.connect(
                    lambda top, _bottom, _roles: (
                        seen.append(window.model.index(row, Column.STATE).data())
                        if top.row() == row
                        else None
                    )
                )

                window.action("start").trigger()
                await wait_for(lambda: rig.bridge.instance("b").state is InstanceState.READY, "b")
                assert rig.starts() == ["b"]
                assert rig.container("b").serving
                assert seen[0] == "starting" and seen[-1] == "ready"
                assert enabled(window) == set(ACTIONS) - {"start"} - SLEEP
                assert "ready" in window.details.toPlainText()

                window.action("stop").trigger()
                await wait_for(lambda: rig.bridge.instance("b").state is InstanceState.STOPPED, "b")
                assert rig.runtime.containers == {}
                assert enabled(window) == set(ACTIONS) - {"stop", "restart"} - SLEEP

                # The methods behind the actions return their task.
                task = window.restart("b")
                assert task is not None
                assert (await task) is not None
                assert rig.bridge.instance("b").state is InstanceState.READY
                stopped = window.stop("b")
                assert stopped is not None
                await stopped

    run_on_qt(qapp, scenario())


def test_select_makes_the_row_the_selected_model(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a", **FRACTIONAL) as rig:
            with manager_window(rig.bridge) as window:
                assert window.current_key() == "a"  # opens on the selected model
                assert not window.action("select").isEnabled()
                window.select_model("remote")
                assert enabled(window) == {"select", "edit", "remove", "add", "settings", "setup"}
                window.action("select").trigger()
                assert rig.bridge.selected() == "remote"
                assert not window.action("select").isEnabled()
                assert window.model.index(4, Column.NAME).data().endswith("remote")
                assert "answers requests" in window.details.toPlainText()

    run_on_qt(qapp, scenario())


def test_remove_asks_stops_the_model_and_applies_a_config_without_it(
    qapp: QApplication,
) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="b", **FRACTIONAL) as rig:
            applied = RecordingApply(rig.supervisor)
            questions: list[tuple[str, str]] = []
            answers = [False, True]

            async def confirm(title: str, text: str) -> bool:
                questions.append((title, text))
                return answers.pop(0)

            with (
                bridge_with(rig, apply_config=applied) as bridge,
                manager_window(bridge, confirm=confirm) as window,
            ):
                await bridge.start("b")
                window.select_model("b")
                assert window.action("remove").isEnabled()

                task = window.remove()
                assert task is not None
                assert await task is False  # the user said no
                assert applied.applied == []
                assert rig.bridge.instance("b").state is InstanceState.READY

                window.action("remove").trigger()
                await wait_for(lambda: applied.applied != [], "the new config")
                assert "will be stopped first" in questions[-1][1]
                assert rig.runtime.containers == {}  # stopped before removing
                new = applied.applied[0]
                assert list(new.models) == ["a", "c", "d", "remote"]
                assert new.default_model == "a"  # the default moved to a model that exists
                await wait_for(lambda: window.model.row_of("b") is None, "the row gone")
                assert window.current_key() == "a"

    run_on_qt(qapp, scenario())


def test_config_without_moves_the_default() -> None:
    from ryx_desktop.config import Config

    config = Config.model_validate({"models": MODELS, "default_model": "remote-model"})
    assert config_without(config, "a", None).default_model == "remote-model"
    assert config_without(config, "remote", "c").default_model == "c"
    assert config_without(config, "remote", "remote").default_model == "a"
    only = Config.model_validate({"models": {"a": MODELS["a"]}, "default_model": "a"})
    emptied = config_without(only, "a", "a")
    assert emptied.models == {} and emptied.default_model is None


def test_a_failure_shows_its_reason_hint_and_log(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            rig.runtime.behaviour["d"] = "crash"
            with manager_window(rig.bridge) as window:
                window.select_model("d")
                task = window.start()
                assert task is not None
                assert await task is None  # failed: the bridge reported it
                inst = rig.bridge.instance("d")
                assert inst.failure is not None
                details = window.details.toPlainText()
                assert inst.failure.message in details
                assert inst.failure.hint in details
                assert "Exit code: 1" in details
                assert "RuntimeError: CUDA error: an illegal memory access" in details
                # The command's failure also shows in the banner, with its hint.
                assert inst.failure.message in window.notice_text()
                assert inst.failure.hint in window.notice_text()
                assert enabled(window) >= {"start", "edit", "remove"}

    run_on_qt(qapp, scenario())


def test_status_bar_shows_the_proxy_and_the_request_rate(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            total = [0]
            now = [100.0]
            with (
                bridge_with(rig, requests_total=lambda: total[0]) as bridge,
                manager_window(bridge, clock=lambda: now[0]) as window,
            ):
                assert window.proxy_status_text() == "Proxy: http://127.0.0.1:8420/v1"
                window.set_proxy_status(None, "port 8420 is in use")
                assert window.proxy_status_text() == "Proxy off: port 8420 is in use"
                assert window.sample_requests() is None  # the first sample
                total[0], now[0] = 30, 102.0
                assert window.sample_requests() == 15.0
                assert window.request_rate_text() == "15.0 req/s"

            with manager_window(rig.bridge) as window:  # no proxy counter
                window.sample_requests()
                assert window.request_rate_text() == "N/A req/s"

    run_on_qt(qapp, scenario())


def test_notice_banner_logs_and_closing(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            rig.runtime.live_logs = True
            with manager_window(rig.bridge) as window:
                assert window.notice_text() == ""  # hidden until needed
                window.show_notice("No system tray found: ryx-desktop runs in this window")
                assert window.notice_text().startswith("No system tray found")
                window.hide_notice()
                assert window.notice_text() == ""

                await rig.bridge.start("c")
                window.show_logs("c")
                assert window.current_key() == "c"
                assert window.tabs.currentWidget() is window.log_view
                assert window.log_view.key == "c"
                await wait_for(
                    lambda: "Application startup complete" in window.log_view.text(), "c's log"
                )

                closed: list[bool] = []
                window.closed.connect(lambda: closed.append(True))
                assert not window.close()  # hidden, not closed
                assert closed == [True] and window.isHidden()
                window.hide_on_close = False
                assert window.close()

    run_on_qt(qapp, scenario())


def test_add_edit_and_settings_open_their_dialogs(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            with manager_window(rig.bridge) as window:
                dialogs: list[QDialog] = []
                window.select_model("c")
                for name, kind in (
                    ("add", ModelDialog),
                    ("edit", ModelDialog),
                    ("settings", SettingsDialog),
                ):
                    window.action(name).trigger()
                    dialog = window.findChildren(kind)[-1]
                    assert dialog.isVisible()  # opened without blocking the loop
                    dialogs.append(dialog)
                    dialog.reject()
                    assert not dialog.isVisible()
                assert len(dialogs) == 3

    run_on_qt(qapp, scenario())


def test_a_screenshot_of_the_window(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="b", **FRACTIONAL) as rig:
            rig.runtime.behaviour.update(c="slow", d="crash")
            rig.runtime.live_logs = True
            with manager_window(rig.bridge, clock=rig.clock.now) as window:
                await rig.bridge.start("b")
                start_c = rig.bridge.spawn(rig.bridge.start("c"))
                await rig.bridge.start("d")
                rig.vram.push(vram_report(b=21.5))
                await wait_for(
                    lambda: window.model.index(2, Column.STATE).data(PROGRESS_ROLE) == 100.0, "c"
                )
                window.show_logs("b")
                await wait_for(lambda: "startup complete" in window.log_view.text(), "b's log")
                window.resize(1200, 800)
                image = window.grab().toImage()
                assert image.width() == 1200
                assert image.save(str(artifact_path("manager-window.png")))
                await cancel(start_c)

    run_on_qt(qapp, scenario())


def test_the_default_confirmation_is_a_question_that_does_not_block(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            applied = RecordingApply(rig.supervisor)
            with (
                bridge_with(rig, apply_config=applied) as bridge,
                manager_window(bridge) as window,
            ):
                for answer, expected in (
                    (QMessageBox.StandardButton.No, False),
                    (QMessageBox.StandardButton.Yes, True),
                ):
                    task = window.remove("a")
                    assert task is not None
                    await wait_for(lambda: window.findChildren(QMessageBox) != [], "the question")
                    box = window.findChildren(QMessageBox)[-1]
                    assert "Remove a (a) from the config?" in box.text()
                    button = box.button(answer)
                    assert button is not None
                    button.click()
                    assert await task is expected
                    await wait_for(lambda: window.findChildren(QMessageBox) == [], "it closed")
                assert [list(c.models) for c in applied.applied] == [["b", "c", "d", "remote"]]

    run_on_qt(qapp, scenario())


def test_the_title_leaves_the_app_name_to_qt() -> None:
    # Qt shows "TITLE — ryx-desktop" (the application display name): the name once, not twice.
    assert "ryx-desktop" not in TITLE.lower()
    assert TITLE == "Model manager"
