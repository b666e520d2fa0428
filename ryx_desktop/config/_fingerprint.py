"""What the config file held when the app read it: a fingerprint, and the config read with it.

The config file is the single source of truth while the app runs: the user may edit it by hand at
any time. The app remembers the fingerprint of what it last read (or wrote) so that a save can
first check the file still holds that, and refuse rather than overwrite a hand edit made since
(``ConfigChangedError``), and so that a watcher can tell a foreign change from the app's own save.

Two fingerprints mean the same file when their content is the same (SHA-256 of the bytes): a
``touch`` changes the modification time but loses nobody's work. The size and modification time
are kept beside the digest to show in logs and to tell one write from the next.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ryx_desktop.config._defaults import default_config
from ryx_desktop.config._errors import ConfigError
from ryx_desktop.config._loader import ConfigFileError, parse_config
from ryx_desktop.config._schema import Config

CHANGED_HINT = (
    "ryx-desktop loads the edited file now (the window says so if it has a problem): "
    "make your change again on the settings it holds."
)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The config file's content (SHA-256, hex), size and mtime; no file: ``MISSING``."""

    digest: str | None
    size: int = 0
    mtime_ns: int = 0

    @property
    def exists(self) -> bool:
        return self.digest is not None

    def same_content(self, other: Fingerprint) -> bool:
        """True when both name the same bytes (or both no file), whatever their times."""
        return self.digest == other.digest

    @classmethod
    def of_bytes(cls, raw: bytes, mtime_ns: int = 0) -> Fingerprint:
        return cls(hashlib.sha256(raw).hexdigest(), len(raw), mtime_ns)


#: The fingerprint of a config file that does not exist.
MISSING = Fingerprint(None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The file's bytes (None: no file) and their fingerprint, read in one go."""

    fingerprint: Fingerprint
    raw: bytes | None


class ConfigChangedError(ConfigError):
    """A save refused because the file changed on disk since the app read it."""

    hint = CHANGED_HINT

    def __init__(self, path: Path, hint: str | None = None) -> None:
        super().__init__(
            f"{path} changed on disk since ryx-desktop read it; your change was not saved.", hint
        )
        self.path = path


def read_snapshot(path: Path) -> Snapshot:
    """The file at ``path`` as it is now; raises OSError when it exists but cannot be read."""
    try:
        with path.open("rb") as handle:
            mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
            raw = handle.read()
    except FileNotFoundError:
        return Snapshot(MISSING, None)
    return Snapshot(Fingerprint.of_bytes(raw, mtime_ns), raw)


def fingerprint_of(path: Path) -> Fingerprint:
    """The fingerprint of the file at ``path`` now (``MISSING`` when there is none)."""
    return read_snapshot(path).fingerprint


def config_of(snapshot: Snapshot, path: Path) -> Config:
    """The config ``snapshot`` holds, validated as ``load_config`` does (errors FILE:LINE:COL)."""
    if snapshot.raw is None:
        return default_config()
    try:
        text = snapshot.raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            [f"{path}: is not UTF-8 text (byte {exc.start} cannot be decoded)"]
        ) from exc
    return parse_config(text, str(path))


def read_config(path: Path) -> tuple[Config, Fingerprint]:
    """The config at ``path`` and the fingerprint of the very bytes it was read from.

    Like ``load_config``: no file means the built-in default (and ``MISSING``); a file that
    cannot be read or does not validate raises ``ConfigFileError``.
    """
    try:
        snapshot = read_snapshot(path)
    except OSError as exc:
        raise read_error(path, exc) from exc
    return config_of(snapshot, path), snapshot.fingerprint


def read_error(path: Path, exc: OSError) -> ConfigFileError:
    """Why the file at ``path`` could not be read, in ``load_config``'s words."""
    if isinstance(exc, IsADirectoryError):
        return ConfigFileError([f"{path}: is a directory, not a config file"])
    return ConfigFileError([f"{path}: cannot read the config: {exc.strerror or exc}"])


def check_unchanged(path: Path, expected: Fingerprint) -> None:
    """Raise ``ConfigChangedError`` when ``path`` no longer holds what ``expected`` describes.

    A file that is gone holds nobody's work, so writing it again is allowed; one that appeared
    where there was none (``expected`` is ``MISSING``) is someone's new work and is not. A file
    that cannot be read is left to the caller's own check.
    """
    try:
        now = fingerprint_of(path)
    except OSError:
        return
    if now.exists and not now.same_content(expected):
        raise ConfigChangedError(path)
