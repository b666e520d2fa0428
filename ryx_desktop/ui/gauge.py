"""The VRAM gauge: one painted bar per GPU, and the panel that keeps one gauge per GPU.

The bar holds one coloured segment per model (its measured memory), one for other processes and
one for what is free; brackets above it mark each model's planned budget (its
``gpu_memory_utilization``). The geometry is computed by pure functions (``layout_segments``,
``layout_budgets``) that the widget paints and tests assert on, so no pixel is needed to check
what is drawn. Without a total (no NVIDIA driver) only the budgets are drawn, as fractions of the
bar.

A model asleep (vLLM's sleep mode) keeps a small part of its budget: its segment is what it still
holds, labelled with its sleep level, and its budget is drawn as a plan (dashed, after the awake
models' budgets), like a stopped model's, since a wake takes it back.

With several Docker engines (``hosts:``) each gauge's title starts with its host
(``gpu2 · GPU 0: NVIDIA H200``), and a host whose GPUs could not be read (unreachable, no
nvidia-smi) says why in a line above the gauges while its GPUs show their budgets only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from ryx_desktop.core.gpu import GpuVram, VramReport
from ryx_desktop.core.states import Instance
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.state_text import asleep_level

GIB = 1 << 30
NOT_AVAILABLE = "N/A"
READING_TEXT = "Reading GPUs…"

#: Model colours: Tableau 10 without its grey (other processes) and red (a failed model).
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
)
OTHER_COLOUR = "#8a8f98"
FREE_COLOUR = "#e4e7eb"
UNKNOWN_COLOUR = "#c8ccd2"

SegmentKind = Literal["model", "other", "free"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the bar, from ``x_start`` to ``x_end`` (fractions of its width, 0 to 1)."""

    label: str
    kind: SegmentKind
    key: str | None  # the model's key for kind "model"
    bytes: int | None
    x_start: float
    x_end: float
    colour: str


@dataclass(frozen=True, slots=True)
class BudgetMark:
    """A model's planned share, drawn as a bracket over ``x_start`` to ``x_end`` in lane ``row``.

    Budgets are laid side by side in the order of the bar's segments (a running vLLM fills its
    budget, so each bracket sits over its model's segment); one that no longer fits starts a new
    lane, as models that only take turns on the GPU (exclusive policy) do.
    """

    key: str
    label: str
    fraction: float
    bytes: int | None  # fraction x total; None when the total is unknown
    x_start: float
    x_end: float
    row: int
    running: bool  # holds its budget now (running and awake)
    colour: str
    sleep_level: int | None = None  # asleep at this level (its budget is only planned)


def format_gib(value: int | None) -> str:
    """``12.3 GiB``, or ``N/A`` for an unknown value."""
    return NOT_AVAILABLE if value is None else f"{value / GIB:.1f} GiB"


