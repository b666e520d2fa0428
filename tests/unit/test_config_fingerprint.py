"""A save checks first that the config file still holds what the app read (issue 11, item 9).

The app remembers the fingerprint of the bytes it read; ``save_config(..., expected=...)``
refuses with ``ConfigChangedError`` to overwrite a hand edit made since, and returns the
fingerprint of what it wrote, so the app's own save is not taken for a hand edit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ryx_desktop.config import (
    MISSING,
    Config,
    ConfigChangedError,
    ConfigFileError,
    default_config,
    fingerprint_of,
    load_config,
    read_config,
    save_config,
)
from ryx_desktop.config import _save as save_module
from ryx_desktop.config._fingerprint import CHANGED_HINT
from ryx_desktop.core.errors import ConfigError
from tests.support.config_files import config_with, hand_edit


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    target = tmp_path / "config.yaml"
    save_config(config_with(), target)
    return target


def test_read_config_gives_the_fingerprint_of_the_bytes_it_read(path: Path) -> None:
    config, read = read_config(path)
    assert config == load_config(path)
    assert read == fingerprint_of(path)
    assert read.exists and read.size == len(path.read_bytes())
    assert read.mtime_ns == path.stat().st_mtime_ns


def test_a_save_over_what_was_read_is_written_and_its_fingerprint_returned(path: Path) -> None:
    _config, read = read_config(path)
    written = save_config(config_with(idle_ttl=900), path, expected=read)
    assert load_config(path).idle_ttl == 900
    assert written == fingerprint_of(path)  # content and time: the next look sees no change
    assert not written.same_content(read)


def test_a_save_over_a_hand_edit_is_refused_and_the_edit_kept(path: Path) -> None:
    _config, read = read_config(path)
    edited = hand_edit(path, "model: /models/a", "model: /models/a-v2")

    with pytest.raises(ConfigChangedError) as refused:
        save_config(config_with(idle_ttl=900), path, expected=read)

    assert isinstance(refused.value, ConfigError)
    assert refused.value.message == (
        f"{path} changed on disk since ryx-desktop read it; your change was not saved."
    )
    assert refused.value.hint == CHANGED_HINT
    assert path.read_bytes() == edited
    assert leftovers(path) == []


def test_a_hand_edit_made_while_the_save_writes_is_caught_before_the_rename(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first check passes; the file changes while the new text is prepared and written.
    _config, read = read_config(path)
    edited: list[bytes] = []
    dump = save_module.dump_config

    def dump_while_edited(config: Config) -> str:
        edited.append(hand_edit(path, "model: /models/a", "model: /models/a-v2"))
        return dump(config)

    monkeypatch.setattr(save_module, "dump_config", dump_while_edited)
    with pytest.raises(ConfigChangedError):
        save_config(config_with(idle_ttl=900), path, expected=read)
    assert path.read_bytes() == edited[0]
    assert leftovers(path) == []  # the temporary file is gone


def test_a_touch_is_no_change(path: Path) -> None:
    _config, read = read_config(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert fingerprint_of(path) != read and fingerprint_of(path).same_content(read)
    save_config(config_with(idle_ttl=900), path, expected=read)
    assert load_config(path).idle_ttl == 900


def test_a_deleted_file_holds_no_work_and_is_written_again(path: Path) -> None:
    _config, read = read_config(path)
    path.unlink()
    save_config(config_with(idle_ttl=900), path, expected=read)
    assert load_config(path).idle_ttl == 900


def test_a_file_made_where_there_was_none_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    config, read = read_config(target)
    assert config == default_config() and read == MISSING and not read.exists
    target.write_text("models: {}\n")
    with pytest.raises(ConfigChangedError):
        save_config(config_with(), target, expected=read)
    assert target.read_text() == "models: {}\n"


def test_without_an_expected_fingerprint_a_save_writes_as_before(path: Path) -> None:
    hand_edit(path, "model: /models/a", "model: /models/a-v2")
    save_config(config_with(idle_ttl=900), path)
    assert load_config(path).models["a"].model == "/models/a"


def test_read_config_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("models:\n  a:\n    model: /m\n    port: oops\n")
    with pytest.raises(ConfigFileError) as bad:
        read_config(target)
    assert bad.value.message == (
        f"{target}:4:11: models.a.port: expected a whole number, got 'oops'"
    )

    target.write_bytes(b"models: {}\n\xff\n")
    with pytest.raises(ConfigFileError, match="is not UTF-8 text"):
        read_config(target)

    target.unlink()
    target.mkdir()
    with pytest.raises(ConfigFileError, match="is a directory, not a config file"):
        read_config(target)
