"""The answer that streams now in the chat tab: where it goes, what came so far, and its view.

The text and the latest progress line are kept here, not only in the view, so that the user can
read another conversation meanwhile and come back to the answer where it got to (the view is
detached and a new one attached). ``apply`` turns each ChatEvent into what the view shows and
returns the status line to show, if any.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ryx_desktop.core.chat import ChatDelta, ChatDone, ChatEvent, ChatFailed
from ryx_desktop.ui._chat_view import MessageView, stats_text


@dataclass
class Status:
    """A line for the chat's status line."""

    text: str
    error: bool = False


@dataclass
class LiveAnswer:
    """One answer under way."""

    conversation_id: str  # "" until the new conversation is created
    model: str
    parts: list[str] = field(default_factory=list)
    progress: str = ""
    view: MessageView | None = None
    task: asyncio.Task[None] | None = None
    stopped: bool = False  # Stop (or delete, or close) cancelled it: the task ends normally

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def attach(self, view: MessageView) -> None:
        """Show the answer so far in ``view`` (a new one, after the transcript was rebuilt)."""
        self.view = view
        view.set_text(self.text)
        if self.progress and not self.parts:
            view.set_note(self.progress)

    def detach(self) -> None:
        self.view = None

    def apply(self, event: ChatEvent) -> Status | None:
        """Show ``event``; the status line it calls for (None: leave it)."""
        view = self.view
        if isinstance(event, ChatDelta):
            if not self.parts and view is not None:
                view.set_note("")  # the progress line makes way for the answer
            self.parts.append(event.text)
            if view is not None:
                view.append(event.text)
            return None
        if isinstance(event, ChatDone):
            stats = stats_text(event.ttft_s, event.tokens_per_s, event.completion_tokens)
            if view is not None:
                view.finish(event.message)
                view.set_note(stats)
            return Status(f"{self.model}: {stats}" if stats else f"{self.model}: done")
        if isinstance(event, ChatFailed):
            self.parts = [event.message.content]
            if view is not None:
                view.finish(event.message)
            return self.failed(event.text, event.hint)
        self.progress = event.text  # ChatProgress: the model starts or wakes
        if view is not None and not self.parts:
            view.set_note(event.text)
        return Status(event.text)

    def cut(self) -> Status:
        """The answer was stopped: what came is kept, marked as cut."""
        if self.view is not None:
            self.view.set_text(self.text)
            self.view.set_state("cut")
        return Status(f"{self.model}: stopped; the partial answer is kept, marked as cut.")

    def failed(self, message: str, hint: str) -> Status:
        if self.view is not None:
            self.view.set_text(self.text)
            self.view.set_state("failed", message, hint)
        return Status(f"{message} {hint}".strip() if hint else message, error=True)
