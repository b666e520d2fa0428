"""The chat tab's transcript: one small widget per message, in a scroll area that follows the end.

A :class:`MessageView` shows who wrote a message (the role and the model key), its text, and a
marker for an answer that was cut (Stop pressed, the app killed mid-answer) or that failed (with
its reason and, when known, a hint). Its Copy button and right-click menu hand its text to a
copy function. While an answer streams, pieces are appended to the one live view and shown in
batches (at most one relayout per ``flush_ms``), so a long answer never rebuilds the transcript.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.core.conversations import Message, MessageState

#: The word shown for each role.
ROLE_WORDS = {"user": "You", "assistant": "Assistant", "system": "System"}
#: The marker shown after the header for each state (complete: none).
STATE_MARKERS: dict[str, str] = {
    "streaming": "answering…",
    "cut": "✂ cut",
    "failed": "⚠ failed",
}
_FAILED_STYLE = "color: #c0392b;"
_NOTE_STYLE = "color: palette(mid);"

#: Puts a message's text where Copy sends it.
CopyText = Callable[[str], None]


def header_text(role: str, model: str | None, state: str) -> str:
    """``You · qwen`` / ``Assistant · qwen · ✂ cut``."""
    parts = [ROLE_WORDS.get(role, role.capitalize())]
    if model:
        parts.append(model)
    marker = STATE_MARKERS.get(state)
    if marker:
        parts.append(marker)
    return " · ".join(parts)


def stats_text(ttft_s: float | None, tokens_per_s: float | None, tokens: int | None = None) -> str:
    """``time to first token 0.42 s · 37.5 tokens/s`` (the parts that are known)."""
    parts = []
    if ttft_s is not None:
        parts.append(f"time to first token {ttft_s:.2f} s")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:.1f} tokens/s")
    if tokens is not None and tokens_per_s is None:
        parts.append(f"{tokens} tokens")
    return " · ".join(parts)


class MessageView(QFrame):
    """One message: header, text, note (failure or timing) and a Copy button."""

    def __init__(
        self,
        role: str,
        model: str | None,
        state: MessageState,
        text: str,
        copy: CopyText,
        *,
        error: str = "",
        created: float | None = None,
        flush_ms: int = 30,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("chat-message")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.role = role
        self.model = model
        self.state: MessageState = state
        self.error = error
        self.message_id: int | None = None
        self._copy_text = copy
        self._text = text
        self._pending: list[str] = []

        self._header = QLabel(self)
        self._header.setObjectName("message-header")
        self._header.setTextFormat(Qt.TextFormat.PlainText)
        font = self._header.font()
        font.setBold(True)
        self._header.setFont(font)
        if created is not None:
            self._header.setToolTip(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)))
        self._copy = QToolButton(self)
        self._copy.setObjectName("message-copy")
        self._copy.setText("Copy")
        self._copy.setToolTip("Copy this message's text")
        self._copy.setAutoRaise(True)
        self._copy.clicked.connect(self.copy)
        self._body = QLabel(text, self)
        self._body.setObjectName("message-body")
        self._body.setTextFormat(Qt.TextFormat.PlainText)
        self._body.setWordWrap(True)
        self._body.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self._body.setContextMenuPolicy(Qt.ContextMenuPolicy.NoContextMenu)  # the frame's menu
        self._note = QLabel(self)
        self._note.setObjectName("message-note")
        self._note.setTextFormat(Qt.TextFormat.PlainText)
        self._note.setWordWrap(True)
        self._note.hide()

        top = QHBoxLayout()
        top.addWidget(self._header, 1)
        top.addWidget(self._copy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 6)
        layout.addLayout(top)
        layout.addWidget(self._body)
        layout.addWidget(self._note)

        self.menu = QMenu(self)
        self.menu.addAction("Copy", self.copy)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._open_menu)

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(flush_ms)
        self._flush_timer.timeout.connect(self.flush)
        self.set_state(state, error)

    @classmethod
    def of(cls, message: Message, copy: CopyText, parent: QWidget | None = None) -> MessageView:
        view = cls(
            message.role,
            message.model,
            message.state,
            message.content,
            copy,
            error=message.error,
            created=message.created,
            parent=parent,
        )
        view.message_id = message.id
        return view

    # ---- what it shows ------------------------------------------------------------------------

    def text(self) -> str:
        """The message's whole text, pieces not shown yet included."""
        if self._pending:
            self._text += "".join(self._pending)
            self._pending.clear()
        return self._text

    def shown_text(self) -> str:
        return self._body.text()

    def header(self) -> str:
        return self._header.text()

    def note(self) -> str:
        return self._note.text() if not self._note.isHidden() else ""

    def append(self, piece: str) -> None:
        """Add a piece of a streaming answer; it shows at the next flush."""
        self._pending.append(piece)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Show the pieces appended since the last flush."""
        if self._pending:
            self._body.setText(self.text())

    def set_text(self, text: str) -> None:
        self._pending.clear()
        self._text = text
        self._body.setText(text)

    def set_state(self, state: MessageState, error: str = "", hint: str = "") -> None:
        """Show ``state``'s marker; a failure shows its reason and hint beneath the text."""
        self.state = state
        self.error = error
        self._header.setText(header_text(self.role, self.model, state))
        if state == "failed":
            note = error or "the answer failed"
            self.set_note(f"{note}\n{hint}" if hint else note, failed=True)
        elif state == "cut":
            self.set_note("Stopped before the answer was complete.")
        elif self._note.styleSheet() == _FAILED_STYLE:
            self.set_note("")

    def set_note(self, text: str, *, failed: bool = False) -> None:
        self._note.setText(text)
        self._note.setStyleSheet(_FAILED_STYLE if failed else _NOTE_STYLE)
        self._note.setVisible(bool(text))

    def set_model(self, model: str | None) -> None:
        self.model = model
        self._header.setText(header_text(self.role, model, self.state))

    def finish(self, message: Message) -> None:
        """The stored message the live view stood for: its final text and state."""
        self.message_id = message.id
        self.model = message.model
        self.set_text(message.content)
        self.set_state(message.state, message.error)

    # ---- copy ---------------------------------------------------------------------------------

    def copy(self) -> str:
        text = self.text()
        self._copy_text(text)
        return text

    def _open_menu(self, pos: QPoint) -> None:
        self.menu.popup(self.mapToGlobal(pos))


