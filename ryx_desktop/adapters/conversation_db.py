"""The conversations kept in SQLite, in the user data folder.

One connection, used only from one worker thread (a single-thread executor), so the event loop
never waits on the disk and SQLite never sees two threads. The file is in WAL mode with foreign
keys on; each write is one transaction, so a process killed at any moment leaves the last
committed state. When the store opens, answers left in state ``streaming`` (the process that
wrote them died mid-answer) become ``cut``, their partial text kept.

The schema's version is ``PRAGMA user_version``; :data:`MIGRATIONS` lists the steps from each
version to the next (``MIGRATIONS[0]`` makes version 1 from an empty file). A later version
appends its step; a file written by a newer ryx-desktop (a version beyond the list) is refused.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from ryx_desktop.core.conversations import (
    ROLES,
    Conversation,
    ConversationStoreError,
    Message,
    MessageState,
    UnknownConversation,
    default_title,
)

APP_NAME = "ryx-desktop"
FILE_NAME = "conversations.sqlite3"
#: Overrides the folder (tests, portable setups).
DATA_DIR_VAR = "RYX_DATA_DIR"

#: One step of the schema: run inside a transaction that then sets the next version.
Migration = Callable[[sqlite3.Connection], None]

_T = TypeVar("_T")


def _v1(conn: sqlite3.Connection) -> None:
    """Version 1: conversations and their messages."""
    conn.execute(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            model TEXT,
            state TEXT NOT NULL CHECK (state IN ('complete', 'streaming', 'cut', 'failed')),
            error TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX messages_of_conversation ON messages (conversation_id, id)")
    conn.execute("CREATE INDEX conversations_by_update ON conversations (updated)")


#: The schema's steps, in order: the file's version is how many of them it has had.
MIGRATIONS: tuple[Migration, ...] = (_v1,)

_CONVERSATION = """SELECT c.id, c.title, c.created, c.updated,
    (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
    FROM conversations c"""
_MESSAGE = "SELECT id, conversation_id, role, content, model, state, created, error FROM messages"


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the conversations live: ``$RYX_DATA_DIR/conversations.sqlite3`` when that is set,
    else ``~/.local/share/ryx-desktop/conversations.sqlite3`` (the platform's user data folder)."""
    folder = (environ or {}).get(DATA_DIR_VAR)
    if folder:
        return Path(folder).expanduser() / FILE_NAME
    return platformdirs.user_data_path(APP_NAME, appauthor=False) / FILE_NAME


class SqliteConversationStore:
    """A :class:`~ryx_desktop.core.conversations.ConversationStore` in one SQLite file.

    ``executor`` must run one job at a time (its own single-thread executor when None, shut
    down by ``close``); ``clock`` gives the unix time stamped on what is written;
    ``migrations``: the schema's steps (tests add one to see a file migrated).
    The file is opened by the first call (or ``open``); its errors are
    :class:`ConversationStoreError`.
    """

    def __init__(
        self,
        path: Path,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = path
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            1, thread_name_prefix="ryx-conversations"
        )
        self._clock = clock
        self._migrations = tuple(migrations)
        self._conn: sqlite3.Connection | None = None  # touched only in the worker thread
        self._closed = False

    # ---- the async API ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and migrate) the file now rather than at the first call."""
        await self._run(lambda conn: None)

    async def create(self, title: str = "") -> Conversation:
        return await self._run(self._create, title)

    async def list(self) -> builtins.list[Conversation]:
        return await self._run(self._list)

    async def get(self, conversation_id: str) -> tuple[Conversation, builtins.list[Message]] | None:
        return await self._run(self._get, conversation_id)

    async def rename(self, conversation_id: str, title: str) -> Conversation | None:
        return await self._run(self._rename, conversation_id, title)

    async def delete(self, conversation_id: str) -> bool:
        return await self._run(self._delete, conversation_id)

    async def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        model: str | None,
        state: MessageState = "complete",
    ) -> Message:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        return await self._run(self._add_message, conversation_id, role, content, model, state)

    async def update_message(
        self, message_id: int, content: str, state: MessageState, error: str = ""
    ) -> Message:
        return await self._run(self._update_message, message_id, content, state, error)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def _run(self, job: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise ConversationStoreError(
                "the conversations store is closed", hint="This is a bug in ryx-desktop."
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_worker, job, args)

    # ---- in the worker thread ---------------------------------------------------------------

    def _in_worker(self, job: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return job(self._conn, *args)
        except sqlite3.Error as exc:
            raise ConversationStoreError(
                f"the conversations database {self.path} failed: {exc}"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: a killed process loses nothing
            self._migrate(conn)
            with _transaction(conn):
                conn.execute("UPDATE messages SET state = 'cut' WHERE state = 'streaming'")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConversationStoreError(
                f"the conversations database {self.path} cannot be read: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        known = len(self._migrations)
        while True:
            with _transaction(conn):  # re-read inside: another process may have migrated
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version > known:
                    raise ConversationStoreError(
                        f"the conversations database {self.path} was written by a newer "
                        f"ryx-desktop (schema version {version}; this one knows up to {known})",
                        hint="Update ryx-desktop, or move the file away to start with an "
                        "empty history.",
                    )
                if version == known:
                    return
                self._migrations[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _create(self, conn: sqlite3.Connection, title: str) -> Conversation:
        now = self._clock()
        conversation = Conversation(uuid.uuid4().hex, title, now, now, 0)
        with _transaction(conn):
            conn.execute(
                "INSERT INTO conversations (id, title, created, updated) VALUES (?, ?, ?, ?)",
                (conversation.id, title, now, now),
            )
        return conversation

    def _list(self, conn: sqlite3.Connection) -> builtins.list[Conversation]:
        rows = conn.execute(f"{_CONVERSATION} ORDER BY c.updated DESC, c.created DESC, c.rowid")
        return [Conversation(*row) for row in rows]

    def _get(
        self, conn: sqlite3.Connection, conversation_id: str
    ) -> tuple[Conversation, builtins.list[Message]] | None:
        with _transaction(conn, write=False):  # one snapshot of both
            conversation = _conversation(conn, conversation_id)
            if conversation is None:
                return None
            rows = conn.execute(
                f"{_MESSAGE} WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            )
            return conversation, [Message(*row) for row in rows]

    def _rename(
        self, conn: sqlite3.Connection, conversation_id: str, title: str
    ) -> Conversation | None:
        with _transaction(conn):
            cursor = conn.execute(
                "UPDATE conversations SET title = ?, updated = ? WHERE id = ?",
                (title, self._clock(), conversation_id),
            )
            if cursor.rowcount == 0:
                return None
            return _conversation(conn, conversation_id)

    def _delete(self, conn: sqlite3.Connection, conversation_id: str) -> bool:
        with _transaction(conn):
            cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return cursor.rowcount > 0

    def _add_message(
        self,
        conn: sqlite3.Connection,
        conversation_id: str,
        role: str,
        content: str,
        model: str | None,
        state: MessageState,
    ) -> Message:
        now = self._clock()
        with _transaction(conn):
            row = conn.execute(
                "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                raise UnknownConversation(conversation_id)
            title = row[0]
            if not title and role == "user":
                title = default_title(content)
            conn.execute(
                "UPDATE conversations SET title = ?, updated = ? WHERE id = ?",
                (title, now, conversation_id),
            )
            cursor = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, model, state, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, model, state, now),
            )
            assert cursor.lastrowid is not None
            return Message(cursor.lastrowid, conversation_id, role, content, model, state, now)

    def _update_message(
        self, conn: sqlite3.Connection, message_id: int, content: str, state: str, error: str
    ) -> Message:
        with _transaction(conn):
            cursor = conn.execute(
                "UPDATE messages SET content = ?, state = ?, error = ? WHERE id = ?",
                (content, state, error, message_id),
            )
            if cursor.rowcount == 0:
                raise ConversationStoreError(
                    f"there is no message {message_id}",
                    hint="Its conversation may have been deleted meanwhile.",
                )
            row = conn.execute(f"{_MESSAGE} WHERE id = ?", (message_id,)).fetchone()
            conn.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?", (self._clock(), row[1])
            )
            return Message(*row)


def _conversation(conn: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    row = conn.execute(f"{_CONVERSATION} WHERE c.id = ?", (conversation_id,)).fetchone()
    return None if row is None else Conversation(*row)


@contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """One transaction; a write one takes the lock at once (no deadlock upgrading a read)."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
