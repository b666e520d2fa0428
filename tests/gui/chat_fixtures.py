"""Helpers for the chat tab's tests: a scripted completion client, a fake clock and a rig.

The rig is the real ``ChatService`` over the real SQLite store in ``tmp_path`` and a
``ScriptedClient`` that plays one script per message: pieces of the answer, progress lines,
the clock moved between them, points where it waits for the test, an error. The engine (for
the model picker) is the fake one of ``fixtures_engine``, on the qasync loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.core.chat import (
    ChatService,
)
from ryx_desktop.core.conversations import Message
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.ui.chat_tab import ChatTab
from tests.gui.fixtures_engine import EngineRig, engine_rig, managed
from tests.gui.window_fixtures import FakeClipboard
from tests.support.chat_script import FakeClock, ScriptedClient

#: Two managed models over the fake runtime; alpha is the default (selected) one.
MODELS: dict[str, Any] = {
    "alpha": managed(8001, name="Alpha", gpu_memory_utilization=0.3),
    "beta": managed(8002, gpu_memory_utilization=0.3),
}


class Confirmations:
    """A ``confirm`` that answers from a list and records each question."""

    def __init__(self) -> None:
        self.answers: list[bool] = []
        self.questions: list[tuple[str, str]] = []

    async def __call__(self, title: str, text: str) -> bool:
        self.questions.append((title, text))
        return self.answers.pop(0)


@dataclass
class ChatRig:
    engine: EngineRig
    store: SqliteConversationStore
    client: ScriptedClient
    chat: ChatService
    tab: ChatTab
    clipboard: FakeClipboard
    confirm: Confirmations

    async def messages(self, conversation_id: str | None) -> list[Message]:
        assert conversation_id is not None
        found = await self.store.get(conversation_id)
        assert found is not None
        return found[1]


def summary(messages: list[Message]) -> list[tuple[str, str, str | None, str]]:
    return [(m.role, m.content, m.model, m.state) for m in messages]


@contextlib.asynccontextmanager
async def chat_rig(tmp_path: Path, models: dict[str, Any] = MODELS) -> AsyncIterator[ChatRig]:
    """A chat tab over a scripted client, the real store and the fake engine; closed after."""
    async with engine_rig(models, default_model="alpha") as engine:
        store = SqliteConversationStore(tmp_path / "conversations.sqlite3")
        clock = FakeClock()
        client = ScriptedClient(clock)
        chat = ChatService(
            store,
            client,
            resolve=lambda name: resolve_model(engine.supervisor.config, name),
            clock=clock,
        )
        clipboard = FakeClipboard()
        confirm = Confirmations()
        tab = ChatTab(chat, engine.bridge, clipboard=clipboard, confirm=confirm, flush_ms=5)
        try:
            yield ChatRig(engine, store, client, chat, tab, clipboard, confirm)
        finally:
            await tab.aclose()
            tab.deleteLater()
            await store.close()
