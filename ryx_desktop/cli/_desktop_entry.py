"""``ryx-desktop desktop-entry install|remove``: the application menu entry and its icon.

``install`` writes the entry for the command that is running now (by absolute path, so it works
from a virtualenv, with the ``--config`` given), copies the icon, and with ``--autostart`` also
turns on "Start at login". ``remove`` takes all of them away again. Errors are
``DesktopEntryError`` (a ``RyxError``): one line and a hint, exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ryx_desktop.desktop_entry import (
    Autostart,
    DesktopEntryError,
    exec_line,
    install_desktop_entry,
    launch_command,
    uninstall_desktop_entry,
)

#: The icon in a source checkout (``packaging/`` is not inside the Python package).
CHECKOUT_ICON = Path(__file__).resolve().parents[2] / "packaging" / "ryx-desktop.svg"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """The ``desktop-entry`` command's arguments, for the main parser (``parents``: --config)."""
    entry = sub.add_parser(
        "desktop-entry",
        parents=list(parents),
        help="add ryx-desktop to the application menu, or remove it",
    )
    actions = entry.add_subparsers(dest="desktop_entry_command", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install", help="write the menu entry and icon under ~/.local/share"
    )
    install.add_argument("--autostart", action="store_true", help="also start ryx-desktop at login")
    install.add_argument(
        "--icon",
        metavar="PATH",
        help="the SVG icon to install (default: packaging/ryx-desktop.svg)",
    )
    actions.add_parser("remove", help="remove the menu entry, the icon and the autostart entry")


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    *,
    argv0: str | None = None,
    executable: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Run ``desktop-entry install`` or ``remove``; returns the exit code."""
    out = out or sys.stdout
    if args.desktop_entry_command == "remove":
        removed = uninstall_desktop_entry(environ)
        for path in removed:
            print(f"removed {path}", file=out)
        if not removed:
            print("no desktop entry was installed", file=out)
        return 0
    if args.desktop_entry_command != "install":
        raise AssertionError(f"unhandled action {args.desktop_entry_command}")
    command = launch_command(
        argv0 if argv0 is not None else sys.argv[0],
        executable if executable is not None else sys.executable,
    )
    config = getattr(args, "config", None)
    if config:  # the menu and the login session start it with the same config file
        command += " " + exec_line(["--config", str(Path(config).expanduser().absolute())])
    icon = Path(args.icon).expanduser() if args.icon else CHECKOUT_ICON
    if not icon.is_file():
        raise DesktopEntryError(
            f"The icon {icon} does not exist.",
            "Pass the icon with --icon PATH (ryx-desktop.svg from the source's packaging/).",
        )
    entry = install_desktop_entry(environ, command, icon)
    print(f"installed {entry} (runs: {command})", file=out)
    if args.autostart:
        print(f"start at login: {Autostart(environ, command).enable()}", file=out)
    return 0