def model_colours(keys: Iterable[str]) -> dict[str, str]:
    """A distinct palette colour per key, the same one whenever the same keys are drawn.

    A key starts at the colour its CRC picks; a clash moves it on to the next free colour
    (keys are visited sorted, so the outcome does not depend on their order).
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    for key in sorted(set(keys)):
        start = zlib.crc32(key.encode("utf-8")) % len(PALETTE)
        for step in range(len(PALETTE)):
            colour = PALETTE[(start + step) % len(PALETTE)]
            if colour not in taken:
                break
        else:  # more models than colours: share
            colour = PALETTE[start]
        taken.add(colour)
        out[key] = colour
    return out


def gpu_title(gpu: GpuVram, with_host: bool = False) -> str:
    """``GPU 0: NVIDIA H200`` (just ``GPU 0`` when the name says no more); ``with_host``:
    ``gpu2 · GPU 0: NVIDIA H200``."""
    prefix = f"GPU {gpu.index}"
    title = prefix if not gpu.name or gpu.name == prefix else f"{prefix}: {gpu.name}"
    return f"{gpu.host} \u00b7 {title}" if with_host else title


def report_text(report: VramReport) -> str:
    """The line(s) above the gauges: why no GPU was read (with the hint), then each host whose
    GPUs could not be read and why; "" when there is nothing to say."""
    lines: list[str] = []
    if not report.found:
        lines.append(report.message if not report.hint else f"{report.message}\n{report.hint}")
    for problem in report.host_problems:
        line = f"{problem.host}: {problem.message}"
        lines.append(f"{line} ({problem.hint})" if problem.hint else line)
    return "\n".join(lines)


def gpu_summary(gpu: GpuVram) -> str:
    """``55.0 GiB / 80.0 GiB used, utilisation 37%`` with N/A for what is unknown."""
    util = NOT_AVAILABLE if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f}%"
    return f"{format_gib(gpu.used_bytes)} / {format_gib(gpu.total_bytes)} used, utilisation {util}"


def _measured(gpu: GpuVram) -> list[tuple[str, str, int]]:
    """(key, name, bytes) of the models with memory measured on this GPU, in report order."""
    return [(m.key, m.name or m.key, m.used_bytes) for m in gpu.models if m.used_bytes]


def _asleep_words(level: int | None) -> str:
    return "" if level is None else f" asleep (level {level})"


def layout_segments(
    gpu: GpuVram, colours: dict[str, str], asleep: Mapping[str, int] | None = None
) -> list[Segment]:
    """Models, other processes, then free, left to right; [] when the GPU's total is unknown.

    ``asleep`` maps a sleeping model's key to its sleep level: its label says so.
    """
    asleep = asleep or {}
    total = gpu.total_bytes
    if not total or total <= 0:
        return []
    out: list[Segment] = []
    x = 0.0

    def add(kind: SegmentKind, label: str, key: str | None, value: int, colour: str) -> None:
        nonlocal x
        width = min(value / total, 1.0 - x)
        if width <= 0:
            return
        out.append(Segment(label, kind, key, value, x, x + width, colour))
        x += width

    for key, name, used in _measured(gpu):
        label = f"{name} {format_gib(used)}{_asleep_words(asleep.get(key))}"
        add("model", label, key, used, colours.get(key, PALETTE[0]))
    other = gpu.other_bytes
    if other:
        add("other", f"other processes {format_gib(other)}", None, other, OTHER_COLOUR)
    free = gpu.free_bytes
    if free is None and gpu.used_bytes is not None:
        free = max(0, total - gpu.used_bytes)
    if x < 1.0:
        out.append(Segment(f"free {format_gib(free)}", "free", None, free, x, 1.0, FREE_COLOUR))
    return out


def layout_budgets(
    gpu: GpuVram, colours: dict[str, str], asleep: Mapping[str, int] | None = None
) -> list[BudgetMark]:
    """One bracket per model with a budget: awake measured models first (as on the bar), then
    the rest. A sleeping model (``asleep``: key to level) holds only a little of its budget, so
    its bracket is a plan like a stopped model's, not stacked with the budgets held now."""
    asleep = asleep or {}
    holding = {key for key, _, _ in _measured(gpu) if key not in asleep}
    ordered = [m for m in gpu.models if m.key in holding]
    ordered += [m for m in gpu.models if m.key not in holding]
    total = gpu.total_bytes if gpu.total_bytes and gpu.total_bytes > 0 else None
    out: list[BudgetMark] = []
    x, row = 0.0, 0
    for model in ordered:
        if model.budget_fraction is None or model.budget_fraction <= 0:
            continue
        fraction = min(model.budget_fraction, 1.0)
        if x > 0 and x + fraction > 1.0 + 1e-9:
            x, row = 0.0, row + 1
        planned = round(fraction * total) if total is not None else None
        label = f"{model.name or model.key}: planned {fraction:.0%}"
        if planned is not None:
            label += f" ({format_gib(planned)})"
        level = asleep.get(model.key)
        label += f", {_asleep_words(level).strip()}" if level is not None else ""
        colour = colours.get(model.key, PALETTE[0])
        holds = model.running and level is None
        out.append(
            BudgetMark(
                model.key, label, fraction, planned, x, x + fraction, row, holds, colour, level
            )
        )
        x += fraction
    return out


