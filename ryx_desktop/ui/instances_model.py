"""The manager window's table: one row per configured model, read from the bridge's snapshots.

``InstancesTableModel`` turns :class:`~ryx_desktop.core.states.Instance` snapshots, the config
and the latest VRAM report into cells; ``ProgressDelegate`` paints a progress bar in the state
cell while a model starts (pulling the image, then vLLM's load percent) or wakes. A sleeping
model's state reads ``sleeping (level 1)`` in the sleep colour; its VRAM cell shows what it
still holds on the GPU.

With more than one Docker engine (``hosts:``) the models are grouped under a header row per
host, in the bridge's order: the header (one cell spanning the row, for the window to span)
names the host with a status light, green while its engine answers and red with the reason
when it does not. A ``host: any`` model not placed yet sits under "Any host", external
servers under "Other servers". Header rows cannot be selected and have no model key; with only
the local engine there are none and the table is one flat list.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
)
from PySide6.QtGui import QFont, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.gpu import NO_GPU, VramReport
from ryx_desktop.core.spec import ANY_HOST
from ryx_desktop.core.states import Instance, InstanceState, Progress, ProgressPhase
from ryx_desktop.core.supervisor import configured_instance
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.host_groups import HostHeader, Row, group_of, group_rows, host_title
from ryx_desktop.ui.icons import state_colour, state_pixmap
from ryx_desktop.ui.state_text import sleep_detail, state_word

#: The load percent (0 to 100) while a model starts, -1 while starting with no figure, else None.
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1
#: The progress text shown in the bar ("loading 60 %"), or None when not starting.
PROGRESS_TEXT_ROLE = Qt.ItemDataRole.UserRole + 2
#: True on the row of the selected model (the one answering requests that name no model).
SELECTED_ROLE = Qt.ItemDataRole.UserRole + 3
#: The model key of the row.
KEY_ROLE = Qt.ItemDataRole.UserRole + 4
#: On a host's header row: the host ("" for the other servers); None on a model's row.
HOST_ROLE = Qt.ItemDataRole.UserRole + 5
#: On a host's header row: its light, ``LIGHT_OK`` or ``LIGHT_DOWN`` (None: no light).
LIGHT_ROLE = Qt.ItemDataRole.UserRole + 6

LIGHT_OK = "ok"  # the host's Docker engine answers (or is not known yet)
LIGHT_DOWN = "down"  # it does not: the header says why

NONE = "\u2014"  # em dash: nothing to show (not running, not applicable)
SELECTED_MARK = "\u2605 "  # a star before the selected model's name
GIB = 1024**3
_DOT_SIZE = 12


class Column(enum.IntEnum):
    STATE = 0
    NAME = enum.auto()
    SERVED = enum.auto()
    CATEGORY = enum.auto()
    SIZE = enum.auto()
    PORT = enum.auto()
    BUDGET = enum.auto()
    VRAM = enum.auto()
    REQUESTS = enum.auto()
    UPTIME = enum.auto()


HEADERS: dict[Column, str] = {
    Column.STATE: "State",
    Column.NAME: "Name",
    Column.SERVED: "Served name",
    Column.CATEGORY: "Category",
    Column.SIZE: "Size",
    Column.PORT: "Port",
    Column.BUDGET: "GPU budget",
    Column.VRAM: "VRAM used",
    Column.REQUESTS: "Requests (run / wait)",
    Column.UPTIME: "Uptime",
}


def progress_text(progress: Progress | None) -> str:
    """What a starting model is doing, e.g. ``pulling image 40 %`` or ``loading 60 %``."""
    if progress is None:
        return "starting"
    words = {
        ProgressPhase.PULL: "pulling image",
        ProgressPhase.CREATE: "creating container",
        ProgressPhase.LOAD: "loading",
        ProgressPhase.WAKE: "waking",
    }[progress.phase]
    return f"{words} {progress.percent:.0f} %" if progress.percent is not None else words


def format_uptime(seconds: float) -> str:
    """``h:mm:ss`` (hours are not wrapped at 24)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def format_gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _count(value: float | None) -> str:
    return "N/A" if value is None else f"{value:g}"


