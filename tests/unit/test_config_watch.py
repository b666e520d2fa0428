"""The config file watched while the app runs (issue 11, item 9), one poll at a time.

Each test calls ``poll`` itself (the interval is an hour), so nothing waits on a clock: a change
is loaded on the second poll that sees it, refused ones are reported once, and the app's own
save is neither refused nor reloaded.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ryx_desktop.config import (
    Config,
    ConfigChangedError,
    ConfigWatcher,
    FileChange,
    WatchEvent,
    fingerprint_of,
    load_config,
    read_config,
    save_config,
)
from ryx_desktop.core.errors import RyxError
from tests.support.config_files import config_with, hand_edit
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

HOUR = 3600.0


class Rig:
    """A config file, the watcher over it, what it applied and what it told its observer."""

    def __init__(self, tmp_path: Path, *, interval: float = HOUR) -> None:
        self.path = tmp_path / "config.yaml"
        save_config(config_with(), self.path)
        self.original = self.path.read_bytes()
        config, read = read_config(self.path)
        self.config = config
        self.applied: list[Config] = []
        self.events: list[WatchEvent] = []
        self.fail_with: RyxError | None = None
        self.watcher = ConfigWatcher(self.path, read, self.apply, interval=interval)
        self.watcher.subscribe(self.events.append)

    async def apply(self, config: Config) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.applied.append(config)

    def changes(self) -> list[FileChange]:
        return [event.change for event in self.events]


async def test_an_unchanged_file_applies_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert await rig.watcher.poll() is FileChange.UNCHANGED
    assert await rig.watcher.poll() is FileChange.UNCHANGED
    assert rig.applied == [] and rig.events == []


async def test_a_hand_edit_is_applied_once_it_has_settled(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    hand_edit(rig.path, "model: /models/a", "model: /models/a-v2")

    assert await rig.watcher.poll() is FileChange.SETTLING
    assert rig.applied == []
    assert await rig.watcher.poll() is FileChange.RELOADED

    [applied] = rig.applied
    assert applied.models["a"].model == "/models/a-v2"
    assert applied == load_config(rig.path)
    assert rig.watcher.fingerprint == fingerprint_of(rig.path)  # what saves are checked against
    assert rig.events == [WatchEvent(FileChange.RELOADED)]
    assert await rig.watcher.poll() is FileChange.UNCHANGED
    assert len(rig.applied) == 1


async def test_a_file_caught_half_written_is_never_applied(tmp_path: Path) -> None:
    # An empty file is a valid config with no models: applied, it would stop every model.
    rig = Rig(tmp_path)
    rig.path.write_text("")
    assert await rig.watcher.poll() is FileChange.SETTLING
    full = rig.original.decode().replace("model: /models/a", "model: /models/a-v2")
    rig.path.write_text(full)  # the editor finished writing before the next look
    assert await rig.watcher.poll() is FileChange.SETTLING
    assert await rig.watcher.poll() is FileChange.RELOADED
    assert [c.models["a"].model for c in rig.applied] == ["/models/a-v2"]


async def test_an_invalid_edit_is_refused_once_with_its_place_and_a_fix_is_loaded(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    read = rig.watcher.fingerprint
    hand_edit(rig.path, "port: 8001", "port: oops")
    lines = rig.path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "port: oops" in text)
    column = lines[line - 1].index("oops") + 1

    assert await rig.watcher.poll() is FileChange.SETTLING
    assert await rig.watcher.poll() is FileChange.INVALID

    [event] = rig.events
    assert event.change is FileChange.INVALID and event.problem is not None
    assert event.problem.message == (
        f"{rig.path}:{line}:{column}: models.a.port: expected a whole number, got 'oops'"
    )
    assert event.problem.hint
    assert rig.watcher.problem is event.problem
    assert rig.applied == []
    assert rig.watcher.fingerprint == read  # the app still runs on what it read
    for _ in range(3):  # told once, not at every look
        assert await rig.watcher.poll() is FileChange.INVALID
    assert len(rig.events) == 1

    hand_edit(rig.path, "port: oops", "port: 8002")
    assert await rig.watcher.poll() is FileChange.SETTLING
    assert await rig.watcher.poll() is FileChange.RELOADED
    assert rig.events[-1] == WatchEvent(FileChange.RELOADED)
    assert rig.watcher.problem is None
    assert [c.models["a"].port for c in rig.applied] == [8002]


async def test_undoing_an_invalid_edit_ends_the_problem(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    hand_edit(rig.path, "port: 8001", "port: oops")
    await rig.watcher.poll()
    assert await rig.watcher.poll() is FileChange.INVALID

    rig.path.write_bytes(rig.original)
    assert await rig.watcher.poll() is FileChange.RESTORED  # at once: it is what the app read
    assert rig.changes() == [FileChange.INVALID, FileChange.RESTORED]
    assert rig.watcher.problem is None and rig.applied == []


async def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.path.unlink()
    rig.path.mkdir()
    assert await rig.watcher.poll() is FileChange.INVALID
    problem = rig.watcher.problem
    assert problem is not None
    assert problem.message == f"{rig.path}: is a directory, not a config file"
    assert rig.applied == []


async def test_a_deleted_file_keeps_the_settings_and_a_save_writes_it_again(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.path.unlink()
    assert await rig.watcher.poll() is FileChange.SETTLING
    assert await rig.watcher.poll() is FileChange.REMOVED
    assert await rig.watcher.poll() is FileChange.REMOVED
    [event] = rig.events
    assert event.problem is not None
    assert event.problem.message == (
        f"{rig.path} was deleted; ryx-desktop keeps running on the settings it read from it."
    )
    assert rig.applied == []  # not the built-in default: that would stop the user's models

    await rig.watcher.save(config_with(idle_ttl=900))
    assert load_config(rig.path).idle_ttl == 900
    assert rig.changes() == [FileChange.REMOVED, FileChange.SAVED]
    assert rig.watcher.problem is None
    assert await rig.watcher.poll() is FileChange.UNCHANGED


async def test_the_apps_own_save_is_applied_and_not_taken_for_a_hand_edit(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    new = config_with(idle_ttl=900)
    await rig.watcher.save(new)

    assert load_config(rig.path) == new
    assert rig.applied == [new]
    assert rig.watcher.fingerprint == fingerprint_of(rig.path)
    assert rig.changes() == [FileChange.SAVED]
    for _ in range(2):
        assert await rig.watcher.poll() is FileChange.UNCHANGED
    assert rig.applied == [new]  # no reload of what the app wrote itself

    await rig.watcher.save(config_with(idle_ttl=60))  # and the next save is not refused
    assert load_config(rig.path).idle_ttl == 60


async def test_a_save_after_a_hand_edit_the_watcher_saw_is_refused_and_the_edit_loaded(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    edited = hand_edit(rig.path, "model: /models/a", "model: /models/a-v2")
    assert await rig.watcher.poll() is FileChange.SETTLING  # seen, not loaded yet

    with pytest.raises(ConfigChangedError) as refused:
        await rig.watcher.save(config_with(idle_ttl=900))

    assert refused.value.message == (
        f"{rig.path} changed on disk since ryx-desktop read it; your change was not saved."
    )
    assert rig.path.read_bytes() == edited
    # The refusal loaded the edit, so the user makes the change again on it.
    assert [c.models["a"].model for c in rig.applied] == ["/models/a-v2"]
    assert rig.watcher.fingerprint == fingerprint_of(rig.path)
    redo = rig.applied[-1].model_copy(update={"idle_ttl": 900.0})
    await rig.watcher.save(redo)
    saved = load_config(rig.path)
    assert saved.models["a"].model == "/models/a-v2" and saved.idle_ttl == 900


async def test_a_save_right_after_a_hand_edit_is_refused_and_the_edit_loaded_next(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    edited = hand_edit(rig.path, "model: /models/a", "model: /models/a-v2")

    with pytest.raises(ConfigChangedError):
        await rig.watcher.save(config_with(idle_ttl=900))

    assert rig.path.read_bytes() == edited
    assert rig.applied == []  # seen once by the refusal: loaded when it has settled
    assert await rig.watcher.poll() is FileChange.RELOADED
    assert [c.models["a"].model for c in rig.applied] == ["/models/a-v2"]


async def test_a_failed_apply_is_reported_and_tried_again_when_the_file_changes(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    read = rig.watcher.fingerprint
    rig.fail_with = RyxError("cannot stop model a: Docker is not running.", "Start Docker.")
    hand_edit(rig.path, "model: /models/a", "model: /models/a-v2")
    await rig.watcher.poll()
    assert await rig.watcher.poll() is FileChange.INVALID
    problem = rig.watcher.problem
    assert problem is not None and problem.message.startswith("cannot stop model a")
    assert problem.hint == "Start Docker."
    assert rig.watcher.fingerprint == read  # a save would still be refused: not in effect
    assert await rig.watcher.poll() is FileChange.INVALID  # not tried at every look

    rig.fail_with = None
    stat = rig.path.stat()
    os.utime(rig.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # "touch"
    await rig.watcher.poll()
    assert await rig.watcher.poll() is FileChange.RELOADED
    assert [c.models["a"].model for c in rig.applied] == ["/models/a-v2"]
    assert rig.watcher.problem is None


async def test_a_broken_hand_edit_is_never_overwritten(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.path.write_text("models: [unclosed\n")  # the user is half-way through an edit
    with pytest.raises(ConfigChangedError):
        await rig.watcher.save(config_with(idle_ttl=900))
    assert rig.path.read_text() == "models: [unclosed\n"
    assert rig.applied == []


async def test_the_open_watcher_polls_by_itself_until_closed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, interval=0.01)
    await rig.watcher.open()
    try:
        hand_edit(rig.path, "model: /models/a", "model: /models/a-v2")
        await wait_for(lambda: bool(rig.applied), "the hand edit loaded", 10)
        assert rig.applied[0].models["a"].model == "/models/a-v2"
    finally:
        await rig.watcher.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "watch config.yaml"]
