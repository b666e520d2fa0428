"""The window over several hosts: models grouped under a header per host, each with its light."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from PySide6.QtCore import QItemSelectionModel, QPoint, Qt
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QApplication

from ryx_desktop.config import Config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.host_groups import HostHeader, group_rows
from ryx_desktop.ui.icons import GREEN, RED
from ryx_desktop.ui.instances_model import (
    HOST_ROLE,
    LIGHT_DOWN,
    LIGHT_OK,
    LIGHT_ROLE,
    Column,
)
from ryx_desktop.ui.tray import TrayIcon
from ryx_desktop.ui.window import ManagerWindow
from tests.gui.fixtures_engine import engine_rig, run_on_qt
from tests.gui.hosts_fixtures import HOSTS_CONFIG, hosts_bridge
from tests.gui.window_fixtures import MODELS
from tests.support.hosts_supervisor import HostsSupervisor

REFUSED = "ssh: connect to host gpu2 port 22: Connection refused"


@contextlib.contextmanager
def hosts_window(
    config: dict[str, object] | None = None,
) -> Iterator[tuple[ManagerWindow, HostsSupervisor, EngineBridge]]:
    supervisor = HostsSupervisor(Config.model_validate(config or HOSTS_CONFIG))
    with hosts_bridge(supervisor) as (bridge, _vram):
        window = ManagerWindow(bridge)
        try:
            yield window, supervisor, bridge
        finally:
            window.log_view.stop()
            window.deleteLater()


def rows(window: ManagerWindow) -> list[str]:
    """Each row as ``[host]`` for a header or the model's key."""
    model = window.model
    out = []
    for row in range(model.rowCount()):
        key = model.key_at(row)
        out.append(key if key is not None else f"[{model.index(row, 0).data(HOST_ROLE)}]")
    return out


def header_cell(window: ManagerWindow, host: str) -> tuple[str, str, str | None]:
    """(text, tooltip, light) of ``host``'s header."""
    row = window.model.header_row(host)
    assert row is not None, f"no header for {host!r}"
    index = window.model.index(row, Column.STATE)
    return (
        index.data(Qt.ItemDataRole.DisplayRole),
        index.data(Qt.ItemDataRole.ToolTipRole),
        index.data(LIGHT_ROLE),
    )


