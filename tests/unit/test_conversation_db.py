"""The conversations kept in SQLite (issue 12, item 3): CRUD, order, migrations, crash safety.

Every test uses a real file in ``tmp_path`` and a fake unix clock, so orders and times are
exact. The crash test kills (SIGKILL) a process that is writing an answer, as a user killing the
app mid-answer would, and reopens the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from ryx_desktop.adapters.conversation_db import (
    MIGRATIONS,
    SqliteConversationStore,
    default_store_path,
)
from ryx_desktop.core.conversations import (
    ConversationStoreError,
    UnknownConversation,
    default_title,
)
from ryx_desktop.core.errors import RyxError

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Unix time that moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "conversations.sqlite3"


def open_store(db: Path, clock: FakeClock, **kwargs: object) -> SqliteConversationStore:
    return SqliteConversationStore(db, clock=clock, **kwargs)  # type: ignore[arg-type]


def raw(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Run ``sql`` on the file with a connection of the test's own."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def write_junk(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)


# --------------------------------------------------------------------------- CRUD and order


async def test_created_conversations_are_listed_most_recently_updated_first(
    db: Path, clock: FakeClock
) -> None:
    store = open_store(db, clock)
    first = await store.create("first")
    clock.advance()
    second = await store.create("second")
    assert [c.id for c in await store.list()] == [second.id, first.id]
    clock.advance()
    await store.add_message(first.id, "user", "hello", model="alpha")
    listed = await store.list()
    await store.close()
    assert [c.id for c in listed] == [first.id, second.id]  # the message made it the latest
    assert listed[0].updated == clock.now
    assert listed[0].created == first.created
    assert (listed[0].message_count, listed[1].message_count) == (1, 0)
    assert len(first.id) == 32 and first.id != second.id


async def test_messages_come_back_in_order_with_their_fields(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    conversation = await store.create("chat")
    user = await store.add_message(conversation.id, "user", "question", model="alpha")
    clock.advance()
    answer = await store.add_message(
        conversation.id, "assistant", "", model="beta", state="streaming"
    )
    clock.advance()
    updated = await store.update_message(answer.id, "an answer", "failed", "it broke")
    found = await store.get(conversation.id)
    await store.close()
    assert found is not None
    summary, messages = found
    assert summary.message_count == 2
    assert messages == [user, updated]
    assert (updated.content, updated.state, updated.error) == ("an answer", "failed", "it broke")
    assert (updated.model, updated.role, updated.created) == ("beta", "assistant", answer.created)
    assert user.model == "alpha" and user.state == "complete" and user.id < answer.id
    assert summary.updated == clock.now  # the update counts as activity


async def test_rename_sets_the_title_and_unknown_ids_say_so(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    conversation = await store.create()
    clock.advance()
    renamed = await store.rename(conversation.id, "new name")
    missing = await store.rename("nope", "x")
    got = await store.get("nope")
    with pytest.raises(UnknownConversation) as caught:
        await store.add_message("nope", "user", "hi", model=None)
    with pytest.raises(ConversationStoreError):
        await store.update_message(12345, "x", "complete")
    await store.close()
    assert renamed is not None
    assert (renamed.title, renamed.updated) == ("new name", clock.now)
    assert missing is None and got is None
    assert "nope" in caught.value.message and caught.value.hint


async def test_the_first_user_message_titles_an_untitled_conversation(
    db: Path, clock: FakeClock
) -> None:
    store = open_store(db, clock)
    untitled = await store.create()
    titled = await store.create("mine")
    long_text = "Explain   the difference between\nprocesses and threads in Linux kernels, please"
    await store.add_message(untitled.id, "system", "be brief", model=None)
    await store.add_message(untitled.id, "user", long_text, model="alpha")
    await store.add_message(untitled.id, "user", "a second question", model="alpha")
    await store.add_message(titled.id, "user", "hello there", model="alpha")
    by_id = {c.id: c for c in await store.list()}
    await store.close()
    assert by_id[untitled.id].title == default_title(long_text)
    assert by_id[untitled.id].title == "Explain the difference between processes…"
    assert by_id[titled.id].title == "mine"
    assert default_title("short one") == "short one"
    assert default_title("x" * 60) == "x" * 40 + "…"  # one long word: cut inside it


async def test_delete_removes_the_conversation_and_its_messages(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    gone = await store.create("gone")
    kept = await store.create("kept")
    await store.add_message(gone.id, "user", "a", model="alpha")
    await store.add_message(gone.id, "assistant", "b", model="alpha")
    await store.add_message(kept.id, "user", "c", model="alpha")
    assert await store.delete(gone.id) is True
    assert await store.delete(gone.id) is False
    assert await store.get(gone.id) is None
    assert [c.id for c in await store.list()] == [kept.id]
    await store.close()
    remaining = raw(db, "SELECT conversation_id, content FROM messages")
    assert remaining == [(kept.id, "c")]


async def test_a_closed_store_refuses_calls(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    await store.create()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(ConversationStoreError):
        await store.list()


# --------------------------------------------------------------------------- the file


async def test_everything_survives_a_reopen(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    conversation = await store.create("kept")
    await store.add_message(conversation.id, "user", "hi", model="alpha")
    await store.add_message(conversation.id, "assistant", "hello", model="alpha")
    before = await store.get(conversation.id)
    await store.close()
    again = open_store(db, clock)
    after = await again.get(conversation.id)
    await again.close()
    assert after == before


async def test_the_file_is_in_wal_mode_with_foreign_keys(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    await store.open()
    mode = raw(db, "PRAGMA journal_mode")  # WAL is kept in the file itself
    version = raw(db, "PRAGMA user_version")
    await store.close()
    assert mode == [("wal",)]
    assert version == [(len(MIGRATIONS),)]


async def test_an_answer_left_streaming_is_cut_on_reopen(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    conversation = await store.create()
    await store.add_message(conversation.id, "user", "hi", model="alpha")
    answer = await store.add_message(
        conversation.id, "assistant", "", model="alpha", state="streaming"
    )
    await store.update_message(answer.id, "half an ans", "streaming")
    await store.close()
    again = open_store(db, clock)
    found = await again.get(conversation.id)
    await again.close()
    assert found is not None
    states = [(m.role, m.content, m.state) for m in found[1]]
    assert states == [("user", "hi", "complete"), ("assistant", "half an ans", "cut")]


_WRITER = """
import asyncio, sys
from pathlib import Path
from ryx_desktop.adapters.conversation_db import SqliteConversationStore

