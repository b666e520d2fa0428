"""The config file is the single source of truth while the desktop runs (issue 11, item 9).

As a new user tried it: the YAML is edited by hand while the app runs, then Settings is saved.
The whole desktop runs as in ``test_desktop_startup`` (the real supervisor over the fakes, the
real window and tray); the config file is a real one under ``tmp_path``, edited in place as an
editor does. Where a test needs the watcher not to have looked yet (a "concurrent" edit), its
interval is an hour and the test polls it itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QToolButton

from ryx_desktop.config import FileChange, load_config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.desktop import KEPT_SETTINGS, Desktop, start_desktop
from ryx_desktop.ui._form import CHANGED_MEANWHILE
from ryx_desktop.ui.model_dialog import ModelDialog
from ryx_desktop.ui.settings import SettingsDialog
from ryx_desktop.ui.tray import Notification
from tests.gui.test_desktop_startup import MODEL, Rig, run_loop, write_config
from tests.support.config_files import hand_edit
from tests.support.waiting import wait_for

OLD_PATH = "model: /models/general"
NEW_PATH = "model: /models/general-v2"
#: The watcher looks every 20 ms: a hand edit is loaded on the second look that sees it.
QUICK = 0.02
HOUR = 3600.0


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "RYX_DATA_DIR": str(tmp_path / "data"),  # the chat's conversations
    }


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def bytes_of(path: Path) -> bytes:
    return path.read_bytes()


def write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def config_notices(notifications: list[Notification]) -> list[Notification]:
    return [n for n in notifications if n.title == "ryx-desktop: config not reloaded"]


def refused_sentence(path: Path) -> str:
    return f"{path} changed on disk since ryx-desktop read it; your change was not saved"


def run_desktop(
    qapp: QApplication,
    tmp_path: Path,
    environ: dict[str, str],
    scenario: Callable[[Desktop, Path], Awaitable[None]],
    *,
    interval: float,
) -> Rig:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)
    rig.deps = dataclasses.replace(rig.deps, config_interval=interval)

    async def main() -> None:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        try:
            await scenario(desktop, config_file)
        finally:
            await desktop.shutdown()

    run_loop(qapp, main())
    return rig


def test_a_hand_edit_is_loaded_and_a_later_save_from_settings_keeps_it(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        supervisor = desktop.engine.supervisor
        seen: list[object] = []
        desktop.bridge.configChanged.connect(seen.append)

        hand_edit(config_file, OLD_PATH, NEW_PATH)
        await wait_for(
            lambda: supervisor.config.models[MODEL].model == "/models/general-v2",
            "the hand edit loaded",
            10,
        )
        assert desktop.bridge.config.models[MODEL].model == "/models/general-v2"
        assert desktop.window.statusBar().currentMessage() == f"Reloaded {config_file}"
        assert desktop.window.notice_text() == ""
        assert len(seen) == 1

        dialog = desktop.window.open_settings()
        assert isinstance(dialog, SettingsDialog)
        dialog.fields["idle_ttl"].setText("900")
        assert await dialog.submit()

        saved = load_config(config_file)
        assert saved.models[MODEL].model == "/models/general-v2"  # the hand edit kept
        assert saved.idle_ttl == 900
        assert supervisor.config == saved
        assert len(seen) == 2
        # The app's own save is not taken for a hand edit: nothing is loaded again.
        watcher = desktop.config_watcher
        assert await watcher.poll() is FileChange.UNCHANGED
        assert await watcher.poll() is FileChange.UNCHANGED
        assert len(seen) == 2

    rig = run_desktop(qapp, tmp_path, environ, scenario, interval=QUICK)
    assert rig.dialogs.shown == []


def test_a_save_from_settings_after_a_concurrent_hand_edit_is_refused_and_the_edit_kept(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        supervisor = desktop.engine.supervisor
        dialog = desktop.window.open_settings()
        assert isinstance(dialog, SettingsDialog)
        dialog.fields["idle_ttl"].setText("900")
        edited = hand_edit(config_file, OLD_PATH, NEW_PATH)  # before the app looked again

        assert not await dialog.submit()

        general = dialog.errors.text(None)
        assert general.startswith(refused_sentence(config_file))
        assert "make your change again" in general
        assert dialog.isVisible()  # the user's input is still there to save again
        assert bytes_of(config_file) == edited
        assert supervisor.config.idle_ttl is None
        # The refusal looked at the file once; the next look loads the edit.
        assert await desktop.config_watcher.poll() is FileChange.RELOADED
        assert supervisor.config.models[MODEL].model == "/models/general-v2"

        assert await dialog.submit()  # the hand edit touched no setting of the dialog
        saved = load_config(config_file)
        assert saved.models[MODEL].model == "/models/general-v2" and saved.idle_ttl == 900

    run_desktop(qapp, tmp_path, environ, scenario, interval=HOUR)


def test_the_model_dialog_refuses_too_and_shows_the_hand_edit_to_redo_the_change(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        supervisor = desktop.engine.supervisor
        dialog = desktop.window.open_model_dialog(MODEL)
        assert isinstance(dialog, ModelDialog)
        dialog.fields["port"].setText("18124")
        edited = hand_edit(config_file, OLD_PATH, NEW_PATH)
        assert await desktop.config_watcher.poll() is FileChange.SETTLING  # seen, not loaded

        assert not await dialog.submit()

        assert bytes_of(config_file) == edited
        # The refusal loaded the edit, and the dialog shows it instead of the old path.
        assert supervisor.config.models[MODEL].model == "/models/general-v2"
        general = dialog.errors.text(None)
        assert general.startswith(refused_sentence(config_file))
        assert general.endswith(CHANGED_MEANWHILE)
        assert dialog.fields["model"].text() == "/models/general-v2"
        assert dialog.fields["port"].text() == "18123"

        dialog.fields["port"].setText("18124")  # the change made again
        assert await dialog.submit()
        saved = load_config(config_file)
        assert saved.models[MODEL].model == "/models/general-v2"
        assert saved.models[MODEL].port == 18124

    run_desktop(qapp, tmp_path, environ, scenario, interval=HOUR)


def test_settings_loaded_while_the_dialog_is_open_fill_it_again_instead_of_being_undone(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        supervisor = desktop.engine.supervisor
        dialog = desktop.window.open_settings()
        assert isinstance(dialog, SettingsDialog)
        assert dialog.fields["idle_ttl"].text() == ""
        text = text_of(config_file)
        write(config_file, text.replace("models:", "idle_ttl: 600\n\nmodels:", 1))
        await desktop.config_watcher.poll()
        assert await desktop.config_watcher.poll() is FileChange.RELOADED
        assert supervisor.config.idle_ttl == 600

        dialog.fields["gpu.headroom"].setText("0.1")
        assert not await dialog.submit()  # its idle_ttl field still said "never"

        assert dialog.errors.text(None) == CHANGED_MEANWHILE
        assert dialog.fields["idle_ttl"].text() == "600"
        assert load_config(config_file).idle_ttl == 600
        dialog.fields["gpu.headroom"].setText("0.1")
        assert await dialog.submit()
        saved = load_config(config_file)
        assert saved.idle_ttl == 600 and saved.gpu.headroom == 0.1

    run_desktop(qapp, tmp_path, environ, scenario, interval=HOUR)


def test_an_invalid_hand_edit_is_shown_the_old_config_kept_and_a_fix_loaded(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        supervisor = desktop.engine.supervisor
        tray = desktop.tray
        assert tray is not None
        inst = await desktop.bridge.start(MODEL)
        assert inst is not None and inst.state is InstanceState.READY
        before = supervisor.config

        hand_edit(config_file, "port: 18123", "port: oops")
        lines = text_of(config_file).splitlines()
        line = next(n for n, text in enumerate(lines, 1) if "port: oops" in text)
        column = lines[line - 1].index("oops") + 1
        await wait_for(lambda: desktop.window.notice_text() != "", "the config problem", 10)

        where = f"{config_file}:{line}:{column}: models.{MODEL}.port"
        first, hint = desktop.window.notice_text().split("\n")
        assert first == f"Config not reloaded: {where}: expected a whole number, got 'oops'"
        assert hint.endswith(KEPT_SETTINGS) and "ryx-desktop config check" in hint
        [told] = config_notices(tray.notifications)
        assert told.warning and where in told.message
        assert supervisor.config == before  # the app runs on what it read
        assert desktop.bridge.instance(MODEL).state is InstanceState.READY
        for _ in range(2):  # told once, not at every look
            assert await desktop.config_watcher.poll() is FileChange.INVALID
        assert config_notices(tray.notifications) == [told]

        # A save from Settings would overwrite the unfinished edit: refused.
        dialog = desktop.window.open_settings()
        assert isinstance(dialog, SettingsDialog)
        dialog.fields["idle_ttl"].setText("900")
        assert not await dialog.submit()
        assert dialog.errors.text(None).startswith(refused_sentence(config_file))
        assert "port: oops" in text_of(config_file)
        # The banner says so, and still shows what is wrong in the file beneath.
        notice = desktop.window.notice_text()
        assert notice.startswith(refused_sentence(config_file))
        assert notice.endswith(f"{first}\n{hint}")
        dialog.reject()

        hand_edit(config_file, "port: oops", "port: 18124")  # fixed
        await wait_for(
            lambda: supervisor.config.models[MODEL].port == 18124, "the fixed file loaded", 10
        )
        assert "Config not reloaded" not in desktop.window.notice_text()
        assert KEPT_SETTINGS not in desktop.window.notice_text()
        assert desktop.bridge.instance(MODEL).config_changed  # restart to apply the new port

    run_desktop(qapp, tmp_path, environ, scenario, interval=QUICK)


def test_a_fixed_file_takes_its_notice_away_and_undoing_the_edit_does_too(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, config_file: Path) -> None:
        watcher = desktop.config_watcher
        original = bytes_of(config_file)
        hand_edit(config_file, "default_model: general", "default_model: nowhere")
        await watcher.poll()
        assert await watcher.poll() is FileChange.INVALID
        assert desktop.window.notice_text().startswith(f"Config not reloaded: {config_file}:")

        write(config_file, original)  # the edit undone: what the app runs on
        assert await watcher.poll() is FileChange.RESTORED
        assert desktop.window.notice_text() == ""

        hand_edit(config_file, "port: 18123", "port: 18124")
        write(config_file, text_of(config_file).replace("models:", "models: [", 1))
        await watcher.poll()
        assert await watcher.poll() is FileChange.INVALID
        assert "invalid YAML" in desktop.window.notice_text()
        write(config_file, text_of(config_file).replace("models: [", "models:", 1))
        await watcher.poll()
        assert await watcher.poll() is FileChange.RELOADED
        assert desktop.window.notice_text() == ""
        assert desktop.engine.supervisor.config.models[MODEL].port == 18124

    run_desktop(qapp, tmp_path, environ, scenario, interval=HOUR)


def test_the_banner_keeps_a_config_problem_beneath_other_notices_until_it_is_over(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    async def scenario(desktop: Desktop, _config_file: Path) -> None:
        window = desktop.window
        dismiss = window.findChild(QToolButton, "dismiss-notice")
        assert isinstance(dismiss, QToolButton)
        window.set_config_problem("config.yaml:3:5: bad", "Fix it.")
        assert window.notice_text() == "config.yaml:3:5: bad\nFix it."
        window.show_notice("a: could not start", "Check the log.")
        assert window.notice_text() == (
            "a: could not start\nCheck the log.\nconfig.yaml:3:5: bad\nFix it."
        )
        window.set_config_problem(None)
        assert window.notice_text() == "a: could not start\nCheck the log."
        window.set_config_problem("config.yaml:3:5: bad", "Fix it.")
        dismiss.click()
        assert window.notice_text() == ""
        window.set_config_problem(None)
        assert window.notice_text() == ""  # what was dismissed does not come back

    run_desktop(qapp, tmp_path, environ, scenario, interval=HOUR)