def light_colour(window: ManagerWindow, host: str) -> QColor:
    """The colour at the centre of the dot drawn on ``host``'s header."""
    row = window.model.header_row(host)
    assert row is not None
    pixmap = window.model.index(row, Column.STATE).data(Qt.ItemDataRole.DecorationRole)
    assert isinstance(pixmap, QPixmap)
    image = pixmap.toImage()
    return image.pixelColor(image.width() // 2, image.height() // 2)


def test_group_rows_is_flat_with_one_host_and_grouped_with_several() -> None:
    config = Config.model_validate(HOSTS_CONFIG)
    supervisor = HostsSupervisor(config)
    instances = {inst.key: inst for inst in supervisor.instances()}
    keys = list(config.models)
    assert group_rows(keys, instances, ("local",)) == keys
    assert group_rows(keys, instances, ("local", "gpu2", "gpu3")) == [
        HostHeader("local"),
        "a",
        "b",
        HostHeader("gpu2"),
        "big",
        HostHeader("gpu3"),  # a host with no model still shows (and its light)
        HostHeader("any"),
        "c",
        HostHeader(""),
        "remote",
    ]


def test_models_are_grouped_under_a_header_per_host(qapp: QApplication) -> None:
    with hosts_window() as (window, _supervisor, _bridge):
        assert rows(window) == [
            "[local]",
            "a",
            "b",
            "[gpu2]",
            "big",
            "[any]",
            "c",
            "[]",
            "remote",
        ]
        model = window.model
        assert header_cell(window, "local")[:2] == (
            "local \u00b7 2 models",
            "local: its Docker engine answers",
        )
        assert header_cell(window, "gpu2")[0] == "gpu2 \u00b7 1 model"
        assert header_cell(window, "any")[0].startswith("Any host \u00b7 1 model")
        assert header_cell(window, "")[0] == "Other servers \u00b7 1 model"
        assert header_cell(window, "any")[2] is None and header_cell(window, "")[2] is None
        # Each header is one cell across the table, and cannot be selected.
        for row in model.header_rows():
            assert window.table.columnSpan(row, 0) == len(Column)
            flags = model.flags(model.index(row, 0))
            assert not flags & Qt.ItemFlag.ItemIsSelectable
        assert window.table.columnSpan(model.row_of("a") or 0, 0) == 1
        # The first model's row is current, not the header above it.
        assert window.current_key() == "a"
        window.select_model("big")
        assert window.current_key() == "big"
        assert window.action("start").isEnabled()
        # A header made current (the keyboard can) is no model: model actions are off.
        header = model.index(model.header_row("gpu2") or 0, 0)
        window.table.selectionModel().setCurrentIndex(
            header, QItemSelectionModel.SelectionFlag.NoUpdate
        )
        assert window.current_key() is None
        assert not window.action("start").isEnabled()
        assert not window.action("edit").isEnabled()


def test_details_name_the_host_of_a_model(qapp: QApplication) -> None:
    with hosts_window() as (window, _supervisor, _bridge):
        window.select_model("big")
        assert "Host\ngpu2\n" in window.details.toPlainText()
        window.select_model("c")
        assert "Host\nAny host\n" in window.details.toPlainText()
        window.select_model("a")
        assert "Host\nlocal\n" in window.details.toPlainText()


def test_a_host_light_turns_red_with_the_reason_and_green_again(qapp: QApplication) -> None:
    with hosts_window() as (window, supervisor, bridge):
        heard: list[tuple[str, object]] = []
        bridge.hostChanged.connect(lambda host, problem: heard.append((host, problem)))
        assert header_cell(window, "gpu2")[2] == LIGHT_OK
        assert light_colour(window, "gpu2") == GREEN

        supervisor.set_host_problem("gpu2", REFUSED)
        supervisor.set("big", state=InstanceState.UNREACHABLE, note=REFUSED)
        assert heard == [("gpu2", REFUSED)]
        text, tip, light = header_cell(window, "gpu2")
        assert light == LIGHT_DOWN
        assert text == f"gpu2 \u00b7 1 model \u00b7 unreachable: {REFUSED}"
        assert tip == f"gpu2: its Docker engine does not answer: {REFUSED}"
        assert light_colour(window, "gpu2") == RED
        assert header_cell(window, "local")[2] == LIGHT_OK  # the other host is not touched
        big = window.model.index(window.model.row_of("big") or 0, Column.STATE)
        assert big.data() == "unreachable"
        assert REFUSED in big.data(Qt.ItemDataRole.ToolTipRole)

        supervisor.set_host_problem("gpu2", None)
        supervisor.set("big", state=InstanceState.STOPPED, note="")
        assert header_cell(window, "gpu2")[:3] == (
            "gpu2 \u00b7 1 model",
            "gpu2: its Docker engine answers",
            LIGHT_OK,
        )
        assert light_colour(window, "gpu2") == GREEN


def test_a_model_placed_on_a_host_moves_to_its_group_and_stays_current(
    qapp: QApplication,
) -> None:
    with hosts_window() as (window, supervisor, _bridge):
        window.select_model("c")
        supervisor.set("c", host="gpu2", state=InstanceState.STARTING)
        assert rows(window) == ["[local]", "a", "b", "[gpu2]", "big", "c", "[]", "remote"]
        assert window.current_key() == "c"
        assert header_cell(window, "gpu2")[0] == "gpu2 \u00b7 2 models"
        assert all(window.table.columnSpan(r, 0) == len(Column) for r in window.model.header_rows())
        assert window.table.columnSpan(window.model.row_of("c") or 0, 0) == 1


def test_a_host_added_to_the_config_gets_its_header(qapp: QApplication) -> None:
    with hosts_window() as (window, supervisor, _bridge):
        data = {**HOSTS_CONFIG, "hosts": {**HOSTS_CONFIG["hosts"], "gpu3": {"url": "ssh://gpu3"}}}
        supervisor.reconfigure(Config.model_validate(data))
        assert rows(window)[:6] == ["[local]", "a", "b", "[gpu2]", "big", "[gpu3]"]
        assert header_cell(window, "gpu3")[:3] == (
            "gpu3 \u00b7 0 models",
            "gpu3: its Docker engine answers",
            LIGHT_OK,
        )
        supervisor.set_host_problem("gpu3", "no route to host")
        assert header_cell(window, "gpu3")[2] == LIGHT_DOWN


def test_with_only_the_local_host_the_table_is_one_flat_list(qapp: QApplication) -> None:
    async def scenario() -> None:
        async with engine_rig(MODELS) as rig:
            window = ManagerWindow(rig.bridge)
            try:
                model = window.model
                assert rig.bridge.hosts() == ("local",)
                assert not model.grouped and model.header_rows() == []
                assert [model.key_at(r) for r in range(model.rowCount())] == list(MODELS)
                assert window.table.columnSpan(0, 0) == 1
                assert window.current_key() == "a"
                assert "Host" not in window.details.toPlainText()
                assert model.index(0, Column.STATE).data(LIGHT_ROLE) is None
            finally:
                window.log_view.stop()
                window.deleteLater()

    run_on_qt(qapp, scenario())


def test_the_tray_menu_names_the_host_of_a_model_elsewhere(qapp: QApplication) -> None:
    supervisor = HostsSupervisor(Config.model_validate(HOSTS_CONFIG))
    with hosts_bridge(supervisor) as (bridge, _vram):
        tray = TrayIcon(bridge)
        supervisor.set("big", state=InstanceState.READY)
        supervisor.set("c", state=InstanceState.READY, host="gpu2")
        tray.menu.popup(QPoint(0, 0))
        tray.menu.hide()
        titles = {key: tray.action(f"menu:{key}") for key in ("a", "big", "c")}
        texts = {key: a.text() for key, a in titles.items() if a is not None}
        assert texts["a"].startswith("a — ")  # this machine's: as before
        assert texts["big"].startswith("big on gpu2 — ready")
        assert texts["c"].startswith("c on gpu2 — ready")  # host: any, placed on gpu2
        tray.deleteLater()
