"""The chat tab through the real proxy to fake vLLM servers, all on the qasync loop as in the app.

Two external models in front of two fake vLLM processes (beta streams one token per
``TOKEN_DELAY``); the real ``ProxyChatClient`` posts to the real ``ProxyServer``, the real
``ChatService`` keeps the conversation in the real SQLite store in ``tmp_path``, and the proxy's
sessions API reads the same store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from PySide6.QtWidgets import QApplication

from ryx_desktop.adapters.chat_client import ProxyChatClient
from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.config import Config
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.chat_tab import ChatTab
from tests.gui.fixtures_engine import run_on_qt
from tests.gui.window_fixtures import FakeClipboard
from tests.support.artifacts import artifact_path
from tests.support.fakes import FakeRuntime
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream, free_port, start_fake_upstream
from tests.support.waiting import wait_for

#: beta's pause between tokens: its 16-token answers stream for 1.6 s.
TOKEN_DELAY = 0.1
STORY = "tell me a long story about the sea and the ships that sail on it at night"


def reply(served: str, prompt: str, tokens: int = 16) -> str:
    """What the fake answers: its reply's first ``tokens`` words (16: its default limit)."""
    words = f"fake reply from {served} to: {prompt}".split(" ")
    return " ".join(words[:tokens])


def posted(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r["json"] for r in upstream.requests() if r["method"] == "POST"]


def test_the_chat_streams_switches_model_and_stops_through_the_real_proxy(
    qapp: QApplication, tmp_path: Path
) -> None:
    alpha = start_fake_upstream(tmp_path, served_name="alpha-served")
    beta = start_fake_upstream(
        tmp_path, served_name="beta-served", env={"FAKE_VLLM_TOKEN_DELAY": str(TOKEN_DELAY)}
    )
    config = Config.model_validate(
        {
            "default_model": "alpha",
            "models": {
                "alpha": {"url": alpha.url, "served_name": "alpha-served", "name": "Alpha"},
                "beta": {"url": beta.url, "served_name": "beta-served"},
            },
        }
    )

    async def scenario() -> None:
        port = free_port()
        store = SqliteConversationStore(tmp_path / "conversations.sqlite3")
        client = ProxyChatClient(f"http://127.0.0.1:{port}", None)
        chat = ChatService(store, client, resolve=lambda name: resolve_model(config, name))
        try:
            async with running_proxy(config, port=port, chat=chat) as proxy:
                bridge = EngineBridge(proxy.supervisor, FakeRuntime(), proxy_url=proxy.server.url)
                tab = ChatTab(chat, bridge, clipboard=FakeClipboard(), flush_ms=5)
                try:
                    await talk(tab, store, proxy.base)
                finally:
                    await tab.aclose()
                    tab.deleteLater()
                    bridge.close()
        finally:
            await client.close()
            await store.close()

    async def talk(tab: ChatTab, store: SqliteConversationStore, base: str) -> None:
        views = tab.transcript.views
        # 1. The selected model answers.
        assert tab.current_model() == "alpha"
        task = tab.send("hello")
        assert task is not None
        await task
        first = reply("alpha-served", "hello")
        assert [v.text() for v in views()] == ["hello", first]
        assert views()[-1].header() == "Assistant · alpha"
        assert views()[-1].note().startswith("time to first token ")
        assert tab.status_text().startswith("alpha: time to first token ")
        assert [body["model"] for body in posted(alpha)] == ["alpha-served"]

        # 2. Switched to beta mid-conversation: its slow answer streams in, piece by piece,
        # and beta is sent the whole conversation.
        tab.set_model("beta")
        task = tab.send("and you?")
        assert task is not None
        second = reply("beta-served", "and you?")
        await wait_for(
            lambda: len(views()) == 4 and 0 < len(views()[-1].shown_text()) < len(second),
            "part of beta's answer",
        )
        assert views()[-1].header() == "Assistant · beta · answering…"
        await task
        assert views()[-1].text() == second
        assert views()[-1].header() == "Assistant · beta"
        assert posted(beta)[-1]["messages"] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "and you?"},
        ]
        assert posted(beta)[-1]["model"] == "beta-served" and posted(beta)[-1]["stream"] is True

        # 3. Stop mid-answer: the request is cancelled (the fake sees its client go) and the
        # part that came is kept, marked as cut.
        task = tab.send(STORY)
        assert task is not None
        await wait_for(
            lambda: len(views()) == 6 and views()[-1].shown_text() != "", "the story's first words"
        )
        tab.stop()
        await task
        partial = views()[-1].text()
        assert partial and reply("beta-served", STORY).startswith(partial)
        assert partial != reply("beta-served", STORY)
        assert views()[-1].header() == "Assistant · beta · ✂ cut"
        await wait_for(lambda: beta.disconnects() >= 1, "the fake vLLM to see the client go")

        conversation = tab.current_conversation
        assert conversation is not None
        found = await store.get(conversation)
        assert found is not None
        stored = [(m.role, m.model, m.state) for m in found[1]]
        assert stored == [
            ("user", "alpha", "complete"),
            ("assistant", "alpha", "complete"),
            ("user", "beta", "complete"),
            ("assistant", "beta", "complete"),
            ("user", "beta", "complete"),
            ("assistant", "beta", "cut"),
        ]
        assert found[1][-1].content == partial
        assert tab.conversations.titles() == ["hello"]

        # The proxy's sessions API reads the same store.
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as http:
            response = await http.get(f"/api/sessions/{conversation}")
        assert response.status_code == 200, response.text
        messages = response.json()["messages"]
        assert [(m["model"], m["state"]) for m in messages][-2:] == [
            ("beta", "complete"),
            ("beta", "cut"),
        ]
        # The README's picture of the chat: two models in one conversation, the last one cut.
        tab.resize(1000, 640)
        shot = tab.grab()
        assert not shot.isNull() and shot.width() == 1000
        assert shot.save(str(artifact_path("chat-tab.png")))

    try:
        run_on_qt(qapp, scenario())
    finally:
        alpha.stop()
        beta.stop()