class InstancesTableModel(QAbstractTableModel):
    """Every configured model as a row; cells update from the bridge's signals."""

    def __init__(
        self,
        bridge: EngineBridge,
        clock: Callable[[], float] = time.monotonic,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clock = clock
        self._config = bridge.config
        self._keys: list[str] = []
        self._instances: dict[str, Instance] = {}
        self._hosts: tuple[str, ...] = ()
        self._rows: list[Row] = []
        self._row_index: dict[Row, int] = {}
        self._selected = bridge.selected()
        self._load()
        bridge.instanceChanged.connect(self._on_instance)
        bridge.vramChanged.connect(self._on_vram)
        bridge.selectionChanged.connect(self._on_selection)
        bridge.configChanged.connect(self._on_config)
        bridge.hostChanged.connect(self._on_host)

    # ---- lookups ------------------------------------------------------------------------------

    def key_at(self, row: int) -> str | None:
        """The model key of ``row``; None for a header row or no row."""
        item = self._rows[row] if 0 <= row < len(self._rows) else None
        return item if isinstance(item, str) else None

    def row_of(self, key: str) -> int | None:
        return self._row_index.get(key)

    def first_key(self) -> str | None:
        """The key of the first model's row (None: no model)."""
        return next((item for item in self._rows if isinstance(item, str)), None)

    @property
    def grouped(self) -> bool:
        """True when the models are grouped under a header row per host."""
        return len(self._hosts) > 1

    def hosts(self) -> tuple[str, ...]:
        """The hosts the bridge knew at the last reset, in order."""
        return self._hosts

    def header_rows(self) -> list[int]:
        """The rows that are group headers (a view spans them over every column)."""
        return [row for row, item in enumerate(self._rows) if isinstance(item, HostHeader)]

    def header_row(self, host: str) -> int | None:
        """The header row of ``host``'s group ("" for the other servers); None: no such row."""
        return self._row_index.get(HostHeader(host))

    def host_light(self, host: str) -> str | None:
        """``LIGHT_OK`` or ``LIGHT_DOWN`` for a host the bridge knows; None for the others."""
        if host not in self._hosts:
            return None
        return LIGHT_OK if self._bridge.host_problem(host) is None else LIGHT_DOWN

    def instance_at(self, row: int) -> Instance | None:
        key = self.key_at(row)
        return self._instances.get(key) if key is not None else None

    @property
    def config(self) -> Config:
        """The config the rows come from (the latest one applied)."""
        return self._config

    def model_keys(self) -> list[str]:
        return list(self._keys)

    # ---- QAbstractTableModel -----------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)] if 0 <= section < len(Column) else None
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if index.isValid() and self.key_at(index.row()) is None:
            return Qt.ItemFlag.ItemIsEnabled  # a header: never selected, never current
        return super().flags(index)

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if index.isValid() and 0 <= index.row() < len(self._rows):
            item = self._rows[index.row()]
            if isinstance(item, HostHeader):
                return self._header_data(item.host, Column(index.column()), role)
        inst = self.instance_at(index.row()) if index.isValid() else None
        if inst is None:
            return None
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(inst, column)
        if role == KEY_ROLE:
            return inst.key
        if role == SELECTED_ROLE:
            return inst.key == self._selected
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(inst, column)
        if column is Column.STATE:
            return self._state_data(inst, role)
        if (
            column is Column.NAME
            and role == Qt.ItemDataRole.FontRole
            and inst.key == self._selected
        ):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column in _NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _state_data(self, inst: Instance, role: int) -> Any:
        if role == Qt.ItemDataRole.DecorationRole:
            return state_pixmap(inst.state, size=_DOT_SIZE)
        if role == Qt.ItemDataRole.ForegroundRole and inst.state in _COLOURED_TEXT:
            return state_colour(inst.state)
        starting = inst.state is InstanceState.STARTING
        if role == PROGRESS_ROLE:
            if not starting:
                return None
            percent = inst.progress.percent if inst.progress is not None else None
            return -1 if percent is None else float(percent)
        if role == PROGRESS_TEXT_ROLE:
            return progress_text(inst.progress) if starting else None
        return None

    def _header_data(self, host: str, column: Column, role: int) -> Any:
        if role == HOST_ROLE:
            return host
        if role == LIGHT_ROLE:
            return self.host_light(host)
        if column is not Column.STATE:  # the first cell spans the row
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._header_text(host)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._header_tooltip(host)
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.DecorationRole:
            light = self.host_light(host)
            if light is None:
                return None
            state = InstanceState.READY if light == LIGHT_OK else InstanceState.UNREACHABLE
            return state_pixmap(state, size=_DOT_SIZE)
        return None

    def _header_text(self, host: str) -> str:
        count = sum(1 for item in self._rows if isinstance(item, str) and self._group(item) == host)
        models = f"{count} model" + ("" if count == 1 else "s")
        text = f"{host_title(host)} \u00b7 {models}"
        if host == ANY_HOST:
            text += ", placed on a host with room when started"
        problem = self._bridge.host_problem(host) if host in self._hosts else None
        return f"{text} \u00b7 unreachable: {problem}" if problem is not None else text

    def _header_tooltip(self, host: str) -> str:
        if host == "":
            return "Servers ryx-desktop only forwards to (url: models)"
        if host not in self._hosts:
            return f"Models on {host_title(host)}"
        problem = self._bridge.host_problem(host)
        if problem is None:
            return f"{host}: its Docker engine answers"
        return f"{host}: its Docker engine does not answer: {problem}"

    # ---- cell texts ----------------------------------------------------------------------------

    def _text(self, inst: Instance, column: Column) -> str:
        model = self._config.models.get(inst.key)
        match column:
            case Column.STATE:
                return state_word(inst)
            case Column.NAME:
                mark = SELECTED_MARK if inst.key == self._selected else ""
                return f"{mark}{inst.name}"
            case Column.SERVED:
                return inst.served_name
            case Column.CATEGORY:
                return model.category if model is not None else NONE
            case Column.SIZE:
                return model.size if model is not None else NONE
            case Column.PORT:
                return str(inst.port) if inst.port is not None else "external"
            case Column.BUDGET:
                budget = inst.gpu_memory_utilization
                if budget is None:
                    return NO_GPU if isinstance(model, ModelConfig) else NONE
                return f"{budget * 100:.0f} %"
            case Column.VRAM:
                return self._vram_text(inst)
            case Column.REQUESTS:
                return self._requests_text(inst)
            case Column.UPTIME:
                if inst.started_at is None or not inst.running:
                    return NONE
                return format_uptime(self._clock() - inst.started_at)

    def _vram_text(self, inst: Instance) -> str:
        if inst.external or not inst.running:
            return NONE
        report = self._bridge.vram()
        used = report.used_by(inst.key) if report is not None else None
        return format_gib(used) if used is not None else "N/A"

    def _requests_text(self, inst: Instance) -> str:
        if not inst.running and inst.state is not InstanceState.READY:
            return NONE
        metrics = inst.metrics
        if metrics is None:
            text = f"{inst.in_flight} / N/A"
        else:
            text = f"{_count(metrics.requests_running)} / {_count(metrics.requests_waiting)}"
        return f"{text} ({inst.in_flight} via proxy)" if inst.in_flight else text

    def _tooltip(self, inst: Instance, column: Column) -> str | None:
        if column is Column.STATE:
            parts = [state_word(inst)]
            if inst.state is InstanceState.SLEEPING and inst.sleep_level is not None:
                parts.append(sleep_detail(inst.sleep_level, inst.host_ram_bytes))
            if inst.state is InstanceState.STARTING and inst.progress is not None:
                if inst.progress.phase is not ProgressPhase.WAKE:  # "waking" said it already
                    parts.append(progress_text(inst.progress))
                if inst.progress.detail:
                    parts.append(inst.progress.detail)
            if inst.failure is not None:
                parts.append(inst.failure.message)
            elif inst.note:
                parts.append(inst.note)
            return ": ".join(parts)
        if column is Column.NAME and inst.key == self._selected:
            return f"{inst.name} is selected: it answers requests that name no model"
        if column is Column.PORT and inst.url:
            return inst.url
        if column is Column.REQUESTS:
            return "requests vLLM is running / waiting to run, and in flight through the proxy"
        return None

    # ---- updates ---------------------------------------------------------------------------------

    def refresh_uptime(self) -> None:
        """Tell views the uptime column changed (the window calls this every second)."""
        self._column_changed(Column.UPTIME)

    def _load(self) -> None:
        self._keys = list(self._config.models)
        known = {inst.key: inst for inst in self._bridge.instances()}
        self._instances = {
            key: known.get(key) or configured_instance(self._config, key) for key in self._keys
        }
        self._hosts = self._bridge.hosts()
        self._layout()

    def _layout(self) -> None:
        self._rows = group_rows(self._keys, self._instances, self._hosts)
        self._row_index = {item: row for row, item in enumerate(self._rows)}

    def _group(self, key: str) -> str:
        return group_of(self._instances[key])

    def _on_instance(self, inst: Instance) -> None:
        row = self.row_of(inst.key)
        if row is None:
            return
        moved = self.grouped and group_of(inst) != self._group(inst.key)
        if moved:  # placed on a host (host: any), or its host changed: it joins another group
            self.beginResetModel()
            self._instances[inst.key] = inst
            self._layout()
            self.endResetModel()
            return
        self._instances[inst.key] = inst
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(Column) - 1))

    def _on_host(self, host: str, _problem: str | None) -> None:
        if host not in self._hosts:  # a host the last reset did not know: lay out again
            if host in self._bridge.hosts():
                self._reset()
            return
        row = self.header_row(host)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(Column) - 1))

    def _on_vram(self, _report: VramReport) -> None:
        self._column_changed(Column.VRAM)

    def _on_selection(self, key: str | None) -> None:
        old, self._selected = self._selected, key
        for changed in {old, key}:
            row = self.row_of(changed) if changed is not None else None
            if row is not None:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(Column) - 1))

    def _on_config(self, config: Config) -> None:
        self.beginResetModel()
        self._config = config
        self._selected = self._bridge.selected()
        self._load()
        self.endResetModel()

    def _reset(self) -> None:
        self.beginResetModel()
        self._load()
        self.endResetModel()

    def _column_changed(self, column: Column) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))


