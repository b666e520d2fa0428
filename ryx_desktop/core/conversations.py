"""Conversations with the models: their messages, the store that keeps them, and its errors.

Qt-free and free of I/O: the store is a Protocol, and ``adapters.conversation_db`` keeps it in
SQLite. A message's ``model`` is the KEY of the model that wrote it (assistant) or was asked
(user), so a conversation that switched models says which one said what. An answer that was
interrupted (Stop pressed, the client went away, the app was killed mid-answer) keeps its
partial text in state ``cut``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Literal, Protocol

from ryx_desktop.core.errors import RyxError

MessageState = Literal["complete", "streaming", "cut", "failed"]
#: Every state, in the order of the Literal.
MESSAGE_STATES: tuple[MessageState, ...] = ("complete", "streaming", "cut", "failed")
#: The roles a message may have.
ROLES = ("user", "assistant", "system")
#: How long a title made from the first user message is, at most (plus an ellipsis).
TITLE_LENGTH = 40


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation."""

    id: int
    conversation_id: str
    role: str  # "user" | "assistant" | "system"
    content: str
    model: str | None  # the model KEY that wrote it (assistant) or was asked (user)
    state: MessageState  # "cut": the answer was interrupted
    created: float  # unix time
    error: str = ""  # for state "failed": the one-sentence reason


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's summary, as lists show it."""

    id: str  # uuid4 hex
    title: str
    created: float
    updated: float
    message_count: int


class ConversationStore(Protocol):
    """Where conversations are kept; every method is a coroutine (the work runs elsewhere)."""

    async def create(self, title: str = "") -> Conversation: ...

    async def list(self) -> builtins.list[Conversation]:
        """Most recently updated first."""
        ...

    async def get(
        self, conversation_id: str
    ) -> tuple[Conversation, builtins.list[Message]] | None: ...

    async def rename(self, conversation_id: str, title: str) -> Conversation | None: ...

    async def delete(self, conversation_id: str) -> bool: ...

    async def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        model: str | None,
        state: MessageState = "complete",
    ) -> Message: ...

    async def update_message(
        self, message_id: int, content: str, state: MessageState, error: str = ""
    ) -> Message: ...

    async def close(self) -> None: ...


class UnknownConversation(RyxError):
    """No conversation has this id (never created, or deleted since)."""

    hint = "It may have been deleted; start a new conversation."

    def __init__(self, conversation_id: str, hint: str | None = None) -> None:
        super().__init__(f"there is no conversation {conversation_id!r}", hint)
        self.conversation_id = conversation_id


class ConversationStoreError(RyxError):
    """The conversations database cannot be opened, read or written."""

    hint = "Move the conversations file away to start with an empty history."


def default_title(content: str) -> str:
    """A title from a first message: its first words, up to :data:`TITLE_LENGTH` characters."""
    text = " ".join(content.split())
    if len(text) <= TITLE_LENGTH:
        return text
    cut = text[:TITLE_LENGTH]
    space = text.rfind(" ", 0, TITLE_LENGTH + 1)  # a space right after the cut ends a word too
    if space >= TITLE_LENGTH // 2:  # end on a word when that keeps most of it
        cut = text[:space]
    return cut.rstrip(" ,.;:") + "…"
