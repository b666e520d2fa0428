"""The live log of one model's container, as the manager window shows it.

``LogView`` follows ``bridge.follow_logs(key)`` in an asyncio task on the running loop and
appends lines in batches (at most one append per ``flush_ms``), so a chatty log never floods the
Qt thread. Scrollback is bounded (``max_lines``). Pause keeps following but holds new lines back
in a buffer bounded by the same limit; Resume shows them, with a note saying how many older
lines were dropped when the buffer overflowed. A new container for the model (a restart) is
followed automatically. vLLM's access-log lines for ryx-desktop's own probes (``GET /health``
every few seconds) are left out; ``ryx-desktop logs`` shows the raw log.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.core.access_log import is_probe_access_line
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.states import Instance
from ryx_desktop.ui.bridge import EngineBridge

DEFAULT_MAX_LINES = 5000
DEFAULT_TAIL = 500


class Clipboard(Protocol):
    """Where Copy puts text (a ``QClipboard`` in the app)."""

    def setText(self, text: str, /) -> None: ...


class LogView(QWidget):
    """The followed model's log: read-only, bounded, with Pause and Copy."""

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        clipboard: Clipboard | None = None,
        max_lines: int = DEFAULT_MAX_LINES,
        tail: int = DEFAULT_TAIL,
        flush_ms: int = 50,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clipboard = clipboard
        self._max_lines = max_lines
        self._tail = tail
        self._key: str | None = None
        self._container_id: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._generation = 0
        self._pending: deque[str] = deque(maxlen=max_lines)
        self._dropped = 0
        self._paused = False

        self._label = QLabel("No model selected", self)
        self._label.setObjectName("log-label")
        self._pause = QPushButton("Pause", self)
        self._pause.setObjectName("log-pause")
        self._pause.setCheckable(True)
        self._pause.toggled.connect(self.set_paused)
        self._copy = QPushButton("Copy", self)
        self._copy.setObjectName("log-copy")
        self._copy.setToolTip("Copy the selected lines, or the whole log when none are selected")
        self._copy.clicked.connect(self.copy)
        self._text = QPlainTextEdit(self)
        self._text.setObjectName("log-text")
        self._text.setReadOnly(True)
        self._text.setMaximumBlockCount(max_lines)
        self._text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self._text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))

        bar = QHBoxLayout()
        bar.addWidget(self._label, 1)
        bar.addWidget(self._pause)
        bar.addWidget(self._copy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self._text)

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(flush_ms)
        self._flush_timer.timeout.connect(self.flush)
        bridge.instanceChanged.connect(self._on_instance)

    # ---- what is followed --------------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """The model whose log is shown (None: none)."""
        return self._key

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def held_lines(self) -> int:
        """Lines received but not shown yet (waiting for the next flush, or paused)."""
        return len(self._pending)

    @property
    def text_edit(self) -> QPlainTextEdit:
        return self._text

    def text(self) -> str:
        """Everything the view shows now."""
        return self._text.toPlainText()

    def follow(self, key: str | None) -> None:
        """Show model ``key``'s log from its recent tail on; None shows nothing.

        Following the model shown already changes nothing (a new container is picked up by
        itself), so what a stopped container last wrote stays readable.
        """
        if key == self._key:
            return
        self.stop()
        self._key = key
        self._text.clear()
        self._pending.clear()
        self._dropped = 0
        if key is None:
            self._container_id = None
            self._label.setText("No model selected")
            return
        try:
            inst = self._bridge.instance(key)
        except RyxError:
            self._container_id = None
            self._label.setText(f"{key}: not configured")
            return
        self._container_id = inst.container_id
        self._start(inst)

    def stop(self) -> None:
        """Stop following (what is shown stays)."""
        self._generation += 1
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop()
        super().closeEvent(event)

    def _start(self, inst: Instance) -> None:
        if inst.container_id is None:
            if inst.failure is not None and inst.failure.log_tail:
                self._label.setText(f"{inst.name} failed: its last log lines")
                for line in inst.failure.log_tail:
                    if not is_probe_access_line(line):
                        self._receive(line)
            else:
                self._label.setText(f"{inst.name}: not running, no log to follow")
            return
        self._label.setText(f"Log of {inst.name} ({inst.key}), container {inst.container_id}")
        self._task = self._bridge.spawn(self._consume(inst.key, self._generation))

    async def _consume(self, key: str, generation: int) -> None:
        stream = self._bridge.follow_logs(key, self._tail)
        try:
            async for line in stream:
                if generation != self._generation:
                    return
                if not is_probe_access_line(line):
                    self._receive(line.rstrip("\r\n"))
        finally:
            aclose = getattr(stream, "aclose", None)  # closes the Docker log stream at once
            if aclose is not None:
                await aclose()

    def _on_instance(self, inst: Instance) -> None:
        if inst.key != self._key or inst.container_id == self._container_id:
            return
        self._container_id = inst.container_id
        if inst.container_id is None:
            self._label.setText(f"{inst.name}: container gone (stopped)")
            return
        # A new container (a start or a restart): follow it from its first line.
        self.stop()
        if self._text.blockCount() > 1 or self._text.toPlainText():
            self._receive(f"--- new container {inst.container_id} ---")
        self._start(inst)

    # ---- batching, pause, copy ----------------------------------------------------------------

    def _receive(self, line: str) -> None:
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
        self._pending.append(line)
        if not self._paused and not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Append the lines received since the last flush (nothing while paused)."""
        if self._paused or not self._pending:
            return
        lines = list(self._pending)
        self._pending.clear()
        if self._dropped:
            if len(lines) >= self._max_lines:  # make room for the note in the scrollback
                lines = lines[len(lines) - self._max_lines + 1 :]
                self._dropped += 1
            lines.insert(0, f"[... {self._dropped} lines not shown: over the scrollback limit]")
            self._dropped = 0
        self._text.appendPlainText("\n".join(lines))

    def set_paused(self, paused: bool) -> None:
        """Hold new lines back (bounded) while paused; show them on resume."""
        self._paused = paused
        if self._pause.isChecked() != paused:
            self._pause.setChecked(paused)
        self._pause.setText("Resume" if paused else "Pause")
        if not paused:
            self.flush()

    def copy(self) -> str:
        """Copy the selected text, or the whole log when nothing is selected; returns it."""
        cursor = self._text.textCursor()
        text = cursor.selectedText().replace("\u2029", "\n") if cursor.hasSelection() else ""
        text = text or self._text.toPlainText()
        clipboard = self._clipboard if self._clipboard is not None else QGuiApplication.clipboard()
        clipboard.setText(text)
        return text
