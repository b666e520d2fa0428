"""Chatting with a model: send a message, stream the answer, keep both in the store.

Qt-free and free of I/O: the store and the :class:`CompletionClient` that streams one chat
completion (``adapters.chat_client`` through ryx-desktop's own proxy) come in through the
constructor, and so does the clock that times the answer. The chat tab and the proxy's
sessions API both use :class:`ChatService`.

The history sent to the model is every ``complete`` or ``cut`` message of the conversation
(``failed`` answers are left out), so switching models mid-conversation hands the new model
what the old one said. Time to first token runs from the request to the first piece of the
answer; tokens per second is the decode rate after it, ``(tokens - 1) / (last - first)`` over
the times the first and the last piece came, with ``tokens`` the server's
``usage.completion_tokens`` when it sent one, else the pieces counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ryx_desktop.core.conversations import (
    ConversationStore,
    Message,
    MessageState,
    UnknownConversation,
)
from ryx_desktop.core.errors import RyxError, UnknownModelError

#: The name the shared interfaces give the error for a model nobody configured.
UnknownModel = UnknownModelError

#: The states whose messages go back to the model as history.
_HISTORY_STATES = frozenset({"complete", "cut"})


@dataclass(frozen=True, slots=True)
class ChatProgress:
    """What happens before the answer: ``loading qwen 40 %: weights 2/5``."""

    text: str


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ChatDone:
    """The answer is complete (and stored so)."""

    message: Message
    ttft_s: float | None
    tokens_per_s: float | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class ChatFailed:
    """The answer failed; ``message`` is stored in state ``failed`` with its partial text."""

    message: Message
    text: str
    hint: str


ChatEvent = ChatProgress | ChatDelta | ChatDone | ChatFailed


@dataclass(frozen=True, slots=True)
class CompletionUsage:
    """The server's token counts for one completion (None where it did not say)."""

    completion_tokens: int | None = None
    prompt_tokens: int | None = None


class ChatRequestError(RyxError):
    """A chat completion that got an error answer, or none."""

    hint = "Read the message above; `ryx-desktop status` shows the models."

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        #: The HTTP status of the error answer; None when no answer came.
        self.status = status


class CompletionClient(Protocol):
    """Streams one chat completion; raises :class:`ChatRequestError` for an error answer."""

    def stream(
        self, model: str, messages: list[dict[str, str]]
    ) -> AsyncIterator[ChatProgress | ChatDelta | CompletionUsage]: ...


class ChatService:
    """Sends messages of stored conversations to models and stores their answers."""

    def __init__(
        self,
        store: ConversationStore,
        client: CompletionClient,
        *,
        resolve: Callable[[str], str | None],
        clock: Callable[[], float] = time.monotonic,
        save_every: float = 0.5,
    ) -> None:
        """``resolve``: a model name (served name, alias or key) to its key, None if unknown;
        ``save_every``: seconds between saves of an answer while it streams."""
        self.store = store
        self._client = client
        self._resolve = resolve
        self._clock = clock
        self._save_every = save_every

    async def send(
        self, conversation_id: str, content: str, model: str
    ) -> AsyncGenerator[ChatEvent, None]:
        """Store ``content`` as the user's message, ask ``model`` and stream its answer.

        Raises UnknownModel / UnknownConversation before writing anything. The answer is
        stored as it streams; it ends ``complete`` (ChatDone), ``failed`` (ChatFailed) or,
        when the consumer closes this iterator or is cancelled, ``cut``.
        """
        key = self._resolve(model)
        if key is None:
            raise UnknownModelError(f"no model is called {model!r}")
        found = await self.store.get(conversation_id)
        if found is None:
            raise UnknownConversation(conversation_id)
        history = [
            {"role": m.role, "content": m.content}
            for m in found[1]
            if m.state in _HISTORY_STATES and (m.content or m.role == "user")
        ]
        history.append({"role": "user", "content": content})
        store = self.store
        await store.add_message(conversation_id, "user", content, model=key)
        answer = await store.add_message(
            conversation_id, "assistant", "", model=key, state="streaming"
        )
        run = _Answer(self._clock, self._save_every)
        stream = self._client.stream(model, history)
        try:
            try:
                async for event in stream:
                    if isinstance(event, CompletionUsage):
                        run.usage = event
                    elif isinstance(event, ChatDelta):
                        if not event.text:
                            continue
                        if run.add(event.text):
                            await store.update_message(answer.id, run.text, "streaming")
                        yield event
                    else:
                        yield event
            except RyxError as error:
                failed = await store.update_message(answer.id, run.text, "failed", error.message)
                yield ChatFailed(failed, error.message, error.hint)
                return
            except (asyncio.CancelledError, GeneratorExit):
                await _save_shielded(store, answer.id, run.text, "cut")
                raise
            except Exception as error:  # a bug: never leave the answer "streaming"
                await _save_shielded(store, answer.id, run.text, "failed", str(error))
                raise
            done = await store.update_message(answer.id, run.text, "complete")
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()  # closes the connection: the server stops generating
        yield ChatDone(done, run.ttft, run.tokens_per_s(), run.tokens)


class _Answer:
    """An answer as it streams: its text, when it began and when its first piece came."""

    def __init__(self, clock: Callable[[], float], save_every: float) -> None:
        self._clock = clock
        self._save_every = save_every
        self._parts: list[str] = []
        self._began = self._last_save = clock()
        self._first: float | None = None
        self._last: float | None = None
        self.usage: CompletionUsage | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, text: str) -> bool:
        """Take one piece; True when it is time to save the text so far."""
        now = self._clock()
        if self._first is None:
            self._first = now
        self._last = now
        self._parts.append(text)
        if now - self._last_save >= self._save_every:
            self._last_save = now
            return True
        return False

    @property
    def ttft(self) -> float | None:
        return None if self._first is None else self._first - self._began

    @property
    def tokens(self) -> int | None:
        if self.usage is not None and self.usage.completion_tokens is not None:
            return self.usage.completion_tokens
        return len(self._parts) if self._parts else None

    def tokens_per_s(self) -> float | None:
        """The decode rate: the tokens after the first over the time from first to last piece."""
        tokens, first, last = self.tokens, self._first, self._last
        if tokens is None or tokens < 2 or first is None or last is None or last <= first:
            return None
        return (tokens - 1) / (last - first)


async def _save_shielded(
    store: ConversationStore, message_id: int, text: str, state: MessageState, error: str = ""
) -> None:
    """Save the answer even though the task is being cancelled (a second cancel included)."""
    save = asyncio.ensure_future(store.update_message(message_id, text, state, error))
    try:
        await asyncio.shield(save)
    except asyncio.CancelledError:
        if not save.done():
            save.add_done_callback(_retrieve)
        raise


def _retrieve(future: asyncio.Future[Message]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed save is not reported twice
