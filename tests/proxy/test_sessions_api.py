"""The sessions API on the proxy (issue 12, item 4), through real sockets.

The proxy runs with a ChatService over a SQLite store in ``tmp_path`` and a ProxyChatClient
aimed at the proxy itself, so each message goes the way of ``/v1/chat/completions``: routed by
name to a fake vLLM subprocess, which records what it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ryx_desktop.adapters.chat_client import ProxyChatClient
from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.config import Config
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.routing import resolve_model
from tests.proxy.helpers import (
    Chunks,
    assert_error,
    client_for,
    external,
    make_config,
    sse_events,
)
from tests.support.proxy import RunningProxy, running_proxy
from tests.support.upstream import FakeUpstream, free_port, start_fake_upstream
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

KEY = "s3cret-key"
APP = "http://app.example:3000"


@dataclass
class Sessions:
    proxy: RunningProxy
    client: httpx.AsyncClient
    store: SqliteConversationStore

    async def create(self, title: str | None = None) -> str:
        body = {} if title is None else {"title": title}
        response = await self.client.post("/api/sessions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def session(self, session_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/sessions/{session_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def say(self, session_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/api/sessions/{session_id}/messages", json=body)


@contextlib.asynccontextmanager
async def sessions(
    config: Config, tmp_path: Path, *, api_key: str | None = None, headers: Any = None
) -> AsyncIterator[Sessions]:
    """A proxy with the sessions API, and an httpx client for it (``headers`` on each request)."""
    port = free_port()
    store = SqliteConversationStore(tmp_path / "sessions.sqlite3")
    chat_client = ProxyChatClient(f"http://127.0.0.1:{port}", api_key)
    chat = ChatService(store, chat_client, resolve=lambda name: resolve_model(config, name))
    try:
        async with (
            running_proxy(config, port=port, chat=chat) as proxy,
            client_for(proxy, headers=headers) as client,
        ):
            yield Sessions(proxy, client, store)
    finally:
        await chat_client.close()
        await store.close()


def two_models(alpha: FakeUpstream, beta: FakeUpstream, **proxy: Any) -> Config:
    return make_config(
        {"alpha": external(alpha, "alpha-served"), "beta": external(beta, "beta-served", "b")},
        **proxy,
    )


def posted(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r for r in upstream.requests() if r["method"] == "POST"]


def reply(served: str, prompt: str) -> str:
    """What the fake answers (up to its default of 16 tokens)."""
    return f"fake reply from {served} to: {prompt}"


# --------------------------------------------------------------------------- the sessions


async def test_sessions_are_created_listed_read_and_deleted(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        client = api.client
        titled = await client.post("/api/sessions", json={"title": "Plans"})
        untitled = await client.post("/api/sessions")  # no body at all
        listed = await client.get("/api/sessions")
        one = await client.get(f"/api/sessions/{titled.json()['id']}")
        deleted = await client.delete(f"/api/sessions/{titled.json()['id']}")
        again = await client.delete(f"/api/sessions/{titled.json()['id']}")
        gone = await client.get(f"/api/sessions/{titled.json()['id']}")
        after = await client.get("/api/sessions")
    assert titled.status_code == 201 and untitled.status_code == 201
    assert titled.json()["title"] == "Plans" and untitled.json()["title"] == ""
    assert titled.json()["message_count"] == 0
    ids = [s["id"] for s in listed.json()["sessions"]]
    assert sorted(ids) == sorted([titled.json()["id"], untitled.json()["id"]])
    assert one.status_code == 200
    assert one.json() == {**titled.json(), "messages": []}
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(again, 404, "session_not_found")
    assert_error(gone, 404, "session_not_found")
    assert [s["id"] for s in after.json()["sessions"]] == [untitled.json()["id"]]


async def test_a_message_is_answered_as_json_and_kept(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        session_id = await api.create()
        answered = await api.say(session_id, content="hello there", model="alpha-served")
        default = await api.say(session_id, content="and again")  # no model: the selected one
        kept = await api.session(session_id)
    assert answered.status_code == 200, answered.text
    assert answered.headers["X-Ryx-Model"] == "alpha"
    body = answered.json()
    message = body["message"]
    assert message["role"] == "assistant" and message["state"] == "complete"
    assert message["content"] == reply("alpha-served", "hello there")
    assert message["model"] == "alpha"
    assert isinstance(body["ttft_s"], float) and body["ttft_s"] >= 0
    assert default.status_code == 200 and default.json()["message"]["model"] == "alpha"
    assert kept["title"] == "hello there"
    assert kept["message_count"] == 4
    assert [(m["role"], m["content"], m["model"], m["state"]) for m in kept["messages"]] == [
        ("user", "hello there", "alpha", "complete"),
        ("assistant", reply("alpha-served", "hello there"), "alpha", "complete"),
        ("user", "and again", "alpha", "complete"),
        ("assistant", reply("alpha-served", "and again"), "alpha", "complete"),
    ]
    assert all(isinstance(m["created"], float) for m in kept["messages"])
    first = posted(alpha)[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["json"]["stream"] is True
    assert first["json"]["messages"] == [{"role": "user", "content": "hello there"}]
    assert posted(beta) == []


async def test_a_message_is_streamed_as_events(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        session_id = await api.create()
        response = await api.say(session_id, content="stream it", model="beta", stream=True)
        kept = await api.session(session_id)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in sse_events(response.text)]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(data) for data in events[:-1]]
    deltas = "".join(p["delta"] for p in payloads if "delta" in p)
    assert deltas == reply("beta-served", "stream it")
    done = payloads[-1]["done"]
    assert done["content"] == deltas and done["state"] == "complete" and done["model"] == "beta"
    assert "ttft_s" in payloads[-1] and "tokens_per_s" in payloads[-1]
    assert kept["messages"][-1] == done


async def test_switching_models_mid_conversation(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        session_id = await api.create()
        first = await api.say(session_id, content="q1", model="alpha")
        second = await api.say(session_id, content="q2", model="b", stream=True)
        kept = await api.session(session_id)
    assert first.status_code == 200 and second.status_code == 200
    assert [p["json"]["messages"] for p in posted(alpha)] == [[{"role": "user", "content": "q1"}]]
    assert [p["json"]["messages"] for p in posted(beta)] == [
        [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": reply("alpha-served", "q1")},
            {"role": "user", "content": "q2"},
        ]
    ]
    assert [(m["role"], m["model"]) for m in kept["messages"]] == [
        ("user", "alpha"),
        ("assistant", "alpha"),
        ("user", "beta"),
        ("assistant", "beta"),
    ]
    assert kept["messages"][-1]["content"] == reply("beta-served", "q2")


# --------------------------------------------------------------------------- refusals


async def test_unknown_sessions_are_404(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        message = await api.say("nope", content="hi", model="alpha")
        read = await api.client.get("/api/sessions/nope")
        deleted = await api.client.delete("/api/sessions/nope")
        wrong = await api.client.put("/api/sessions/nope")
        other = await api.client.get("/api/sessions/nope/other")
    error = assert_error(message, 404, "session_not_found")
    assert "nope" in error["message"] and error["hint"]
    assert_error(read, 404, "session_not_found")
    assert_error(deleted, 404, "session_not_found")
    assert_error(wrong, 405, "method_not_allowed")
    assert_error(other, 404, "not_found")
    assert posted(alpha) == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_request", "object"),
        (b"", "invalid_request", "body"),
        (b"{}", "invalid_request", "'content'"),
        (b'{"content": ""}', "invalid_request", "'content'"),
        (b'{"content": 5}', "invalid_request", "'content'"),
        (b'{"content": "hi", "model": 5}', "invalid_request", "'model'"),
        (b'{"content": "hi", "stream": "yes"}', "invalid_request", "'stream'"),
    ],
)
async def test_a_bad_message_body_is_400_and_writes_nothing(
    alpha: FakeUpstream,
    beta: FakeUpstream,
    tmp_path: Path,
    body: bytes,
    code: str,
    field: str | None,
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        session_id = await api.create()
        response = await api.client.post(f"/api/sessions/{session_id}/messages", content=body)
        kept = await api.session(session_id)
    error = assert_error(response, 400, code)
    if field is not None:
        assert field in error["message"]
    assert kept["messages"] == []
    assert posted(alpha) == [] and posted(beta) == []


async def test_a_bad_title_is_400(alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        response = await api.client.post("/api/sessions", json={"title": 3})
        listed = await api.client.get("/api/sessions")
    error = assert_error(response, 400, "invalid_request")
    assert "'title'" in error["message"]
    assert listed.json()["sessions"] == []


async def test_an_unknown_model_is_404_and_writes_nothing(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        session_id = await api.create()
        response = await api.say(session_id, content="hi", model="gamma", stream=True)
        kept = await api.session(session_id)
    error = assert_error(response, 404, "model_not_found")
    assert "gamma" in error["message"]
    assert "alpha" in error["hint"] and "beta" in error["hint"]
    assert kept["messages"] == [] and kept["title"] == ""
    assert posted(alpha) == [] and posted(beta) == []


async def test_without_a_chat_service_the_routes_are_503(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    async with (
        running_proxy(two_models(alpha, beta)) as proxy,
        client_for(proxy) as client,
    ):
        listed = await client.get("/api/sessions")
        message = await client.post("/api/sessions/x/messages", json={"content": "hi"})
    for response in (listed, message):
        error = assert_error(response, 503, "sessions_unavailable")
        assert error["hint"]


async def test_a_store_that_cannot_open_is_500_with_its_hint(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "sessions.sqlite3")
    conn.execute("PRAGMA user_version = 99")  # written by a newer ryx-desktop
    conn.close()
    async with sessions(two_models(alpha, beta), tmp_path) as api:
        listed = await api.client.get("/api/sessions")
        message = await api.say("x", content="hi")
    for response in (listed, message):
        error = assert_error(response, 500, "store_failed")
        assert "newer ryx-desktop" in error["message"]
        assert "Update ryx-desktop" in error["hint"]


# --------------------------------------------------------------------------- security


async def test_the_host_and_origin_rules_are_those_of_v1(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    config = two_models(alpha, beta, allowed_origins=[APP])
    async with sessions(config, tmp_path) as api:
        session_id = await api.create()
        port = api.proxy.port
        requests = [
            ("GET", "/api/sessions", None),
            ("POST", "/api/sessions", {}),
            ("GET", f"/api/sessions/{session_id}", None),
            ("DELETE", f"/api/sessions/{session_id}", None),
            ("POST", f"/api/sessions/{session_id}/messages", {"content": "hi"}),
        ]
        refused = []
        for method, path, body in requests:
            for headers, code in (
                ({"Host": f"evil.example:{port}"}, "host_not_allowed"),
                ({"Host": f"localhost:{port + 1}"}, "host_not_allowed"),
                ({"Origin": "http://evil.example"}, "origin_not_allowed"),
            ):
                response = await api.client.request(method, path, json=body, headers=headers)
                refused.append((response, code))
        allowed = await api.client.get("/api/sessions", headers={"Origin": APP})
        kept = await api.session(session_id)
        listed = await api.client.get("/api/sessions")
    for response, code in refused:
        assert_error(response, 403, code)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    assert kept["messages"] == []  # nothing refused was written, nor deleted
    assert len(listed.json()["sessions"]) == 1
    assert posted(alpha) == []


async def test_a_configured_key_is_required(
    alpha: FakeUpstream, beta: FakeUpstream, tmp_path: Path
) -> None:
    config = two_models(alpha, beta, api_key=KEY)
    with_key = {"Authorization": f"Bearer {KEY}"}
    async with sessions(config, tmp_path, api_key=KEY) as api:
        client = api.client
        missing = await client.post("/api/sessions")
        wrong = await client.get("/api/sessions", headers={"Authorization": "Bearer nope"})
        created = await client.post("/api/sessions", headers=with_key)
        session_id = created.json()["id"]
        path = f"/api/sessions/{session_id}/messages"
        unkeyed = await client.post(path, json={"content": "hi"})
        answered = await client.post(path, json={"content": "hi"}, headers=with_key)
    assert_error(missing, 401, "invalid_api_key")
    assert_error(wrong, 401, "invalid_api_key")
    assert_error(unkeyed, 401, "invalid_api_key")
    assert created.status_code == 201
    # The service's own request to /v1 carries the key; the model never sees it.
    assert answered.status_code == 200, answered.text
    assert answered.json()["message"]["content"] == reply("alpha-served", "hi")
    assert [p["headers"].get("authorization") for p in posted(alpha)] == [None]


# --------------------------------------------------------------------------- a client that leaves


@pytest.fixture
def very_slow(tmp_path: Path) -> Any:
    """A fake of the test's own that takes half a second per token (16 tokens: 8 s)."""
    upstream = start_fake_upstream(
        tmp_path, served_name="slow-served", env={"FAKE_VLLM_TOKEN_DELAY": "0.5"}
    )
    yield upstream
    upstream.stop()


