"""The desktop entry, "Start at login" and the packaged artwork, written into temporary XDG dirs."""

from __future__ import annotations

import argparse
import configparser
import io
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ryx_desktop.cli import _desktop_entry as cli
from ryx_desktop.core.states import InstanceState
from ryx_desktop.desktop_entry import (
    Autostart,
    DesktopEntryError,
    desktop_entry_text,
    entry_path,
    exec_line,
    icon_path,
    install_desktop_entry,
    launch_command,
    uninstall_desktop_entry,
)
from ryx_desktop.ui.icons import state_colour

ROOT = Path(__file__).resolve().parents[2]
PACKAGED_ENTRY = ROOT / "packaging" / "ryx-desktop.desktop"
PACKAGED_ICON = ROOT / "packaging" / "ryx-desktop.svg"


def parse(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    assert parser.sections() == ["Desktop Entry"]
    return parser["Desktop Entry"]


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


# ---- start at login --------------------------------------------------------------------------


def test_autostart_round_trip(environ: dict[str, str], tmp_path: Path) -> None:
    autostart = Autostart(environ, "/opt/ryx/bin/ryx-desktop")
    assert autostart.path == tmp_path / "config" / "autostart" / "ryx-desktop.desktop"
    assert not autostart.enabled()

    assert autostart.enable() == autostart.path
    assert autostart.enabled()
    entry = parse(autostart.path)
    assert entry["Exec"] == "/opt/ryx/bin/ryx-desktop"
    assert entry["Type"] == "Application"
    assert entry["X-GNOME-Autostart-enabled"] == "true"
    assert list(autostart.path.parent.iterdir()) == [autostart.path]  # no temp file left over

    autostart.enable()  # twice is fine: rewritten in place
    assert Autostart(environ).enabled()  # a new instance sees the same file

    autostart.disable()
    assert not autostart.enabled() and not autostart.path.exists()
    autostart.disable()  # already gone: nothing to do


def test_autostart_falls_back_to_home_and_ignores_a_relative_xdg_dir(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert Autostart(home).path == tmp_path / ".config" / "autostart" / "ryx-desktop.desktop"
    relative = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/dir"}
    assert Autostart(relative).path == Autostart(home).path


def test_no_home_at_all_is_a_one_line_error() -> None:
    with pytest.raises(DesktopEntryError) as caught:
        Autostart({})
    assert "XDG_CONFIG_HOME" in caught.value.message and caught.value.hint


def test_an_unwritable_place_is_a_desktop_entry_error(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(DesktopEntryError, match="Cannot write"):
        Autostart({"XDG_CONFIG_HOME": str(blocker)}).enable()


# ---- the entry's text ------------------------------------------------------------------------


def test_packaged_entry_is_what_the_code_writes() -> None:
    assert PACKAGED_ENTRY.read_text(encoding="utf-8") == desktop_entry_text("ryx-desktop")


def test_packaged_entry_names_the_app_and_its_icon() -> None:
    entry = parse(PACKAGED_ENTRY)
    assert entry["Name"] == "ryx-desktop"
    assert entry["Exec"] == "ryx-desktop"
    assert entry["Icon"] == "ryx-desktop"
    assert entry["Terminal"] == "false"
    assert entry["Categories"] == "Development;Utility;"
    assert "X-GNOME-Autostart-enabled" not in entry


def test_exec_line_quotes_as_the_spec_says() -> None:
    assert exec_line(["/usr/bin/ryx-desktop"]) == "/usr/bin/ryx-desktop"
    assert exec_line(["/home/me/my apps/ryx", "-m", "x"]) == '"/home/me/my apps/ryx" -m x'
    assert exec_line(["/opt/100%/ryx"]) == "/opt/100%%/ryx"
    # A literal $ is escaped inside quotes; the string escape then doubles the backslash.
    assert exec_line(["/a$b"]) == '"/a\\\\$b"'
    assert shlex.split(exec_line(["/home/me/my apps/ryx"])) == ["/home/me/my apps/ryx"]
    with pytest.raises(ValueError, match="program"):
        exec_line([])


def test_a_command_with_a_newline_cannot_inject_keys() -> None:
    with pytest.raises(ValueError, match="Exec"):
        desktop_entry_text("ryx-desktop\nTerminal=true")


def test_launch_command_names_the_running_program(tmp_path: Path) -> None:
    script = tmp_path / "venv" / "bin" / "ryx-desktop"
    assert launch_command(str(script), "/usr/bin/python3") == str(script)
    as_module = launch_command("/src/ryx_desktop/__main__.py", str(tmp_path / "py" / "python"))
    assert as_module == f"{tmp_path / 'py' / 'python'} -m ryx_desktop"


# ---- the application menu --------------------------------------------------------------------


def test_install_writes_the_entry_and_copies_the_icon(
    environ: dict[str, str], tmp_path: Path
) -> None:
    entry = install_desktop_entry(environ, "/opt/ryx/bin/ryx-desktop", PACKAGED_ICON)

    assert (
        entry == tmp_path / "data" / "applications" / "ryx-desktop.desktop" == entry_path(environ)
    )
    assert parse(entry)["Exec"] == "/opt/ryx/bin/ryx-desktop"
    icon = icon_path(environ)
    assert icon == tmp_path / "data" / "icons" / "hicolor" / "scalable" / "apps" / "ryx-desktop.svg"
    assert icon.read_bytes() == PACKAGED_ICON.read_bytes()

    Autostart(environ).enable()
    assert uninstall_desktop_entry(environ) == [entry, icon, Autostart(environ).path]
    assert not entry.exists() and not icon.exists() and not Autostart(environ).enabled()
    assert uninstall_desktop_entry(environ) == []


def test_install_without_the_icon_fails_before_writing(
    environ: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(DesktopEntryError, match="does not exist"):
        install_desktop_entry(environ, "ryx-desktop", tmp_path / "missing.svg")
    assert not entry_path(environ).exists()


# ---- the command line ------------------------------------------------------------------------


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ryx-desktop")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_install_with_autostart_then_remove(environ: dict[str, str], tmp_path: Path) -> None:
    out = io.StringIO()
    script = str(tmp_path / "venv" / "bin" / "ryx-desktop")

    args = parse_args("desktop-entry", "install", "--autostart", "--icon", str(PACKAGED_ICON))
    assert cli.run(args, environ, argv0=script, executable="/usr/bin/python3", out=out) == 0

    assert parse(entry_path(environ))["Exec"] == script
    assert parse(Autostart(environ).path)["Exec"] == script
    assert icon_path(environ).is_file()
    assert f"installed {entry_path(environ)}" in out.getvalue()

    out = io.StringIO()
    assert cli.run(parse_args("desktop-entry", "remove"), environ, out=out) == 0
    assert out.getvalue().count("removed ") == 3
    assert not entry_path(environ).exists() and not Autostart(environ).enabled()


def test_cli_install_keeps_the_config_file_given(environ: dict[str, str], tmp_path: Path) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="ryx-desktop", parents=[common])
    cli.add_parser(parser.add_subparsers(dest="command"), parents=[common])
    config = tmp_path / "my config.yaml"
    args = parser.parse_args(["desktop-entry", "--config", str(config), "install"])

    assert cli.run(args, environ, argv0="/x/ryx-desktop", executable="", out=io.StringIO()) == 0

    exec_value = parse(entry_path(environ))["Exec"]
    assert exec_value == f'/x/ryx-desktop --config "{config}"'


def test_cli_install_uses_the_checkout_icon_by_default(environ: dict[str, str]) -> None:
    args = parse_args("desktop-entry", "install")
    assert cli.CHECKOUT_ICON == PACKAGED_ICON
    assert cli.run(args, environ, argv0="/x/ryx-desktop", executable="", out=io.StringIO()) == 0
    assert icon_path(environ).read_bytes() == PACKAGED_ICON.read_bytes()
    assert not Autostart(environ).enabled()


def test_cli_install_with_a_missing_icon_says_how_to_pass_one(environ: dict[str, str]) -> None:
    args = parse_args("desktop-entry", "install", "--icon", "/nowhere/icon.svg")
    with pytest.raises(DesktopEntryError) as caught:
        cli.run(args, environ, argv0="/x/ryx-desktop", executable="", out=io.StringIO())
    assert "--icon" in caught.value.hint


# ---- artwork ---------------------------------------------------------------------------------


def test_packaged_icon_is_the_app_icon_from_resources() -> None:
    assert PACKAGED_ICON.read_bytes() == (ROOT / "resources" / "ryx-desktop.svg").read_bytes()


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("ready", InstanceState.READY),
        ("loading", InstanceState.STARTING),
        ("failed", InstanceState.FAILED),
        ("idle", None),
    ],
)
def test_state_icons_use_the_tray_colours(name: str, state: InstanceState | None) -> None:
    svg = ET.parse(ROOT / "resources" / f"state-{name}.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    colours = {
        value.lower()
        for element in svg.iter()
        for attr in ("fill", "stroke")
        if (value := element.get(attr)) and re.fullmatch(r"#[0-9a-fA-F]{6}", value)
    }
    assert state_colour(state).name() in colours
