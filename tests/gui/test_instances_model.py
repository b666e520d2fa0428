"""The manager window's table model over a real supervisor (fake runtime, virtual clock)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication, QTableView

from ryx_desktop.core.states import InstanceState, Progress, ProgressPhase
from ryx_desktop.ui.icons import state_colour
from ryx_desktop.ui.instances_model import (
    KEY_ROLE,
    NONE,
    PROGRESS_ROLE,
    PROGRESS_TEXT_ROLE,
    SELECTED_MARK,
    SELECTED_ROLE,
    Column,
    InstancesTableModel,
    ProgressDelegate,
    format_uptime,
    progress_text,
)
from tests.gui.fixtures_engine import engine_rig, managed, run_on_qt
from tests.gui.window_fixtures import (
    FRACTIONAL,
    MODELS,
    RecordingApply,
    bridge_with,
    cancel,
    vram_report,
)
from tests.support.artifacts import artifact_path
from tests.support.fakes import FakeRuntime
from tests.support.waiting import wait_for

Changes = list[tuple[int, int, int, int]]


def cell(model: InstancesTableModel, key: str, column: Column, role: int | None = None) -> Any:
    row = model.row_of(key)
    assert row is not None, f"no row for {key}"
    return model.index(row, column).data(role if role is not None else Qt.ItemDataRole.DisplayRole)


def record_changes(model: InstancesTableModel) -> Changes:
    changes: Changes = []

    def on_changed(
        top_left: QModelIndex | QPersistentModelIndex,
        bottom_right: QModelIndex | QPersistentModelIndex,
        _roles: list[int],
    ) -> None:
        changes.append(
            (top_left.row(), bottom_right.row(), top_left.column(), bottom_right.column())
        )

    model.dataChanged.connect(on_changed)
    return changes


def test_progress_and_uptime_texts() -> None:
    assert progress_text(Progress(ProgressPhase.PULL, 40.0)) == "pulling image 40 %"
    assert progress_text(Progress(ProgressPhase.LOAD, 60.0)) == "loading 60 %"
    assert progress_text(Progress(ProgressPhase.LOAD)) == "loading"
    assert progress_text(Progress(ProgressPhase.CREATE)) == "creating container"
    assert progress_text(None) == "starting"
    assert format_uptime(3725.9) == "1:02:05"
    assert format_uptime(90000) == "25:00:00"


def test_the_table_shows_each_state(qapp: QApplication) -> None:
    now = [0.0]

    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a", **FRACTIONAL) as rig:
            rig.runtime.behaviour.update(c="slow", d="crash")
            # The slow model's log stops after one of two shards (30 %): it stays starting there.
            rig.runtime.LOAD_LINES = FakeRuntime.LOAD_LINES[:3]
            model = InstancesTableModel(rig.bridge, clock=lambda: now[0])
            assert model.model_keys() == ["a", "b", "c", "d", "remote"]
            assert model.rowCount() == 5 and model.columnCount() == len(Column)

            await rig.bridge.start("b")
            # d first: starts on one GPU take turns, and c never finishes its turn.
            await rig.bridge.start("d")
            start_c = rig.bridge.spawn(rig.bridge.start("c"))
            await wait_for(
                lambda: cell(model, "c", Column.STATE, PROGRESS_ROLE) == 30.0, "c at 30 %"
            )

            states = {k: cell(model, k, Column.STATE) for k in model.model_keys()}
            assert states == {
                "a": "stopped",
                "b": "ready",
                "c": "starting",
                "d": "failed",
                "remote": "unreachable",
            }
            # The light: a dot in the state's colour.
            dot = cell(model, "b", Column.STATE, Qt.ItemDataRole.DecorationRole).toImage()
            centre = dot.pixelColor(dot.width() // 2, dot.height() // 2)
            assert centre == state_colour(InstanceState.READY)
            # Progress only while starting.
            assert cell(model, "c", Column.STATE, PROGRESS_TEXT_ROLE) == "loading 30 %"
            assert cell(model, "a", Column.STATE, PROGRESS_ROLE) is None
            assert cell(model, "b", Column.STATE, PROGRESS_TEXT_ROLE) is None
            # Uptime from the injected clock, for the ready model only.
            started = rig.bridge.instance("b").started_at
            assert started is not None
            now[0] = started + 3725
            assert cell(model, "b", Column.UPTIME) == "1:02:05"
            assert cell(model, "a", Column.UPTIME) == NONE
            assert cell(model, "c", Column.UPTIME) == NONE
            # Failure reason in the tooltip.
            assert "exited with code 1" in cell(
                model, "d", Column.STATE, Qt.ItemDataRole.ToolTipRole
            )
            # Requests: vLLM's figures for the running model, nothing for the stopped one.
            assert cell(model, "a", Column.REQUESTS) == NONE
            rig.supervisor.request_started("b")
            await wait_for(lambda: rig.bridge.instance("b").in_flight == 1, "b in flight")
            await rig.clock.advance(1)  # a monitor round reads vLLM's metrics
            # Counter-only snapshots reach the widgets on the bridge's usage timer.
            await wait_for(
                lambda: cell(model, "b", Column.REQUESTS) == "0 / 0 (1 via proxy)",
                "the request counted in the table",
            )
            rig.supervisor.request_finished("b")

            # A start that ends: the row leaves the progress bar.
            rig.container("c").serving = True
            await rig.clock.advance(1)
            await start_c
            assert cell(model, "c", Column.STATE) == "ready"
            assert cell(model, "c", Column.STATE, PROGRESS_ROLE) is None

    run_on_qt(qapp, scenario())


def test_columns_show_config_figures_and_vram(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a", **FRACTIONAL) as rig:
            rig.runtime.behaviour["c"] = "slow"
            model = InstancesTableModel(rig.bridge)
            assert [cell(model, k, Column.PORT) for k in model.model_keys()] == [
                "8001",
                "8002",
                "8003",
                "8004",
                "external",
            ]
            assert cell(model, "a", Column.BUDGET) == "30 %"
            assert cell(model, "b", Column.BUDGET) == "25 %"
            assert cell(model, "remote", Column.BUDGET) == NONE
            assert cell(model, "b", Column.CATEGORY) == "coding"
            assert cell(model, "b", Column.SIZE) == "small"
            assert cell(model, "c", Column.SIZE) == "powerful"
            assert cell(model, "remote", Column.SERVED) == "remote-model"
            assert cell(model, "a", Column.NAME, KEY_ROLE) == "a"
            header = model.headerData(Column.BUDGET, Qt.Orientation.Horizontal)
            assert header == "GPU budget"

            await rig.bridge.start("b")
            start_c = rig.bridge.spawn(rig.bridge.start("c"))
            await wait_for(lambda: rig.bridge.instance("c").container_id is not None, "c created")
            # No report yet: running models say N/A, the others say nothing.
            assert cell(model, "b", Column.VRAM) == "N/A"
            assert cell(model, "a", Column.VRAM) == NONE

            changes = record_changes(model)
            rig.vram.push(vram_report(b=5.25))
            assert changes == [(0, 4, Column.VRAM, Column.VRAM)]  # only the VRAM column
            assert cell(model, "b", Column.VRAM) == "5.2 GiB"
            assert cell(model, "c", Column.VRAM) == "N/A"  # running, nothing measured
            assert cell(model, "a", Column.VRAM) == NONE  # not running
            assert cell(model, "remote", Column.VRAM) == NONE
            await cancel(start_c)

    run_on_qt(qapp, scenario())


def test_the_selected_model_is_marked(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, default_model="a", **FRACTIONAL) as rig:
            model = InstancesTableModel(rig.bridge)
            assert cell(model, "a", Column.NAME) == f"{SELECTED_MARK}a"
            assert cell(model, "a", Column.NAME, SELECTED_ROLE) is True
            assert cell(model, "a", Column.NAME, Qt.ItemDataRole.FontRole).bold()
            assert cell(model, "b", Column.NAME) == "b"
            assert cell(model, "b", Column.NAME, Qt.ItemDataRole.FontRole) is None

            changes = record_changes(model)
            rig.bridge.select("b")
            assert sorted(r for r, _, _, _ in changes) == [0, 1]  # the old and the new row
            assert cell(model, "b", Column.NAME) == f"{SELECTED_MARK}b"
            assert cell(model, "a", Column.NAME) == "a"
            assert cell(model, "a", Column.NAME, SELECTED_ROLE) is False

    run_on_qt(qapp, scenario())


def test_an_instance_change_updates_only_its_row(qapp: QApplication) -> None:
    async def scenario() -> None:
        managed_only = {k: v for k, v in MODELS.items() if k != "remote"}  # it probes on its own
        async with engine_rig(managed_only, **FRACTIONAL) as rig:
            model = InstancesTableModel(rig.bridge)
            changes = record_changes(model)
            await rig.bridge.start("c")
            await rig.bridge.stop("c")
            assert len(changes) >= 3  # starting, (progress), ready, stopping, stopped
            row = model.row_of("c")
            last = len(Column) - 1
            assert set(changes) == {(row, row, 0, last)}

            uptime = record_changes(model)
            model.refresh_uptime()
            assert uptime == [(0, 3, Column.UPTIME, Column.UPTIME)]

    run_on_qt(qapp, scenario())


def test_a_config_change_resets_the_rows(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            applied = RecordingApply(rig.supervisor)
            with bridge_with(rig, apply_config=applied) as bridge:
                model = InstancesTableModel(bridge)
                resets: list[str] = []
                model.modelAboutToBeReset.connect(lambda: resets.append("begin"))
                model.modelReset.connect(lambda: resets.append("end"))
                models = {k: v for k, v in MODELS.items() if k != "a"}
                models["z"] = managed(8010, name="Zed", size="tiny")
                new = rig.config.model_validate({"models": models, **FRACTIONAL})
                assert await bridge.apply_config(new)
                assert applied.applied == [new]
                assert resets == ["begin", "end"]
                assert model.model_keys() == ["b", "c", "d", "remote", "z"]
                # A model the engine has not taken in yet shows as stopped, from its config.
                assert cell(model, "z", Column.NAME) == "Zed"
                assert cell(model, "z", Column.STATE) == "stopped"
                assert cell(model, "z", Column.SIZE) == "tiny"
                assert cell(model, "z", Column.PORT) == "8010"
                assert model.row_of("a") is None

    run_on_qt(qapp, scenario())


def _colour_count(image: QImage, x0: int, x1: int, y0: int, y1: int, colour: QColor) -> int:
    found = 0
    for x in range(x0, x1):
        for y in range(y0, y1):
            c = image.pixelColor(x, y)
            if (
                abs(c.red() - colour.red()) < 40
                and abs(c.green() - colour.green()) < 40
                and abs(c.blue() - colour.blue()) < 40
            ):
                found += 1
    return found


def test_the_progress_bar_is_painted_while_starting(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS, **FRACTIONAL) as rig:
            rig.runtime.behaviour["c"] = "slow"
            model = InstancesTableModel(rig.bridge)
            view = QTableView()
            view.setModel(model)
            view.setItemDelegateForColumn(Column.STATE, ProgressDelegate(view))
            view.setColumnWidth(Column.STATE, 200)
            view.resize(900, 300)
            start_c = rig.bridge.spawn(rig.bridge.start("c"))
            await wait_for(
                lambda: cell(model, "c", Column.STATE, PROGRESS_ROLE) == 100.0, "c loaded"
            )
            image = view.grab().toImage()  # renders without showing (closing would quit Qt)
            offset = view.viewport().pos()  # cells are placed in the viewport
            image.save(str(artifact_path("instances-table-starting.png")))
            highlight = view.palette().color(view.palette().ColorRole.Highlight)
            starting = view.visualRect(model.index(model.row_of("c") or 0, Column.STATE))
            stopped = view.visualRect(model.index(model.row_of("a") or 0, Column.STATE))
            starting, stopped = starting.translated(offset), stopped.translated(offset)

            def filled(rect: Any) -> int:
                return _colour_count(
                    image, rect.left() + 20, rect.right(), rect.top(), rect.bottom(), highlight
                )

            # A full bar fills the starting row's state cell; the stopped row has none.
            assert filled(starting) > 0.3 * (starting.width() - 20) * starting.height()
            assert filled(stopped) == 0
            await cancel(start_c)

    run_on_qt(qapp, scenario())


def test_a_cpu_model_has_no_gpu_budget_as_in_the_cli(qapp: QApplication) -> None:
    async def scenario() -> None:
        models = {
            "cpu": managed(8001, devices="none", gpu_memory_utilization=0.5),
            "gpu": managed(8002, gpu_memory_utilization=0.3),
        }
        async with engine_rig(models) as rig:
            model = InstancesTableModel(rig.bridge)
            assert cell(model, "cpu", Column.BUDGET) == "no GPU"  # the CLI's words
            assert cell(model, "gpu", Column.BUDGET) == "30 %"

    run_on_qt(qapp, scenario())
