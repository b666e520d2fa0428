"""The bottom of the chat tab: its status line, the message box and the Send and Stop buttons.

Ctrl+Enter in the box sends (Enter alone starts a new line); the box, the buttons and the status
line only say what the user asked for, through signals, and show what the tab tells them.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

_ERROR_STYLE = "color: #c0392b;"
_SEND_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


class Composer(QWidget):
    """Status line, message box, Send and Stop."""

    sendRequested = Signal()
    stopRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status = QLabel(self)
        self.status.setObjectName("chat-status")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.input = QPlainTextEdit(self)
        self.input.setObjectName("chat-input")
        self.input.setPlaceholderText("Message (Ctrl+Enter sends)")
        self.input.setMaximumHeight(110)
        self.input.installEventFilter(self)
        self.send_button = QPushButton("Send", self)
        self.send_button.setObjectName("chat-send")
        self.send_button.setToolTip("Send the message (Ctrl+Enter)")
        self.send_button.clicked.connect(self.sendRequested.emit)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setObjectName("chat-stop")
        self.stop_button.setToolTip("Stop the answer; what came so far is kept, marked as cut")
        self.stop_button.clicked.connect(self.stopRequested.emit)

        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addLayout(row)

    def set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(_ERROR_STYLE if error else "")

    def set_enabled(self, *, send: bool, stop: bool) -> None:
        self.send_button.setEnabled(send)
        self.stop_button.setEnabled(stop)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Ctrl+Enter in the message box sends."""
        if (
            watched is self.input
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() in _SEND_KEYS
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self.sendRequested.emit()
            return True
        return super().eventFilter(watched, event)