async def main() -> None:
    store = SqliteConversationStore(Path(sys.argv[1]))
    conversation = await store.create()
    await store.add_message(conversation.id, "user", "tell me", model="alpha")
    answer = await store.add_message(
        conversation.id, "assistant", "", model="alpha", state="streaming"
    )
    await store.update_message(answer.id, "the partial", "streaming")
    print(conversation.id, flush=True)
    await asyncio.Event().wait()  # mid-answer until killed

asyncio.run(main())
"""


async def test_a_process_killed_mid_answer_leaves_a_cut_answer(db: Path, clock: FakeClock) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    conversation_id = line.decode().strip()
    assert conversation_id
    store = open_store(db, clock)
    found = await store.get(conversation_id)
    await store.close()
    assert found is not None
    states = [(m.role, m.content, m.state) for m in found[1]]
    assert states == [("user", "tell me", "complete"), ("assistant", "the partial", "cut")]


async def test_a_file_that_is_not_a_database_is_refused_clearly(db: Path, clock: FakeClock) -> None:
    write_junk(db)
    store = open_store(db, clock)
    with pytest.raises(ConversationStoreError) as caught:
        await store.list()
    await store.close()
    assert str(db) in caught.value.message
    assert caught.value.hint


async def test_the_default_file_is_in_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert default_store_path() == tmp_path / "share" / "ryx-desktop" / "conversations.sqlite3"


# --------------------------------------------------------------------------- migrations


async def test_an_older_file_is_migrated_keeping_its_data(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    conversation = await store.create("old")
    await store.add_message(conversation.id, "user", "hi", model="alpha")
    await store.close()
    ran_in: list[str] = []

    def v2(conn: sqlite3.Connection) -> None:
        ran_in.append(threading.current_thread().name)
        conn.execute("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")

    newer = open_store(db, clock, migrations=(*MIGRATIONS, v2))
    found = await newer.get(conversation.id)
    await newer.close()
    again = open_store(db, clock, migrations=(*MIGRATIONS, v2))
    await again.open()  # already at version 2: v2 does not run again
    await again.close()
    assert found is not None and [m.content for m in found[1]] == ["hi"]
    assert raw(db, "PRAGMA user_version") == [(2,)]
    assert raw(db, "SELECT title, pinned FROM conversations") == [("old", 0)]
    assert len(ran_in) == 1
    assert ran_in[0] != threading.current_thread().name  # the worker thread, not the loop's


async def test_an_empty_file_at_version_0_gets_the_whole_schema(db: Path, clock: FakeClock) -> None:
    db.parent.mkdir(parents=True)
    raw(db, "CREATE TABLE unrelated (x)")  # a file some earlier tool left, version 0
    store = open_store(db, clock)
    conversation = await store.create("new")
    listed = await store.list()
    await store.close()
    assert [c.id for c in listed] == [conversation.id]
    assert raw(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]


async def test_a_failing_migration_leaves_the_file_as_it_was(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    await store.create("old")
    await store.close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("THIS IS NOT SQL")

    failing = open_store(db, clock, migrations=(*MIGRATIONS, broken))
    with pytest.raises(ConversationStoreError):
        await failing.open()
    await failing.close()
    assert raw(db, "PRAGMA user_version") == [(1,)]
    assert raw(db, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []
    plain = open_store(db, clock)
    assert [c.title for c in await plain.list()] == ["old"]
    await plain.close()


async def test_a_file_from_a_newer_version_is_refused(db: Path, clock: FakeClock) -> None:
    store = open_store(db, clock)
    await store.create("from the future")
    await store.close()
    raw(db, "PRAGMA user_version = 99")
    older = open_store(db, clock)
    with pytest.raises(RyxError) as caught:
        await older.list()
    await older.close()
    assert isinstance(caught.value, ConversationStoreError)
    assert "newer ryx-desktop" in caught.value.message
    assert "99" in caught.value.message
    assert "Update ryx-desktop" in caught.value.hint
    assert raw(db, "PRAGMA user_version") == [(99,)]  # untouched
    assert raw(db, "SELECT title FROM conversations") == [("from the future",)]