async def cut_answer(api: Sessions, session_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The session's last message, once the proxy has stored it as cut."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = (await api.session(session_id))["messages"][-1]
        if last["state"] == "cut":
            return dict(last)
        if loop.time() > deadline:
            pytest.fail(f"the answer was not stored as cut within {timeout} s: {last}")
        await asyncio.sleep(0.01)  # polling the API: no event to wait on


async def test_a_client_leaving_mid_stream_cuts_the_answer(
    very_slow: FakeUpstream, tmp_path: Path
) -> None:
    config = make_config({"slow": external(very_slow)})
    async with sessions(config, tmp_path) as api:
        session_id = await api.create()
        path = f"/api/sessions/{session_id}/messages"
        body = {"content": "take your time", "stream": True}
        async with (
            api.client.stream("POST", path, json=body) as response,
            Chunks(response) as chunks,
        ):
            assert response.status_code == 200
            while b'"delta"' not in chunks.data:
                assert await chunks.read(), "the stream ended before its first piece"
        # Leaving the block closed the connection mid-answer (15 tokens, 7 s, to go).
        answer = await cut_answer(api, session_id)
        await wait_for(lambda: very_slow.disconnects() == 1, "the model's generation to stop", 5)
    full = reply("slow-served", "take your time")
    assert answer["role"] == "assistant" and answer["model"] == "slow"
    assert answer["content"] and full.startswith(answer["content"])
    assert answer["content"] != full


async def test_a_client_leaving_a_json_answer_cuts_it_too(
    very_slow: FakeUpstream, tmp_path: Path
) -> None:
    config = make_config({"slow": external(very_slow)})
    async with sessions(config, tmp_path) as api:
        session_id = await api.create()
        request = asyncio.ensure_future(api.say(session_id, content="wait for it"))
        await wait_for(lambda: len(posted(very_slow)) == 1, "the request to reach the model", 5)
        request.cancel()  # the client gives up: httpx closes the connection
        with pytest.raises(asyncio.CancelledError):
            await request
        answer = await cut_answer(api, session_id)
        await wait_for(lambda: very_slow.disconnects() == 1, "the model's generation to stop", 5)
    assert answer["model"] == "slow"
    assert reply("slow-served", "wait for it").startswith(answer["content"])


async def test_a_proxy_shutting_down_mid_answer_keeps_it_as_cut(
    very_slow: FakeUpstream, tmp_path: Path
) -> None:
    config = make_config({"slow": external(very_slow)})
    async with sessions(config, tmp_path) as api:
        session_id = await api.create()
        path = f"/api/sessions/{session_id}/messages"
        body = {"content": "take your time", "stream": True}
        async with (
            api.client.stream("POST", path, json=body) as response,
            Chunks(response) as chunks,
        ):
            while b'"delta"' not in chunks.data:
                assert await chunks.read(), "the stream ended before its first piece"
            await asyncio.wait_for(api.proxy.server.close(), 10)  # the app quits
            with contextlib.suppress(httpx.HTTPError):
                await chunks.read_to_end()
        found = await api.store.get(session_id)
    assert found is not None
    answer = found[1][-1]
    assert answer.state == "cut"
    assert answer.content and reply("slow-served", "take your time").startswith(answer.content)
    assert b"[DONE]" not in chunks.data
