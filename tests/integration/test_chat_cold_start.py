"""A chat to a stopped model, through the real proxy to a real container: it starts, with progress.

The chat service sends through the proxy's own ``/v1`` (as the Chat page and the sessions API
do), so a cold start is the proxy's usual one: the wait is heard as loading messages, which the
chat shows as progress, and the answer follows once the model is ready.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ryx_desktop.adapters.chat_client import ProxyChatClient
from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.chat import ChatDelta, ChatDone, ChatEvent, ChatProgress, ChatService
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.integration.runtimes import GpuFakingRuntime

pytestmark = pytest.mark.asyncio

SMALL = "/models/small/general/qwen2.5-3b"


async def test_a_chat_to_a_stopped_model_starts_it_and_shows_its_progress(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config(
        {"small": {"model": SMALL, "env": {"FAKE_VLLM_LOAD_SECONDS": "2"}}},
        default_model="small",
    )
    runtime = GpuFakingRuntime(config.docker.host)
    health = HttpHealthProbe()
    supervisor = Supervisor(config, runtime, health, MonotonicClock(), probe_interval=0.2)
    store = SqliteConversationStore(tmp_path / "conversations.sqlite3")
    proxy: ProxyServer | None = None

    def root() -> str:
        assert proxy is not None
        return proxy.local_root

    client = ProxyChatClient(root, None)
    chat = ChatService(store, client, resolve=lambda n: resolve_model(supervisor.config, n))
    proxy = ProxyServer(config, supervisor, port=0, loading_interval=0.2, chat=chat)
    await supervisor.open(watch=True)
    await proxy.start()
    try:
        assert supervisor.get("small").state is InstanceState.STOPPED
        conversation = await store.create()
        events: list[ChatEvent] = [e async for e in chat.send(conversation.id, "hello", "small")]
        progress = [e.text for e in events if isinstance(e, ChatProgress)]
        assert progress, events
        assert any("small" in text for text in progress), progress
        first_delta = next(i for i, e in enumerate(events) if isinstance(e, ChatDelta))
        assert all(not isinstance(e, ChatDelta) for e in events[:first_delta])
        assert max(i for i, e in enumerate(events) if isinstance(e, ChatProgress)) < first_delta
        done = events[-1]
        assert isinstance(done, ChatDone), events[-1]
        assert done.message.state == "complete" and done.message.model == "small"
        assert done.message.content.strip()
        assert supervisor.get("small").state is InstanceState.READY

        # The sessions API on the same store: the conversation, and a second answer at once.
        async with httpx.AsyncClient(base_url=proxy.local_root, timeout=30) as http:
            again = await http.post(
                f"/api/sessions/{conversation.id}/messages",
                json={"content": "and again", "model": "small"},
            )
            assert again.status_code == 200, again.text
            assert again.json()["message"]["model"] == "small"
            stored = (await http.get(f"/api/sessions/{conversation.id}")).json()["messages"]
        assert [(m["role"], m["state"]) for m in stored] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("user", "complete"),
            ("assistant", "complete"),
        ]
    finally:
        await proxy.close()
        await client.close()
        await store.close()
        await supervisor.close()
        await health.close()
        await runtime.close()
