"""State colours and the tray icon, drawn from a model's state (no image files needed).

Green: ready; amber: starting, waking or stopping (with a progress ring when the load % is
known); indigo: asleep (vLLM's sleep mode: the GPU is free, a wake takes about a second);
red: failed, unhealthy or unreachable; grey: nothing runs.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap

from ryx_desktop.core.states import InstanceState

GREEN = QColor("#2e9e4f")
AMBER = QColor("#f0a020")
RED = QColor("#d23c3c")
GREY = QColor("#8a8f98")
INDIGO = QColor("#4c5fd5")

_COLOURS: dict[InstanceState, QColor] = {
    InstanceState.READY: GREEN,
    InstanceState.STARTING: AMBER,
    InstanceState.STOPPING: AMBER,
    InstanceState.SLEEPING: INDIGO,
    InstanceState.UNHEALTHY: RED,
    InstanceState.FAILED: RED,
    InstanceState.UNREACHABLE: RED,
    InstanceState.STOPPED: GREY,
}


def state_colour(state: InstanceState | None) -> QColor:
    """The light colour of ``state`` (grey for None: nothing selected or nothing runs)."""
    return QColor(_COLOURS.get(state, GREY)) if state is not None else QColor(GREY)


def state_pixmap(
    state: InstanceState | None, progress: float | None = None, size: int = 64
) -> QPixmap:
    """A filled disc in the state's colour; a ring shows ``progress`` (0 to 100) while loading."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        ring = max(2.0, size / 10)
        outer = QRectF(ring / 2, ring / 2, size - ring, size - ring)
        inner = outer.adjusted(ring * 1.5, ring * 1.5, -ring * 1.5, -ring * 1.5)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(state_colour(state))
        painter.drawEllipse(inner if progress is not None else outer)
        if progress is not None:
            track = QPen(QColor(0, 0, 0, 60), ring)
            painter.setPen(track)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(outer)
            done = QPen(state_colour(state), ring)
            done.setCapStyle(Qt.PenCapStyle.FlatCap)
            painter.setPen(done)
            span = int(-360 * 16 * max(0.0, min(100.0, progress)) / 100)
            painter.drawArc(outer, 90 * 16, span)
    finally:
        painter.end()
    return pixmap


def state_icon(state: InstanceState | None, progress: float | None = None) -> QIcon:
    """The tray icon for the selected model's state (see ``state_pixmap``)."""
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64):
        icon.addPixmap(state_pixmap(state, progress, size))
    return icon
