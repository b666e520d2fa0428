"""The freedesktop desktop entry: the application menu entry and "Start at login".

Plain file I/O, no Qt: the settings dialog gets an ``Autostart`` and the command line calls
``install_desktop_entry`` / ``uninstall_desktop_entry``. Paths follow the XDG base directory
spec (``$XDG_CONFIG_HOME``, ``$XDG_DATA_HOME``, else under ``$HOME``), taken from the ``environ``
passed in. Files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ryx_desktop.core.errors import RyxError

APP_ID = "ryx-desktop"
ENTRY_NAME = f"{APP_ID}.desktop"
ICON_NAME = f"{APP_ID}.svg"
DEFAULT_COMMAND = APP_ID
COMMENT = "Run local LLMs with vLLM in Docker: start, stop, watch and switch models"

#: Characters that make an Exec argument need quoting (desktop entry spec, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
_ESCAPED_IN_QUOTES = set('"`$\\')


class DesktopEntryError(RyxError):
    """A desktop entry or its icon cannot be written or removed."""

    hint = "Check that the folder is writable, or set XDG_CONFIG_HOME / XDG_DATA_HOME."


def exec_line(argv: Sequence[str]) -> str:
    """``argv`` as an ``Exec=`` value: quoted and escaped as the desktop entry spec says."""
    if not argv:
        raise ValueError("a command needs at least the program")
    parts = []
    for arg in argv:
        if arg and not _RESERVED.intersection(arg):
            quoted = arg
        else:
            quoted = '"' + "".join("\\" + c if c in _ESCAPED_IN_QUOTES else c for c in arg) + '"'
        parts.append(quoted.replace("%", "%%"))
    # The string-value escape applies on top of the Exec quoting: a backslash is written twice.
    return " ".join(parts).replace("\\", "\\\\")


def launch_command(argv0: str, executable: str) -> str:
    """The ``Exec=`` value that starts the app the way it runs now, by absolute path.

    A menu or a login session does not have a virtualenv's ``bin`` on its PATH, so the entry
    names the very script (or ``python -m ryx_desktop`` when run as a module).
    """
    program = Path(argv0)
    if program.name in ("__main__.py", "-m") or program.suffix == ".py" or not argv0:
        return exec_line([str(Path(executable).absolute()), "-m", "ryx_desktop"])
    return exec_line([str(program.absolute())])


def desktop_entry_text(command: str = DEFAULT_COMMAND, *, autostart: bool = False) -> str:
    """The ``.desktop`` file that runs ``command`` (an ``Exec=`` value, see ``exec_line``)."""
    if not command.strip() or any(ord(c) < 0x20 for c in command):
        raise ValueError(f"not a usable Exec command: {command!r}")
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        f"Name={APP_ID}",
        f"Comment={COMMENT}",
        f"Exec={command}",
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=Development;Utility;",
        "StartupNotify=false",
    ]
    if autostart:
        lines.append("X-GNOME-Autostart-enabled=true")
    return "\n".join(lines) + "\n"


def config_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME``, else ``$HOME/.config``."""
    return _xdg_dir(environ, "XDG_CONFIG_HOME", ".config")


def data_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME``, else ``$HOME/.local/share``."""
    return _xdg_dir(environ, "XDG_DATA_HOME", ".local/share")


def _xdg_dir(environ: Mapping[str, str], variable: str, default: str) -> Path:
    value = environ.get(variable, "")
    if value and os.path.isabs(value):  # the spec says to ignore a relative path
        return Path(value)
    home = environ.get("HOME", "")
    if not home:
        raise DesktopEntryError(
            f"Neither {variable} nor HOME is set, so there is no place for the desktop entry.",
            f"Set {variable} or HOME and try again.",
        )
    return Path(home) / default


class Autostart:
    """The "Start at login" switch: an entry in ``<config>/autostart/`` that runs ``command``."""

    def __init__(self, environ: Mapping[str, str], command: str = DEFAULT_COMMAND) -> None:
        self._path = config_home(environ) / "autostart" / ENTRY_NAME
        self._text = desktop_entry_text(command, autostart=True)

    @property
    def path(self) -> Path:
        return self._path

    def enabled(self) -> bool:
        """True when the autostart entry exists (whatever wrote it)."""
        return self._path.is_file()

    def enable(self) -> Path:
        """Write the autostart entry; returns its path."""
        _write_atomically(self._path, self._text)
        return self._path

    def disable(self) -> None:
        """Remove the autostart entry; nothing to do when there is none."""
        _remove(self._path)


def entry_path(environ: Mapping[str, str]) -> Path:
    """Where the application menu entry goes: ``<data>/applications/ryx-desktop.desktop``."""
    return data_home(environ) / "applications" / ENTRY_NAME


def icon_path(environ: Mapping[str, str]) -> Path:
    """Where the icon goes: ``<data>/icons/hicolor/scalable/apps/ryx-desktop.svg``."""
    return data_home(environ) / "icons" / "hicolor" / "scalable" / "apps" / ICON_NAME


def install_desktop_entry(environ: Mapping[str, str], command: str, icon_source: Path) -> Path:
    """Add ryx-desktop to the application menu: its entry and its icon. Returns the entry's path."""
    if not icon_source.is_file():
        raise DesktopEntryError(
            f"The icon {icon_source} does not exist.",
            "Pass the path of ryx-desktop.svg (it ships in packaging/).",
        )
    text = desktop_entry_text(command)
    try:
        icon = icon_source.read_bytes()
    except OSError as exc:
        raise DesktopEntryError(f"Cannot read the icon {icon_source}: {exc.strerror}.") from exc
    _write_atomically(icon_path(environ), icon)
    entry = entry_path(environ)
    _write_atomically(entry, text)
    return entry


def uninstall_desktop_entry(environ: Mapping[str, str]) -> list[Path]:
    """Remove the menu entry, its icon and the autostart entry; returns what was removed."""
    removed: list[Path] = []
    for path in (entry_path(environ), icon_path(environ), Autostart(environ).path):
        if path.exists():
            _remove(path)
            removed.append(path)
    return removed


def _write_atomically(path: Path, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DesktopEntryError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise DesktopEntryError(f"Cannot remove {path}: {exc.strerror or exc}.") from exc


__all__ = [
    "APP_ID",
    "DEFAULT_COMMAND",
    "Autostart",
    "DesktopEntryError",
    "config_home",
    "data_home",
    "desktop_entry_text",
    "entry_path",
    "exec_line",
    "icon_path",
    "install_desktop_entry",
    "launch_command",
    "uninstall_desktop_entry",
]
