"""The live log view, following fake containers whose logs grow while the test runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QLabel, QPushButton

from ryx_desktop.ui.log_view import LogView
from tests.gui.fixtures_engine import EngineRig, engine_rig, managed, run_on_qt
from tests.gui.window_fixtures import FRACTIONAL, FakeClipboard
from tests.support.fakes import FakeRuntime
from tests.support.waiting import wait_for

MODELS = {
    "a": managed(8001, gpu_memory_utilization=0.3),
    "b": managed(8002, gpu_memory_utilization=0.3),
}
LAST_LOAD_LINE = FakeRuntime.LOAD_LINES[-1]


@contextlib.contextmanager
def log_view(rig: EngineRig, **options: Any) -> Iterator[LogView]:
    """A log view over the rig's bridge that stops following when the block ends."""
    view = LogView(rig.bridge, **options)
    try:
        yield view
    finally:
        view.stop()
        view.deleteLater()


def shown(view: LogView) -> list[str]:
    return view.text().splitlines()


async def started(rig: EngineRig, *keys: str) -> None:
    rig.runtime.live_logs = True
    for key in keys:
        inst = await rig.bridge.start(key)
        assert inst is not None, f"{key} did not start"


def test_following_shows_the_log_and_new_lines(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a")
            with log_view(rig, flush_ms=5) as view:
                view.follow("a")
                assert view.key == "a"
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "the log so far")
                assert shown(view) == list(FakeRuntime.LOAD_LINES)
                cid = rig.container("a").info.id
                assert cid in view.findChild(QLabel, "log-label").text()
                rig.runtime.write_log(cid, "INFO: POST /v1/chat/completions 200\r\n")
                await wait_for(
                    lambda: shown(view)[-1] == "INFO: POST /v1/chat/completions 200", "a new line"
                )

    run_on_qt(qapp, scenario())


def test_the_probes_access_log_lines_are_left_out(qapp: QApplication) -> None:
    probe = '(APIServer pid=1) INFO:     172.17.0.1:40000 - "GET /health HTTP/1.1" 200 OK'
    metrics = '(APIServer pid=1) INFO:     172.17.0.1:40002 - "GET /metrics HTTP/1.1" 200 OK'
    chat = '(APIServer pid=1) INFO:     172.17.0.1:40004 - "POST /v1/chat/completions HTTP/1.1" 200'

    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a")
            with log_view(rig, flush_ms=5) as view:
                view.follow("a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "the log so far")
                rig.runtime.write_log(rig.container("a").info.id, probe, metrics, chat, probe)
                await wait_for(lambda: shown(view)[-1] == chat, "the chat request's line")
                assert shown(view) == [*FakeRuntime.LOAD_LINES, chat]

    run_on_qt(qapp, scenario())


def test_scrollback_is_bounded_and_a_flood_is_appended_in_batches(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a")
            with log_view(rig, max_lines=100, flush_ms=20) as view:
                appends: list[int] = []
                view.text_edit.textChanged.connect(lambda: appends.append(1))
                view.follow("a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "the log so far")
                appends.clear()
                flood = [f"line {i}" for i in range(1000)]
                rig.runtime.write_log(rig.container("a").info.id, *flood)
                await wait_for(lambda: shown(view)[-1:] == ["line 999"], "the last line")
                assert view.text_edit.maximumBlockCount() == 100
                assert view.text_edit.blockCount() <= 100
                assert "line 950" in shown(view) and "line 10" not in shown(view)
                # 1000 lines reached the view in a handful of appends, not one per line.
                assert len(appends) < 50, f"{len(appends)} appends"

    run_on_qt(qapp, scenario())


def test_pause_holds_lines_back_until_resumed(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a")
            with log_view(rig, max_lines=20, flush_ms=5) as view:
                view.follow("a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "the log so far")
                cid = rig.container("a").info.id

                view.set_paused(True)
                rig.runtime.write_log(cid, "held 1", "held 2")
                await wait_for(lambda: view.held_lines == 2, "two lines held back")
                view.flush()
                assert "held 1" not in shown(view)
                assert view.findChild(QPushButton, "log-pause").text() == "Resume"

                view.set_paused(False)
                assert shown(view)[-2:] == ["held 1", "held 2"]
                assert view.held_lines == 0

                # More than the scrollback while paused: the oldest are dropped, and it says so.
                view.set_paused(True)
                rig.runtime.write_log(cid, *(f"burst {i}" for i in range(30)))
                await wait_for(lambda: view.held_lines == 20, "the buffer full")
                view.set_paused(False)
                lines = shown(view)
                assert lines[-1] == "burst 29"
                assert len(lines) == 20
                assert lines[0] == "[... 11 lines not shown: over the scrollback limit]"
                assert lines[1] == "burst 11"

    run_on_qt(qapp, scenario())


def test_copy_puts_the_selection_or_everything_on_the_clipboard(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a")
            clipboard = FakeClipboard()
            with log_view(rig, clipboard=clipboard, flush_ms=5) as view:
                view.follow("a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "the log so far")

                view.copy()
                assert clipboard.texts == ["\n".join(FakeRuntime.LOAD_LINES)]

                cursor = view.text_edit.textCursor()
                cursor.movePosition(QTextCursor.MoveOperation.Start)
                cursor.movePosition(
                    QTextCursor.MoveOperation.Down, QTextCursor.MoveMode.KeepAnchor, 2
                )
                view.text_edit.setTextCursor(cursor)
                view.findChild(QPushButton, "log-copy").click()
                assert clipboard.texts[-1] == "\n".join([*FakeRuntime.LOAD_LINES[:2], ""])

    run_on_qt(qapp, scenario())


def test_switching_models_and_restarts_follow_the_right_container(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            await started(rig, "a", "b")
            with log_view(rig, flush_ms=5) as view:
                view.follow("a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "a's log")
                a_id = rig.container("a").info.id
                b_id = rig.container("b").info.id

                view.follow("b")
                rig.runtime.write_log(b_id, "from b")
                await wait_for(lambda: "from b" in shown(view), "b's new line")
                assert shown(view) == [*FakeRuntime.LOAD_LINES, "from b"]  # cleared, then b's
                rig.runtime.write_log(a_id, "from a")
                rig.runtime.write_log(b_id, "b again")
                await wait_for(lambda: "b again" in shown(view), "b's next line")
                assert "from a" not in shown(view)

                # b restarts: its new container's log is followed by itself.
                await rig.bridge.restart("b")
                new_id = rig.container("b").info.id
                assert new_id != b_id
                rig.runtime.write_log(new_id, "after restart")
                await wait_for(lambda: "after restart" in shown(view), "the new container's line")
                assert f"--- new container {new_id} ---" in shown(view)

                view.follow(None)
                assert view.key is None and view.text() == ""
                rig.runtime.write_log(new_id, "not followed")
                await rig.clock.advance(0)
                assert view.held_lines == 0

    run_on_qt(qapp, scenario())


def test_a_stopped_model_has_no_log_to_follow(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            with log_view(rig, flush_ms=5) as view:
                view.follow("a")
                label = view.findChild(QLabel, "log-label")
                assert "not running" in label.text()
                # It starts: the view picks the new container up.
                await started(rig, "a")
                await wait_for(lambda: LAST_LOAD_LINE in shown(view), "a's log once started")
                await rig.bridge.stop("a")
                await wait_for(lambda: "stopped" in label.text(), "the label saying it stopped")
                assert LAST_LOAD_LINE in shown(view)  # what it wrote stays readable

    run_on_qt(qapp, scenario())
