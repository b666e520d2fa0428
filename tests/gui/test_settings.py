"""The settings dialog: the config file's own checks next to each field, atomic saves, autostart.

Same setup as the model dialog's tests: the real supervisor over fakes, the app's config applier
writing a real file under ``tmp_path``, all on a qasync loop.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication, QDialog, QLabel
from pytestqt.qtbot import QtBot

from ryx_desktop.config import load_config
from ryx_desktop.core.errors import RyxError
from ryx_desktop.ui.settings import PROXY_NOTE, SettingsDialog
from tests.gui.fixtures_engine import managed, run_on_qt
from tests.gui.test_model_dialog import config_rig
from tests.support.artifacts import artifact_path


class FakeAutostart:
    """Records what the dialog asked of the login autostart entry."""

    def __init__(self, enabled: bool = False, *, fail: bool = False) -> None:
        self.on = enabled
        self.fail = fail
        self.calls: list[str] = []

    def enabled(self) -> bool:
        return self.on

    def enable(self) -> Path:
        self.calls.append("enable")
        if self.fail:
            raise RyxError("Cannot write the autostart entry.", "Check ~/.config/autostart.")
        self.on = True
        return Path("/fake/autostart/ryx-desktop.desktop")

    def disable(self) -> None:
        self.calls.append("disable")
        self.on = False


def test_an_exposed_proxy_without_a_key_is_refused_next_to_the_address(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            before = rig.path.read_bytes()
            dialog = SettingsDialog(rig.bridge)
            qtbot.addWidget(dialog)  # closed and deleted after the test
            dialog.show()
            dialog.fields["proxy.host"].setText("0.0.0.0")
            assert not await dialog.submit()
            assert "'0.0.0.0' is not a loopback address, so proxy.api_key is required" in (
                dialog.errors.text("proxy.host")
            )
            assert dialog.errors.text(None) == ""
            assert rig.path.read_bytes() == before and rig.applied == []
            assert dialog.result() != QDialog.DialogCode.Accepted
            dialog.grab().save(str(artifact_path("settings-dialog-error.png")))

    run_on_qt(qapp, scenario())


def test_bad_numbers_are_refused_with_the_loaders_words(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            before = rig.path.read_bytes()
            dialog = SettingsDialog(rig.bridge)
            dialog.fields["idle_ttl"].setText("-5")
            dialog.fields["gpu.headroom"].setText("1")
            dialog.fields["proxy.port"].setText("70000")
            assert not await dialog.submit()
            assert dialog.errors.text("idle_ttl") == "must be greater than 0.0, got -5"
            assert dialog.errors.text("gpu.headroom") == "must be less than 1.0, got 1"
            assert dialog.errors.text("proxy.port") == "must be at most 65535, got 70000"
            dialog.fields["idle_ttl"].setText("")
            dialog.fields["gpu.headroom"].setText("0.1")
            dialog.fields["proxy.port"].setText("8001")  # a model's port
            assert not await dialog.submit()
            assert dialog.errors.text("idle_ttl") == ""
            assert "models.a.port: port 8001 is already used by the proxy" in dialog.errors.text(
                None
            )
            assert rig.path.read_bytes() == before

    run_on_qt(qapp, scenario())


def test_valid_settings_are_saved_atomically_and_applied(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        models = {"a": managed(8001), "b": managed(8002, aliases=["bee"])}
        async with config_rig(tmp_path, models, default_model="bee") as rig:
            dialog = SettingsDialog(rig.bridge)
            assert dialog.default_model.currentData() == "b"  # the alias, shown as its model
            assert PROXY_NOTE in [label.text() for label in dialog.findChildren(QLabel)]
            dialog.fields["proxy.host"].setText("0.0.0.0")
            dialog.fields["proxy.api_key"].setText("env:RYX_KEY")
            dialog.fields["proxy.port"].setText("8500")
            dialog.origins.setPlainText("http://localhost:3000\n\nhttps://chat.example\n")
            dialog.auto_start.setChecked(False)
            dialog.policy.setCurrentIndex(dialog.policy.findData("fractional"))
            dialog.fields["gpu.headroom"].setText("0.1")
            dialog.fields["idle_ttl"].setText("900")
            dialog.fields["docker.image"].setText("vllm/vllm-openai:v0.6.4")
            dialog.fields["docker.models_dir"].setText(str(tmp_path / "weights"))
            assert dialog.fields["docker.vllm_cache"].text() == str(
                rig.supervisor.config.docker.vllm_cache
            )
            dialog.fields["docker.vllm_cache"].setText(str(tmp_path / "compile"))
            dialog.default_model.setCurrentIndex(dialog.default_model.findData("a"))
            assert await dialog.submit()
            saved = load_config(rig.path)
            assert saved == rig.supervisor.config and rig.applied == [saved]
            assert saved.proxy.host == "0.0.0.0" and saved.proxy.api_key == "env:RYX_KEY"
            assert saved.proxy.port == 8500 and not saved.proxy.auto_start
            assert saved.proxy.allowed_origins == ("http://localhost:3000", "https://chat.example")
            assert saved.gpu.policy == "fractional" and saved.gpu.headroom == 0.1
            assert saved.idle_ttl == 900 and saved.docker.image == "vllm/vllm-openai:v0.6.4"
            assert saved.docker.models_dir == tmp_path / "weights"
            assert saved.docker.vllm_cache == tmp_path / "compile"
            assert saved.default_model == "a" and rig.supervisor.selected == "a"
            assert rig.files() == ["config.yaml"]
            assert dialog.result() == QDialog.DialogCode.Accepted

    run_on_qt(qapp, scenario())


def test_saving_unchanged_settings_leaves_the_file_alone(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}, default_model="a") as rig:
            before = rig.path.read_bytes()
            dialog = SettingsDialog(rig.bridge)
            assert await dialog.submit()
            assert rig.path.read_bytes() == before and rig.applied == []

    run_on_qt(qapp, scenario())


def test_start_at_login_enables_and_disables_the_autostart_entry(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            autostart = FakeAutostart(enabled=False)
            dialog = SettingsDialog(rig.bridge, autostart)
            assert not dialog.start_at_login.isChecked()
            dialog.start_at_login.setChecked(True)
            assert await dialog.submit()
            assert autostart.calls == ["enable"]
            again = SettingsDialog(rig.bridge, autostart)
            assert again.start_at_login.isChecked()
            again.start_at_login.setChecked(False)
            assert await again.submit()
            assert autostart.calls == ["enable", "disable"]
            untouched = SettingsDialog(rig.bridge, autostart)
            assert await untouched.submit()
            assert autostart.calls == ["enable", "disable"]  # no change, no call
            assert not SettingsDialog(rig.bridge, None).start_at_login.isEnabled()

    run_on_qt(qapp, scenario())


def test_an_autostart_failure_is_shown_and_keeps_the_dialog_open(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = SettingsDialog(rig.bridge, FakeAutostart(fail=True))
            dialog.start_at_login.setChecked(True)
            assert not await dialog.submit()
            assert dialog.errors.text(None) == (
                "Cannot write the autostart entry. Check ~/.config/autostart."
            )
            assert dialog.result() != QDialog.DialogCode.Accepted

    run_on_qt(qapp, scenario())


def test_a_clash_shows_beside_bad_numbers_at_once(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = SettingsDialog(rig.bridge)
            dialog.fields["idle_ttl"].setText("-5")
            dialog.fields["proxy.port"].setText("8001")  # a model's port
            assert not await dialog.submit()
            assert dialog.errors.text("idle_ttl") == "must be greater than 0.0, got -5"
            assert "models.a.port: port 8001 is already used by the proxy" in dialog.errors.text(
                None
            )

    run_on_qt(qapp, scenario())