class TranscriptView(QScrollArea):
    """The messages of one conversation, top to bottom; follows the end while it is in view."""

    def __init__(self, copy: CopyText, *, flush_ms: int = 30, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chat-transcript")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._copy = copy
        self._flush_ms = flush_ms
        self._views: list[MessageView] = []
        inner = QWidget(self)
        self._layout = QVBoxLayout(inner)
        self._layout.setContentsMargins(6, 6, 6, 6)
        self._layout.setSpacing(6)
        self._placeholder = QLabel(
            "Pick a model, type a message and press Ctrl+Enter to send it.", inner
        )
        self._placeholder.setObjectName("chat-placeholder")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setStyleSheet(_NOTE_STYLE)
        self._layout.addWidget(self._placeholder)
        self._layout.addStretch(1)
        self.setWidget(inner)
        self._at_end = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range)

    def views(self) -> list[MessageView]:
        return list(self._views)

    def clear(self) -> None:
        for view in self._views:
            self._layout.removeWidget(view)
            view.hide()
            view.deleteLater()
        self._views.clear()
        self._placeholder.show()
        self._at_end = True

    def add_message(self, message: Message) -> MessageView:
        return self._add(MessageView.of(message, self._copy))

    def add_live(
        self, role: str, model: str | None, state: MessageState, text: str = ""
    ) -> MessageView:
        """A message that is not stored yet (or still streaming)."""
        return self._add(MessageView(role, model, state, text, self._copy, flush_ms=self._flush_ms))

    def _add(self, view: MessageView) -> MessageView:
        self._placeholder.hide()
        self._layout.insertWidget(self._layout.count() - 1, view)  # above the stretch
        self._views.append(view)
        return view

    def _on_scrolled(self, value: int) -> None:
        self._at_end = value >= self.verticalScrollBar().maximum() - 4

    def _on_range(self, _low: int, high: int) -> None:
        if self._at_end:
            self.verticalScrollBar().setValue(high)
