"""The chat tab's list of past conversations, most recently updated first.

New, Rename and Delete buttons sit beneath it. Renaming edits the title in place (the item's
editor: F2, or the Rename button), so nothing modal opens. The list only says what the user
asked for, through signals; the chat tab does the store's work.
"""

from __future__ import annotations

import time
from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.core.conversations import Conversation

#: What a conversation with no title yet is called in the list.
UNTITLED = "New conversation"
_ID_ROLE = Qt.ItemDataRole.UserRole


def conversation_tip(conversation: Conversation) -> str:
    count = conversation.message_count
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversation.updated))
    return f"{count} message{'' if count == 1 else 's'} · last change {when}"


class ConversationList(QWidget):
    """Past conversations with New, Rename and Delete."""

    openRequested = Signal(str)  # conversation id
    newRequested = Signal()
    renameRequested = Signal(str, str)  # conversation id, new title
    deleteRequested = Signal(str)  # conversation id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._shown: list[Conversation] = []
        self._titles: dict[str, str] = {}
        self._filling = False
        self._waiting: tuple[list[Conversation], str | None] | None = None  # while editing
        self.list = QListWidget(self)
        self.list.setObjectName("chat-conversations")
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_edited)
        self.list.itemDelegate().closeEditor.connect(self._editor_closed)
        self.new_button = QPushButton("New", self)
        self.new_button.setObjectName("chat-new")
        self.new_button.setToolTip("Start a new conversation")
        self.new_button.clicked.connect(self.newRequested.emit)
        self.rename_button = QPushButton("Rename", self)
        self.rename_button.setObjectName("chat-rename")
        self.rename_button.setToolTip("Rename the conversation (F2)")
        self.rename_button.clicked.connect(self.edit_current)
        self.delete_button = QPushButton("Delete", self)
        self.delete_button.setObjectName("chat-delete")
        self.delete_button.setToolTip("Delete the conversation and its messages")
        self.delete_button.clicked.connect(self._delete_current)
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.rename_button)
        buttons.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self._update_buttons()

    # ---- contents -----------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return [self._id(self.list.item(row)) for row in range(self.list.count())]

    def titles(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def current_id(self) -> str | None:
        item = self.list.currentItem()
        return self._id(item) if item is not None else None

    def set_conversations(self, conversations: list[Conversation], current: str | None) -> None:
        """Show ``conversations`` in their order with ``current`` selected (no signal).

        While a title is being edited the list waits for the editor to close.
        """
        if self.list.state() == QAbstractItemView.State.EditingState:
            self._waiting = (list(conversations), current)
            return
        self._waiting = None
        self._filling = True
        try:
            self.list.clear()
            self._titles.clear()
            self._shown = list(conversations)
            for conversation in conversations:
                self._titles[conversation.id] = conversation.title
                item = QListWidgetItem(conversation.title or UNTITLED)
                item.setData(_ID_ROLE, conversation.id)
                item.setToolTip(conversation_tip(conversation))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
            self._select(current)
        finally:
            self._filling = False
        self._update_buttons()

    def add_first(self, conversation: Conversation) -> None:
        """Put a conversation just made at the top and select it (no signal)."""
        others = [c for c in self._shown if c.id != conversation.id]
        self.set_conversations([conversation, *others], conversation.id)

    def select(self, conversation_id: str | None) -> None:
        """Select a conversation (None: none) without asking to open it."""
        self._filling = True
        try:
            self._select(conversation_id)
        finally:
            self._filling = False
        self._update_buttons()

    def edit_current(self) -> None:
        """Open the in-place editor on the current conversation's title."""
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    # ---- reacting -----------------------------------------------------------------------------

    def _select(self, conversation_id: str | None) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if self._id(item) == conversation_id:
                self.list.setCurrentItem(item)
                return
        self.list.setCurrentRow(-1)
        self.list.clearSelection()

    def _on_current(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self._update_buttons()
        if not self._filling and item is not None:
            self.openRequested.emit(self._id(item))

    def _on_edited(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        conversation_id = self._id(item)
        title = " ".join(item.text().split())
        old = self._titles.get(conversation_id, "")
        if not title or title == (old or UNTITLED):
            self._filling = True
            item.setText(old or UNTITLED)  # an empty title is not a rename: put it back
            self._filling = False
            return
        self._titles[conversation_id] = title
        self._shown = [
            replace(c, title=title) if c.id == conversation_id else c for c in self._shown
        ]
        self.renameRequested.emit(conversation_id, title)

    def _editor_closed(self) -> None:
        waiting = self._waiting
        if waiting is not None and self.list.state() != QAbstractItemView.State.EditingState:
            self.set_conversations(*waiting)

    def _delete_current(self) -> None:
        conversation_id = self.current_id()
        if conversation_id is not None:
            self.deleteRequested.emit(conversation_id)

    def _update_buttons(self) -> None:
        has = self.list.currentItem() is not None
        self.rename_button.setEnabled(has)
        self.delete_button.setEnabled(has)

    @staticmethod
    def _id(item: QListWidgetItem) -> str:
        return str(item.data(_ID_ROLE))
