"""Watching the config file while the app runs: a hand edit is checked, then applied or refused.

The file is the single source of truth. ``ConfigWatcher`` polls it every ``interval`` seconds off
the event loop (a read and a SHA-256 of a few kilobytes in an executor; polling works everywhere,
and Qt's file watcher loses track of a file replaced by rename, as editors and our own save do).

* A change is acted on once two polls in a row see the same content, so a file caught half
  written by an editor that writes in place is never applied (an empty file is a valid config
  with no models: applied, it would stop every model).
* A valid change is applied (``apply``: the desktop reconfigures the engine with it) and
  becomes what the app read. An invalid one is refused: the app keeps running on what it read
  before and observers get the error (FILE:LINE:COL and a hint); a later fix, or putting the
  old content back, ends the problem. A deleted file is not applied either (the built-in
  default would stop the user's models): the app keeps its settings and says so.
* ``save`` is the app's own write: it refuses (``ConfigChangedError``) to overwrite a change
  made since the app read the file, loads that change instead, and remembers what it wrote so
  the next poll does not take the app's own save for a hand edit.

Polls and saves take turns (one lock), so a poll never reads the file between a save's write
and the save remembering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ryx_desktop.config._errors import ConfigError, RyxError
from ryx_desktop.config._fingerprint import (
    ConfigChangedError,
    Fingerprint,
    config_of,
    read_error,
    read_snapshot,
)
from ryx_desktop.config._save import save_config
from ryx_desktop.config._schema import Config

log = logging.getLogger(__name__)

#: Applies a config to the running app (the desktop: the supervisor's ``reconfigure``).
ApplyConfig = Callable[[Config], Awaitable[object]]

DEFAULT_INTERVAL = 1.0


class FileChange(enum.Enum):
    """What one poll (or save) found."""

    #: The file holds what the app read.
    UNCHANGED = "unchanged"
    #: A change seen once: it is loaded when the next poll sees the same content.
    SETTLING = "settling"
    #: A change loaded and applied: it is what the app read now.
    RELOADED = "reloaded"
    #: A change refused (it does not validate, or could not be applied); the app runs on.
    INVALID = "invalid"
    #: The file is gone; the app keeps the settings it read.
    REMOVED = "removed"
    #: The file holds again what the app read (an edit undone): the problem is over.
    RESTORED = "restored"
    #: The app wrote the file itself.
    SAVED = "saved"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """What observers are told: a reload, a save, a problem (``problem``) or its end."""

    change: FileChange
    problem: ConfigError | None = None


WatchObserver = Callable[[WatchEvent], None]


class ConfigWatcher:
    """The config file at ``path``, read as ``fingerprint``; polled, reloaded and saved to."""

    def __init__(
        self,
        path: Path,
        fingerprint: Fingerprint,
        apply: ApplyConfig,
        *,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._path = path
        self._read = fingerprint
        self._apply = apply
        self._interval = interval
        self._pending: Fingerprint | None = None  # a change seen once, not yet settled
        self._refused: Fingerprint | None = None  # a change refused; tried again once it changes
        self._problem: ConfigError | None = None
        self._observers: list[WatchObserver] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fingerprint(self) -> Fingerprint:
        """What the app last read from the file (or wrote to it): saves are checked against it."""
        return self._read

    @property
    def problem(self) -> ConfigError | None:
        """Why the file's latest content is not in effect (None: it is)."""
        return self._problem

    def subscribe(self, observer: WatchObserver) -> Callable[[], None]:
        """Call ``observer`` with each reload, save, new problem and end of one; returns the
        unsubscribe function."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    # ---- running ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Start polling every ``interval`` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"watch {self._path.name}")

    async def close(self) -> None:
        """Stop polling (a poll under way is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception:  # the watcher outlives a surprise; the next poll tries again
                log.exception("checking %s failed", self._path)

    # ---- polling ----------------------------------------------------------------------------

    async def poll(self, *, settle: bool = True) -> FileChange:
        """Look at the file once and act on what changed; ``settle=False`` acts on a change
        seen for the first time."""
        async with self._lock:
            return await self._poll(settle)

    async def _poll(self, settle: bool) -> FileChange:
        loop = asyncio.get_running_loop()
        try:
            snapshot = await loop.run_in_executor(None, read_snapshot, self._path)
        except OSError as exc:
            self._pending = None
            return self._refuse(FileChange.INVALID, read_error(self._path, exc))
        seen = snapshot.fingerprint
        if seen.same_content(self._read):
            self._pending = self._refused = None
            if self._problem is None:
                return FileChange.UNCHANGED
            self._problem = None
            self._emit(WatchEvent(FileChange.RESTORED))
            return FileChange.RESTORED
        if seen == self._refused:
            return FileChange.REMOVED if not seen.exists else FileChange.INVALID
        if settle and seen != self._pending:
            self._pending = seen
            return FileChange.SETTLING
        self._pending = None
        if not seen.exists:
            self._refused = seen
            return self._refuse(FileChange.REMOVED, self._removed())
        try:
            config = await loop.run_in_executor(None, config_of, snapshot, self._path)
            await self._apply(config)
        except RyxError as exc:
            log.info("%s not reloaded: %s", self._path, exc.message)
            self._refused = seen
            problem = exc if isinstance(exc, ConfigError) else ConfigError(exc.message, exc.hint)
            return self._refuse(FileChange.INVALID, problem)
        log.info("reloaded %s", self._path)
        self._read = seen
        self._refused = self._problem = None
        self._emit(WatchEvent(FileChange.RELOADED))
        return FileChange.RELOADED

    def _refuse(self, change: FileChange, problem: ConfigError) -> FileChange:
        """Keep running on what was read; tell observers unless they were told this already."""
        told = self._problem
        self._problem = problem
        if told is None or (told.message, told.hint) != (problem.message, problem.hint):
            self._emit(WatchEvent(change, problem))
        return change

    def _removed(self) -> ConfigError:
        return ConfigError(
            f"{self._path} was deleted; ryx-desktop keeps running on the settings it read from it.",
            "Put the file back, or save from Settings to write it again.",
        )

    # ---- saving -----------------------------------------------------------------------------

    async def save(self, config: Config) -> None:
        """Write ``config`` to the file unless it changed since the app read it, then apply it.

        A change made since is not overwritten: it is loaded (as a poll would) and
        ``ConfigChangedError`` says so. Other failures raise ConfigError with a hint, and leave
        the running app as it was.
        """
        save_hint = f"Check that you may write to {self._path.parent}, or start with --config PATH."
        loop = asyncio.get_running_loop()
        write = functools.partial(save_config, config, self._path, expected=self._read)
        async with self._lock:
            try:
                written = await loop.run_in_executor(None, write)
            except ConfigChangedError as exc:
                refused = exc
            except OSError as exc:
                message = f"cannot save {self._path}: {exc.strerror or exc}"
                raise ConfigError(message, save_hint) from exc
            except ConfigError as exc:
                # save_config's own refusals carry their hint; a failed write gets the generic one.
                hint = save_hint if exc.hint == ConfigError.hint else exc.hint
                raise ConfigError(exc.message, hint) from exc
            else:
                self._read = written
                self._pending = self._refused = self._problem = None
                self._emit(WatchEvent(FileChange.SAVED))
                await self._apply(config)
                return
        log.info("not saved: %s changed on disk", self._path)
        await self.poll()  # load what is there now (once it has settled)
        raise refused

    def _emit(self, event: WatchEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("a config file observer failed")
