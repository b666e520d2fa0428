"""The chat tab: try any model from the manager window, with the conversations kept.

Past conversations are listed on the left (New, Rename in place, Delete after a question); the
transcript shows each message with its role, the model key that wrote it and a marker for an
answer that was cut or failed, each with a Copy button. The model picker starts on the selected
model and follows it until the user picks one; it follows models being added and removed, and
switching it mid-conversation sends the next message, with the whole history, to the new model.

Everything goes through the :class:`~ryx_desktop.core.chat.ChatService` (so through
ryx-desktop's own proxy, which starts or wakes the model and says how far it got: those
progress lines show in the status line and in the waiting answer). One answer streams at a
time; Stop cancels its task, and the service stores the partial answer as cut. Slots are thin
shims that start tasks: :meth:`ChatTab.send`, :meth:`~ChatTab.refresh`,
:meth:`~ChatTab.open_conversation`, :meth:`~ChatTab.rename` and :meth:`~ChatTab.delete` return
them so tests can await what a click set off; nothing waits on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.conversations import Message
from ryx_desktop.core.errors import RyxError
from ryx_desktop.ui._chat_input import Composer
from ryx_desktop.ui._chat_list import ConversationList
from ryx_desktop.ui._chat_live import LiveAnswer, Status
from ryx_desktop.ui._chat_models import ModelPicker
from ryx_desktop.ui._chat_view import TranscriptView
from ryx_desktop.ui._questions import ask_yes_no
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.log_view import Clipboard

log = logging.getLogger(__name__)

#: Asks the user a yes/no question (title, text) without blocking the loop.
Confirm = Callable[[str, str], Awaitable[bool]]


class ChatTab(QWidget):
    """Chat with the configured models; see the module's docstring."""

    def __init__(
        self,
        chat: ChatService,
        bridge: EngineBridge,
        *,
        clipboard: Clipboard | None = None,
        confirm: Confirm | None = None,
        flush_ms: int = 30,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._chat = chat
        self._bridge = bridge
        self._clipboard = clipboard
        self._confirm: Confirm = confirm if confirm is not None else self._ask
        self._tasks: set[asyncio.Task[Any]] = set()
        self._current: str | None = None  # the conversation shown (None: a new one)
        self._loading = 0  # the generation of the latest load (a newer one wins)
        self._busy_loading = False
        self._live: LiveAnswer | None = None

        self.conversations = ConversationList(self)
        self.conversations.openRequested.connect(self.open_conversation)
        self.conversations.newRequested.connect(self.new_conversation)
        self.conversations.renameRequested.connect(self.rename)
        self.conversations.deleteRequested.connect(self.delete)

        self.model_box = ModelPicker(bridge, self)
        self.model_box.modelChanged.connect(self._update_controls)
        self.transcript = TranscriptView(self._copy_text, flush_ms=flush_ms, parent=self)
        self.composer = Composer(self)
        self.composer.sendRequested.connect(lambda: self.send())
        self.composer.stopRequested.connect(self.stop)
        self.input = self.composer.input
        self.send_button = self.composer.send_button
        self.stop_button = self.composer.stop_button

        self._layout()
        self._update_controls()

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:", self))
        top.addWidget(self.model_box, 1)
        right = QWidget(self)
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(top)
        column.addWidget(self.transcript, 1)
        column.addWidget(self.composer)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.conversations)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([220, 660])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    # ---- what it shows ------------------------------------------------------------------------

    @property
    def current_conversation(self) -> str | None:
        """The conversation shown (None: a new one, created by its first message)."""
        return self._current

    @property
    def answering(self) -> bool:
        """True while an answer streams."""
        return self._live is not None

    def current_model(self) -> str | None:
        """The key of the model the next message goes to."""
        return self.model_box.current_model()

    def models(self) -> list[str]:
        return self.model_box.models()

    def status_text(self) -> str:
        return self.composer.status.text()

    def set_model(self, key: str) -> None:
        """Pick model ``key`` for the next message (as the user's choice)."""
        self.model_box.set_model(key)

    def copy_message(self, index: int) -> str:
        """Copy the ``index``-th message of the transcript (negative: from the end)."""
        return self.transcript.views()[index].copy()

    # ---- commands (tasks) ---------------------------------------------------------------------

    def refresh(self) -> asyncio.Task[None]:
        """Reload the list of conversations."""
        return self._spawn(self._refresh())

    def open_conversation(self, conversation_id: str) -> asyncio.Task[None]:
        """Show a past conversation."""
        self._current = conversation_id
        self._loading += 1
        self._busy_loading = True
        self.conversations.select(conversation_id)
        self._update_controls()
        return self._spawn(self._load(conversation_id, self._loading))

    def new_conversation(self) -> None:
        """Show an empty conversation; its first message creates it."""
        self._current = None
        self._loading += 1
        self._busy_loading = False
        self._show_messages([])
        self.conversations.select(None)
        self._set_status("")
        self._update_controls()
        self.input.setFocus()

    def send(self, text: str | None = None) -> asyncio.Task[None] | None:
        """Send ``text`` (None: what the input box holds) to the picked model.

        None when nothing was sent: no text, no model, or an answer still streaming.
        """
        from_input = text is None
        text = self.input.toPlainText() if text is None else text
        if not text.strip() or self._busy_loading:
            return None
        if self._live is not None:
            self._set_status("An answer is still coming: stop it first.", error=True)
            return None
        model = self.current_model()
        if model is None:
            self._set_status("No model to ask: add one in the model list first.", error=True)
            return None
        if from_input:
            self.input.clear()
        live = LiveAnswer(self._current or "", model)
        self._live = live
        live.task = self._spawn(self._send(live, text, self._loading))
        self._update_controls()
        return live.task

    def stop(self) -> None:
        """Stop the answer that streams; the part that came is kept, marked as cut."""
        live = self._live
        if live is not None and live.task is not None and not live.task.done():
            live.stopped = True
            live.task.cancel()

    def edit_title(self) -> None:
        """Open the in-place editor on the current conversation's title."""
        self.conversations.edit_current()

    def rename(self, conversation_id: str, title: str) -> asyncio.Task[None]:
        return self._spawn(self._rename(conversation_id, title))

    def delete(self, conversation_id: str | None = None) -> asyncio.Task[bool] | None:
        """Ask, then delete a conversation (None: the current one) and its messages."""
        conversation_id = conversation_id or self.conversations.current_id()
        if conversation_id is None:
            return None
        return self._spawn(self._delete(conversation_id))

    async def aclose(self) -> None:
        """Stop the answer under way (stored as cut) and wait for the tab's tasks to end."""
        self.stop()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks)

    # ---- the work -----------------------------------------------------------------------------

    async def _refresh(self) -> None:
        try:
            conversations = await self._chat.store.list()
        except RyxError as error:
            self._show_error(error.message, error.hint)
            return
        self.conversations.set_conversations(conversations, self._current)

    async def _load(self, conversation_id: str, generation: int) -> None:
        try:
            found = await self._chat.store.get(conversation_id)
        except RyxError as error:
            found = None
            self._show_error(error.message, error.hint)
        if generation != self._loading:
            return  # another conversation was opened meanwhile
        self._busy_loading = False
        if found is None:
            self.new_conversation()
            await self._refresh()
            return
        self._show_messages(found[1])
        live = self._live
        self._set_status(live.progress if live is not None and self._live_here() else "")
        self._update_controls()

    def _show_messages(self, messages: list[Message]) -> None:
        live = self._live
        if live is not None:
            live.detach()
        self.transcript.clear()
        here = self._live_here()
        if here and messages and messages[-1].state == "streaming":
            messages = messages[:-1]  # its text so far is the live answer's
        for message in messages:
            self.transcript.add_message(message)
        if here and live is not None:
            live.attach(self.transcript.add_live("assistant", live.model, "streaming"))

    def _live_here(self) -> bool:
        live = self._live
        return (
            live is not None
            and bool(live.conversation_id)
            and live.conversation_id == self._current
        )

    async def _send(self, live: LiveAnswer, text: str, generation: int) -> None:
        try:
            if not live.conversation_id:
                conversation = await self._chat.store.create()
                live.conversation_id = conversation.id
                if self._current is None and generation == self._loading:
                    self._current = conversation.id  # still on the new conversation: it is this
                    self.conversations.add_first(conversation)
            if self._current == live.conversation_id:
                self.transcript.add_live("user", live.model, "complete", text)
                live.attach(self.transcript.add_live("assistant", live.model, "streaming"))
            self._set_status(f"Asking {live.model}…")
            events = self._chat.send(live.conversation_id, text, live.model)
            async with contextlib.aclosing(events):
                async for event in events:
                    self._show(live.apply(event))
        except asyncio.CancelledError:
            self._show(live.cut())
            task = asyncio.current_task()
            if not live.stopped or task is None or task.uncancel() > 0:
                raise
        except RyxError as error:  # refused before anything was written, or the store failed
            self._show(live.failed(error.message, error.hint))
        except Exception as error:
            self._show(live.failed(f"the chat failed: {error}", "This is a bug in ryx-desktop."))
            raise
        finally:
            if self._live is live:
                self._live = None
            self._update_controls()
        await self._refresh()

    async def _rename(self, conversation_id: str, title: str) -> None:
        try:
            renamed = await self._chat.store.rename(conversation_id, title)
        except RyxError as error:
            self._show_error(error.message, error.hint)
            renamed = None
        else:
            if renamed is None:
                self._show_error("That conversation is gone.", "It was deleted meanwhile.")
        await self._refresh()

    async def _delete(self, conversation_id: str) -> bool:
        titles = dict(zip(self.conversations.ids(), self.conversations.titles(), strict=True))
        name = titles.get(conversation_id, "this conversation")
        if not await self._confirm("Delete conversation", f"Delete “{name}” and its messages?"):
            return False
        live = self._live
        if live is not None and live.conversation_id == conversation_id and live.task:
            self.stop()
            await asyncio.wait([live.task])
        try:
            deleted = await self._chat.store.delete(conversation_id)
        except RyxError as error:
            self._show_error(error.message, error.hint)
            deleted = False
        if self._current == conversation_id:
            self.new_conversation()
        await self._refresh()
        return deleted

    # ---- small things -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat tab task failed", exc_info=task.exception())

    def _copy_text(self, text: str) -> None:
        clipboard = self._clipboard if self._clipboard is not None else QGuiApplication.clipboard()
        clipboard.setText(text)

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.composer.set_status(text, error=error)

    def _show(self, status: Status | None) -> None:
        if status is not None:
            self._set_status(status.text, error=status.error)

    def _show_error(self, message: str, hint: str) -> None:
        self._set_status(f"{message} {hint}".strip() if hint else message, error=True)

    def _update_controls(self) -> None:
        busy = self._live is not None
        can_send = not busy and not self._busy_loading and self.current_model() is not None
        self.composer.set_enabled(send=can_send, stop=busy)

    async def _ask(self, title: str, text: str) -> bool:
        return await ask_yes_no(self, title, text, default_yes=False)

    # ---- Qt events ----------------------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        """The list is reloaded each time the tab shows (the sessions API may have changed it)."""
        super().showEvent(event)
        self.refresh()