class GpuGauge(QWidget):
    """One GPU: its name and figures on a line, budget brackets, then the segmented bar."""

    MARGIN = 4
    LANE_HEIGHT = 8
    BAR_HEIGHT = 24

    def __init__(self, gpu: GpuVram | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._gpu: GpuVram | None = None
        self._asleep: dict[str, int] = {}
        self._colours: dict[str, str] = {}
        self._with_host = False
        if gpu is not None:
            self.set_gpu(gpu)

    @property
    def gpu(self) -> GpuVram | None:
        return self._gpu

    def set_gpu(
        self, gpu: GpuVram, asleep: Mapping[str, int] | None = None, *, with_host: bool = False
    ) -> None:
        """Show ``gpu``; ``asleep`` maps the keys of sleeping models to their sleep level;
        ``with_host``: the title names the GPU's host."""
        asleep = dict(asleep or {})
        if gpu == self._gpu and asleep == self._asleep and with_host == self._with_host:
            return
        lanes_before = self._lanes()
        self._gpu = gpu
        self._asleep = asleep
        self._with_host = with_host
        self._colours = model_colours(m.key for m in gpu.models)
        self.setAccessibleName(self.title())
        self.setAccessibleDescription(gpu_summary(gpu))
        if self._lanes() != lanes_before:
            self.updateGeometry()
        self.update()

    # ---- geometry (pure, what tests assert on) -----------------------------------------------

    def colour_of(self, key: str) -> str:
        return self._colours.get(key, PALETTE[0])

    def segments(self) -> list[Segment]:
        if self._gpu is None:
            return []
        return layout_segments(self._gpu, self._colours, self._asleep)

    def budget_marks(self) -> list[BudgetMark]:
        if self._gpu is None:
            return []
        return layout_budgets(self._gpu, self._colours, self._asleep)

    def title(self) -> str:
        return gpu_title(self._gpu, self._with_host) if self._gpu is not None else ""

    def summary(self) -> str:
        return gpu_summary(self._gpu) if self._gpu is not None else ""

    def tooltip_at(self, fraction: float) -> str:
        """What lies at ``fraction`` of the bar's width: the segment, then the budgets over it."""
        lines = [s.label for s in self.segments() if s.x_start <= fraction < s.x_end]
        lines += [m.label for m in self.budget_marks() if m.x_start <= fraction < m.x_end]
        return "\n".join(lines)

    def bar_rect(self) -> QRect:
        """Where the bar is painted, in widget coordinates."""
        top = self.MARGIN + self._text_height() + self.MARGIN + self._lanes() * self.LANE_HEIGHT
        return QRect(self.MARGIN, top, max(1, self.width() - 2 * self.MARGIN), self.BAR_HEIGHT)

    def _lanes(self) -> int:
        marks = self.budget_marks()
        return max(m.row for m in marks) + 1 if marks else 0

    def _text_height(self) -> int:
        return QFontMetrics(self.font()).height()

    # ---- Qt ----------------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        lanes = max(1, self._lanes())
        height = 3 * self.MARGIN + self._text_height() + lanes * self.LANE_HEIGHT + self.BAR_HEIGHT
        return QSize(420, height)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, self.sizeHint().height())

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            bar = self.bar_rect()
            text = ""
            if bar.left() <= event.pos().x() <= bar.right():
                text = self.tooltip_at((event.pos().x() - bar.left()) / bar.width())
            if text:
                QToolTip.showText(event.globalPos(), text, self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        if self._gpu is None:
            return
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        palette = self.palette()
        self._paint_heading(painter)
        bar = self.bar_rect()
        segments = self.segments()
        marks = self.budget_marks()
        if segments:
            for seg in segments:
                rect = self._span(bar, seg.x_start, seg.x_end)
                painter.fillRect(rect, QColor(seg.colour))
                self._bar_text(painter, rect, seg.label, seg.colour)
        else:  # no total: the planned budgets are all there is to show
            painter.fillRect(bar, QColor(UNKNOWN_COLOUR))
            for mark in marks:
                rect = self._span(bar, mark.x_start, mark.x_end)
                painter.fillRect(rect, QBrush(QColor(mark.colour), Qt.BrushStyle.BDiagPattern))
            for mark in marks:
                if mark.row == 0:  # later lanes overlap it on the bar
                    rect = self._span(bar, mark.x_start, mark.x_end)
                    self._bar_text(painter, rect, mark.label, UNKNOWN_COLOUR)
        painter.setPen(QPen(palette.mid().color(), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(bar.adjusted(0, 0, -1, -1))

        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for mark in marks:
            self._bracket(painter, bar, mark)

    def _paint_heading(self, painter: QPainter) -> None:
        """The bold title on the left, elided to leave room for the figures on the right."""
        metrics = QFontMetrics(self.font())
        line = QRect(self.MARGIN, self.MARGIN, self.width() - 2 * self.MARGIN, metrics.height())
        summary = self.summary()
        painter.setPen(self.palette().windowText().color())
        painter.drawText(line, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, summary)
        bold = QFont(self.font())
        bold.setBold(True)
        room = max(0, line.width() - metrics.horizontalAdvance(summary) - 12)
        title = QFontMetrics(bold).elidedText(self.title(), Qt.TextElideMode.ElideRight, room)
        painter.setFont(bold)
        painter.drawText(line, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        painter.setFont(self.font())

    def _span(self, bar: QRect, start: float, end: float) -> QRectF:
        return QRectF(
            bar.left() + start * bar.width(), bar.top(), (end - start) * bar.width(), bar.height()
        )

    def _bar_text(self, painter: QPainter, rect: QRectF, label: str, background: str) -> None:
        metrics = QFontMetrics(self.font())
        room = int(rect.width()) - 6
        if room < metrics.horizontalAdvance("0.0 GiB"):
            return
        text = metrics.elidedText(label, Qt.TextElideMode.ElideRight, room)
        painter.setPen(QColor("#ffffff" if _is_dark(background) else "#1f2933"))
        painter.drawText(
            rect.adjusted(3, 0, -3, 0),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            text,
        )

    def _bracket(self, painter: QPainter, bar: QRect, mark: BudgetMark) -> None:
        # Lane 0 sits right above the bar, later lanes further up.
        y = bar.top() - 2 - mark.row * self.LANE_HEIGHT
        left = bar.left() + mark.x_start * bar.width() + 1
        right = bar.left() + mark.x_end * bar.width() - 1
        pen = QPen(QColor(mark.colour), 2)
        if not mark.running:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        tick = self.LANE_HEIGHT - 3
        painter.drawPolyline(
            [
                QPointF(left, y),
                QPointF(left, y - tick),
                QPointF(right, y - tick),
                QPointF(right, y),
            ]
        )


def _is_dark(colour: str) -> bool:
    c = QColor(colour)
    return 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue() < 150


class VramPanel(QWidget):
    """Every GPU of the latest VRAM report, one ``GpuGauge`` each, with the report's message.

    The models' sleep levels come from the bridge's snapshots (the report has none).
    """

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._report: VramReport | None = None
        self._asleep: dict[str, int] = {}
        for inst in bridge.instances():
            level = asleep_level(inst)
            if level is not None:
                self._asleep[inst.key] = level
        self._message = QLabel(READING_TEXT, self)
        self._message.setWordWrap(True)
        self._message.setTextFormat(Qt.TextFormat.PlainText)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addWidget(self._message)
        self._layout.addStretch(1)
        self._gauges: list[GpuGauge] = []
        bridge.vramChanged.connect(self.render_report)
        bridge.instanceChanged.connect(self._on_instance)
        self.render_report(bridge.vram())

    def gauges(self) -> list[GpuGauge]:
        return list(self._gauges)

    def message_text(self) -> str:
        """The line above the gauges ("" when hidden)."""
        return self._message.text() if not self._message.isHidden() else ""

    def render_report(self, report: VramReport | None) -> None:
        """Show ``report`` (None: no report yet)."""
        self._report = report
        if report is None:
            self._message.setText(READING_TEXT)
            self._message.show()
            self._set_gauges(())
            return
        text = report_text(report)
        if text:
            self._message.setText(text)
            self._message.show()
        else:
            self._message.hide()
        self._set_gauges(report.gpus)

    def _set_gauges(self, gpus: tuple[GpuVram, ...]) -> None:
        while len(self._gauges) > len(gpus):
            gauge = self._gauges.pop()
            self._layout.removeWidget(gauge)
            gauge.hide()
            gauge.deleteLater()
        while len(self._gauges) < len(gpus):
            gauge = GpuGauge(parent=self)
            # before the stretch at the end
            self._layout.insertWidget(self._layout.count() - 1, gauge)
            self._gauges.append(gauge)
        with_host = self._report is not None and self._report.several_hosts
        for gauge, gpu in zip(self._gauges, gpus, strict=True):
            gauge.set_gpu(gpu, self._asleep, with_host=with_host)

    def _on_instance(self, inst: Instance) -> None:
        level = asleep_level(inst)
        if self._asleep.get(inst.key) == level:
            return
        if level is None:
            del self._asleep[inst.key]
        else:
            self._asleep[inst.key] = level
        if self._report is not None:
            self._set_gauges(self._report.gpus)
