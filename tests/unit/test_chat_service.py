"""The chat core (issue 12, item 2): one message out, its answer streamed, timed and stored.

A scripted CompletionClient plays each answer: the events it yields, a fake clock moved between
them, a point where it waits for the test, an error. The store is the real SQLite one in
``tmp_path``, so what the service keeps is what a restart would find.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ryx_desktop.adapters.conversation_db import SqliteConversationStore
from ryx_desktop.core.chat import (
    ChatDelta,
    ChatDone,
    ChatEvent,
    ChatFailed,
    ChatProgress,
    ChatRequestError,
    ChatService,
    CompletionUsage,
    UnknownModel,
)
from ryx_desktop.core.conversations import Message, UnknownConversation
from ryx_desktop.core.errors import UnknownModelError
from tests.support.chat_script import FakeClock, Pause, ScriptedClient, Step, Tick

pytestmark = pytest.mark.asyncio

NAMES = {"alpha": "alpha", "alpha-served": "alpha", "beta": "beta", "b": "beta"}


class Rig:
    def __init__(self, tmp_path: Path, *scripts: list[Step], save_every: float = 0.5) -> None:
        self.clock = FakeClock(500.0)
        self.client = ScriptedClient(self.clock, *scripts)
        self.store = SqliteConversationStore(tmp_path / "chat.sqlite3")
        self.chat = ChatService(
            self.store,
            self.client,
            resolve=NAMES.get,
            clock=self.clock,
            save_every=save_every,
        )

    async def messages(self, conversation_id: str) -> list[Message]:
        found = await self.store.get(conversation_id)
        assert found is not None
        return found[1]

    async def send(self, conversation_id: str, content: str, model: str) -> list[ChatEvent]:
        return [event async for event in self.chat.send(conversation_id, content, model)]


def summary(messages: list[Message]) -> list[tuple[str, str, str | None, str]]:
    return [(m.role, m.content, m.model, m.state) for m in messages]


# --------------------------------------------------------------------------- an answer


async def test_an_answer_streams_and_is_stored_with_its_timing(tmp_path: Path) -> None:
    script: list[Step] = [
        ChatProgress("loading alpha 40 %"),
        Tick(2.0),
        ChatDelta("Hel"),
        Tick(0.25),
        ChatDelta(""),  # the role chunk's empty content: nothing to say
        ChatDelta("lo"),
        Tick(0.75),
        ChatDelta("!"),
        Tick(3.0),  # the usage comes later: not part of the decode time
        CompletionUsage(completion_tokens=5, prompt_tokens=3),
    ]
    rig = Rig(tmp_path, script)
    conversation = await rig.store.create()
    events = await rig.send(conversation.id, "hi", "alpha-served")
    stored = await rig.messages(conversation.id)
    await rig.store.close()

    assert events[:4] == [
        ChatProgress("loading alpha 40 %"),
        ChatDelta("Hel"),
        ChatDelta("lo"),
        ChatDelta("!"),
    ]
    done = events[4]
    assert isinstance(done, ChatDone) and len(events) == 5
    assert done.ttft_s == 2.0
    assert done.tokens_per_s == 4.0  # (5 - 1) tokens in the 1 s from the first to the last piece
    assert done.completion_tokens == 5
    assert summary(stored) == [
        ("user", "hi", "alpha", "complete"),
        ("assistant", "Hello!", "alpha", "complete"),
    ]
    assert done.message == stored[1]
    # The name goes as given (the proxy routes it); the stored model is the key.
    assert rig.client.calls == [("alpha-served", [{"role": "user", "content": "hi"}])]


async def test_without_usage_the_pieces_are_counted(tmp_path: Path) -> None:
    script: list[Step] = [Tick(0.5), ChatDelta("a"), Tick(1.0), ChatDelta("b"), ChatDelta("c")]
    rig = Rig(tmp_path, script)
    conversation = await rig.store.create()
    events = await rig.send(conversation.id, "hi", "alpha")
    await rig.store.close()
    done = events[-1]
    assert isinstance(done, ChatDone)
    assert (done.ttft_s, done.tokens_per_s, done.completion_tokens) == (0.5, 2.0, 3)


async def test_an_empty_answer_has_no_timing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Tick(1.0)])
    conversation = await rig.store.create()
    events = await rig.send(conversation.id, "hi", "alpha")
    await rig.store.close()
    assert len(events) == 1 and isinstance(events[0], ChatDone)
    done = events[0]
    assert (done.ttft_s, done.tokens_per_s, done.completion_tokens) == (None, None, None)
    assert (done.message.content, done.message.state) == ("", "complete")


async def test_the_answer_is_saved_while_it_streams(tmp_path: Path) -> None:
    pause = Pause()
    script: list[Step] = [ChatDelta("a"), Tick(1.0), ChatDelta("b"), pause, ChatDelta("c")]
    rig = Rig(tmp_path, script, save_every=1.0)
    conversation = await rig.store.create()
    task = asyncio.ensure_future(rig.send(conversation.id, "hi", "alpha"))
    await pause.reached.wait()
    while_streaming = await rig.messages(conversation.id)
    pause.release.set()
    await task
    after = await rig.messages(conversation.id)
    await rig.store.close()
    assert summary(while_streaming)[1] == ("assistant", "ab", "alpha", "streaming")
    assert summary(after)[1] == ("assistant", "abc", "alpha", "complete")


# --------------------------------------------------------------------------- cancelling


async def test_closing_the_events_keeps_the_partial_answer_as_cut(tmp_path: Path) -> None:
    script: list[Step] = [ChatDelta("part"), ChatDelta("ial"), ChatDelta(" never sent")]
    rig = Rig(tmp_path, script, [ChatDelta("next")])
    conversation = await rig.store.create()
    events = rig.chat.send(conversation.id, "first", "alpha")
    got = [await anext(events), await anext(events)]
    await events.aclose()  # Stop pressed
    stored = await rig.messages(conversation.id)
    await rig.send(conversation.id, "go on", "alpha")
    await rig.store.close()
    assert got == [ChatDelta("part"), ChatDelta("ial")]
    assert summary(stored)[1] == ("assistant", "partial", "alpha", "cut")
    assert rig.client.ended[0] == "closed"  # the request was closed, so the model stops
    # A cut answer is part of the conversation: the next request's history has it.
    assert rig.client.calls[1][1] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "go on"},
    ]


async def test_cancelling_the_task_keeps_the_partial_answer_as_cut(tmp_path: Path) -> None:
    pause = Pause()
    rig = Rig(tmp_path, [ChatDelta("so far"), pause, ChatDelta("never")])
    conversation = await rig.store.create()
    task = asyncio.ensure_future(rig.send(conversation.id, "hi", "alpha"))
    await pause.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await rig.messages(conversation.id)
    await rig.store.close()
    assert summary(stored)[1] == ("assistant", "so far", "alpha", "cut")
    assert rig.client.ended == ["cancelled"]


# --------------------------------------------------------------------------- failures


async def test_a_failed_answer_is_stored_failed_and_left_out_of_the_next_history(
    tmp_path: Path,
) -> None:
    error = ChatRequestError("alpha could not start: no GPU", "Set devices: none", 503)
    rig = Rig(tmp_path, [ChatDelta("so"), error], [ChatDelta("fine")])
    conversation = await rig.store.create()
    events = await rig.send(conversation.id, "first", "alpha")
    await rig.send(conversation.id, "second", "alpha")
    stored = await rig.messages(conversation.id)
    await rig.store.close()
    assert events[0] == ChatDelta("so")
    failed = events[1]
    assert isinstance(failed, ChatFailed) and len(events) == 2
    assert (failed.text, failed.hint) == ("alpha could not start: no GPU", "Set devices: none")
    assert (failed.message.state, failed.message.content) == ("failed", "so")
    assert failed.message.error == "alpha could not start: no GPU"
    assert summary(stored) == [
        ("user", "first", "alpha", "complete"),
        ("assistant", "so", "alpha", "failed"),
        ("user", "second", "alpha", "complete"),
        ("assistant", "fine", "alpha", "complete"),
    ]
    assert rig.client.calls[1][1] == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]


async def test_unknown_model_or_conversation_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    conversation = await rig.store.create()
    with pytest.raises(UnknownModel) as unknown_model:
        await rig.send(conversation.id, "hi", "gamma")
    with pytest.raises(UnknownConversation) as unknown_conversation:
        await rig.send("no-such-id", "hi", "alpha")
    stored = await rig.messages(conversation.id)
    await rig.store.close()
    assert UnknownModel is UnknownModelError
    assert "gamma" in unknown_model.value.message and unknown_model.value.hint
    assert "no-such-id" in unknown_conversation.value.message
    assert unknown_conversation.value.hint
    assert stored == []
    assert rig.client.calls == []


# --------------------------------------------------------------------------- switching models


async def test_switching_models_mid_conversation_hands_over_the_history(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [ChatDelta("from alpha")], [ChatDelta("from beta")])
    conversation = await rig.store.create()
    first = await rig.send(conversation.id, "q1", "alpha")
    second = await rig.send(conversation.id, "q2", "b")  # beta's alias
    stored = await rig.messages(conversation.id)
    await rig.store.close()
    assert isinstance(first[-1], ChatDone) and first[-1].message.model == "alpha"
    assert isinstance(second[-1], ChatDone) and second[-1].message.model == "beta"
    assert rig.client.calls[1] == (
        "b",
        [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "from alpha"},
            {"role": "user", "content": "q2"},
        ],
    )
    assert [m.model for m in stored] == ["alpha", "alpha", "beta", "beta"]
