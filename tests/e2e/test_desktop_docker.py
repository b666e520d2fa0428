"""The desktop app end to end with the real Docker engine and the fake vLLM image.

In process, on the offscreen platform: the real ``start_desktop`` (Docker runtime, health probe,
supervisor, GPU monitor, proxy and manager window) on a qasync loop over pytest-qt's
``QApplication``. The test works the window as a user does: select the model's row, trigger
Start, watch its state cell turn amber (starting, with vLLM's load progress) then green
(ready), read the container's vLLM log lines in the log view, trigger Stop, and see the model
stopped and its container gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QApplication

from ryx_desktop.config import Config, save_config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.desktop import NO_TRAY_NOTICE, Desktop, DesktopDeps, start_desktop
from ryx_desktop.ui.event_loop import QtAsyncioLoop
from ryx_desktop.ui.icons import state_colour
from ryx_desktop.ui.instances_model import PROGRESS_ROLE, Column
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.qt]

MODEL = "general"
CONTAINER = f"ryx-vllm-{MODEL}"
_T = TypeVar("_T")


class RecordingDialogs:
    """``Dialogs`` that record instead of opening a box (the test asserts none was shown)."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str]] = []

    async def error(self, title: str, message: str, hint: str) -> None:
        self.shown.append((title, message, hint))


def run_on_qt(qapp: QApplication, scenario: Coroutine[Any, Any, _T]) -> _T:
    """Run ``scenario`` on a qasync loop over ``qapp``, set up as ``ryx-desktop`` sets it up:
    hiding the last window (as the shutdown does) must not end the loop."""
    quit_on_close = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    loop = QtAsyncioLoop(qapp)
    try:
        with loop:
            return loop.run_until_complete(scenario)
    finally:
        qapp.setQuitOnLastWindowClosed(quit_on_close)


def centre_colour(pixmap: QPixmap) -> QColor:
    image = pixmap.toImage()
    return image.pixelColor(image.width() // 2, image.height() // 2)


@pytest.fixture
def config_file(tmp_path: Path, make_config: Callable[..., Config]) -> Path:
    config = make_config(
        {
            MODEL: {
                "name": "Fake general",
                "model": "/models/small/general/qwen2.5-3b",
                # Four shards over 2 s: vLLM-like progress lines while the row is amber.
                "env": {"FAKE_VLLM_LOAD_SECONDS": "2", "FAKE_VLLM_SHARDS": "4"},
            }
        },
        default_model=MODEL,
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    return path


def test_start_watch_read_logs_and_stop_a_model_from_the_window(
    qapp: QApplication, config_file: Path, docker_client: docker.DockerClient
) -> None:
    dialogs = RecordingDialogs()
    deps = DesktopDeps(tray_available=lambda: False, dialogs=dialogs, gpu_interval=0.5)
    # What the state cell showed, each time it changed: (text, dot colour, progress role).
    cells: list[tuple[str, str, float | None]] = []

    async def scenario() -> None:
        desktop: Desktop = await start_desktop(qapp, config_file, dict(os.environ), deps)
        try:
            await drive(desktop)
        finally:
            await desktop.shutdown()
        assert desktop.closed == ["proxy", "chat", "gpu", "engine"]

    async def drive(desktop: Desktop) -> None:
        window = desktop.window
        model = window.model
        row = model.row_of(MODEL)
        assert row is not None
        state_index = model.index(row, Column.STATE)

        def cell() -> tuple[str, str, float | None]:
            text = model.data(state_index, Qt.ItemDataRole.DisplayRole)
            dot = model.data(state_index, Qt.ItemDataRole.DecorationRole)
            return text, centre_colour(dot).name(), model.data(state_index, PROGRESS_ROLE)

        def record(top_left: QModelIndex, bottom_right: QModelIndex) -> None:
            if top_left.row() <= row <= bottom_right.row() and top_left.column() == 0:
                now = cell()
                if not cells or cells[-1] != now:
                    cells.append(now)

        model.dataChanged.connect(record)
        assert window.isVisible(), "with no tray the window opens by itself"
        assert cell()[:2] == ("stopped", state_colour(InstanceState.STOPPED).name())

        window.select_model(MODEL)
        assert window.current_key() == MODEL
        start = window.action("start")
        assert start.isEnabled()
        assert not window.action("stop").isEnabled()
        start.trigger()

        amber = state_colour(InstanceState.STARTING).name()
        green = state_colour(InstanceState.READY).name()
        await wait_for(lambda: cell()[1] == amber, "the row to turn amber (starting)")
        await wait_for(lambda: cell()[:2] == ("ready", green), "the row to turn green (ready)", 60)
        texts = [text for text, _, _ in cells]
        assert texts.index("starting") < texts.index("ready"), cells
        loading = [percent for text, _, percent in cells if text == "starting"]
        assert any(p is not None and 0 < p < 100 for p in loading), (
            f"no load progress shown while starting: {cells}"
        )
        assert desktop.bridge.instance(MODEL).state is InstanceState.READY
        assert not start.isEnabled() and window.action("stop").isEnabled()

        # The log view follows the selected model's new container: vLLM's own lines.
        log_view = window.log_view
        assert log_view.key == MODEL
        await wait_for(
            lambda: "Application startup complete" in log_view.text(),
            "the container's log in the log view",
        )
        text = log_view.text()
        assert "Loading safetensors checkpoint shards: 100% Completed" in text
        assert "Starting to load model /models/small/general/qwen2.5-3b" in text
        container = docker_client.containers.get(CONTAINER)
        assert container.status == "running"

        window.action("stop").trigger()
        await wait_for(
            lambda: cell()[:2] == ("stopped", state_colour(InstanceState.STOPPED).name()),
            "the row to turn grey (stopped)",
            60,
        )
        await wait_for(
            lambda: not docker_client.containers.list(all=True, filters={"name": CONTAINER}),
            "the model's container to be removed",
        )
        assert "Application startup complete" in log_view.text(), (
            "the stopped model's log stays readable"
        )
        assert window.action("start").isEnabled()
        assert window.notice_text() == NO_TRAY_NOTICE

    run_on_qt(qapp, scenario())
    assert dialogs.shown == []