#: States whose text is drawn in the state's colour too (the dot alone is easy to miss).
_COLOURED_TEXT = frozenset({InstanceState.FAILED, InstanceState.SLEEPING})
_NUMERIC = frozenset({Column.PORT, Column.BUDGET, Column.VRAM, Column.REQUESTS, Column.UPTIME})


class ProgressDelegate(QStyledItemDelegate):
    """Paints the state cell as a progress bar while the model starts; otherwise as usual.

    A known percent fills the bar; an unknown one draws a busy (indeterminate) bar.
    """

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        percent = index.data(PROGRESS_ROLE)
        if percent is None:
            super().paint(painter, option, index)
            return
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        widget = item.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, item, painter, widget)
        rect = QRect(item.rect)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if pixmap is not None:
            top = rect.top() + (rect.height() - _DOT_SIZE) // 2
            painter.drawPixmap(rect.left() + 3, top, pixmap)
            rect.setLeft(rect.left() + _DOT_SIZE + 6)
        bar = QStyleOptionProgressBar()
        if widget is not None:
            bar.initFrom(widget)
        bar.rect = rect.adjusted(1, 2, -2, -2)
        bar.minimum = 0
        bar.maximum = 0 if percent < 0 else 100  # 0..0 is "busy"
        bar.progress = 0 if percent < 0 else round(percent)
        bar.text = index.data(PROGRESS_TEXT_ROLE) or ""
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        size = super().sizeHint(option, index)
        return QSize(max(size.width(), 170), size.height())
