"""The model dialog: refuses what the config file would refuse, next to the field; saves atomically.

The real supervisor over the in-memory fakes sits behind the bridge, whose ``apply_config`` is the
app's own (``make_config_applier``) writing a real config file under ``tmp_path``; everything
runs on a qasync loop, as in the app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QMessageBox
from pytestqt.qtbot import QtBot

from ryx_desktop.app import make_config_applier
from ryx_desktop.config import Config, ExternalModelConfig, ModelConfig, load_config, save_config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.model_dialog import REMOTE, ModelDialog
from tests.gui.fixtures_engine import managed, run_on_qt
from tests.support.artifacts import artifact_path
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock
from tests.support.waiting import wait_for

#: Folders the models folder of ``config_rig`` holds (``/models/b`` is there).
MODEL_FOLDERS = ("b", "coder")


@dataclass
class ConfigRig:
    """A config file, the engine that runs it (over fakes) and the bridge that saves to it."""

    path: Path
    runtime: FakeRuntime
    supervisor: Supervisor
    bridge: EngineBridge
    applied: list[Config] = field(default_factory=list)  # configChanged, once per save

    def files(self) -> list[str]:
        """The files beside the config (the models folder left out)."""
        return sorted(p.name for p in self.path.parent.iterdir() if p.name != "models")

    def starts(self) -> list[str]:
        return [key for verb, key in self.runtime.calls if verb == "start"]


@contextlib.asynccontextmanager
async def config_rig(
    tmp_path: Path, models: dict[str, Any], **top: Any
) -> AsyncIterator[ConfigRig]:
    """A saved config with ``models``, its watching supervisor, and a bridge that saves to it.

    The models folder is ``tmp_path/models``, holding the folders the tests' new models name.
    """
    path = tmp_path / "config.yaml"
    for folder in MODEL_FOLDERS:
        (tmp_path / "models" / folder).mkdir(parents=True, exist_ok=True)
    top.setdefault("docker", {"models_dir": str(tmp_path / "models")})
    save_config(Config.model_validate({"models": models, **top}), path)
    config = load_config(path)
    runtime = FakeRuntime()
    supervisor = Supervisor(config, runtime, FakeHealth(runtime), VirtualClock())
    applier = make_config_applier(supervisor, path)
    bridge = EngineBridge(supervisor, runtime, apply_config=applier)
    rig = ConfigRig(path, runtime, supervisor, bridge)
    bridge.configChanged.connect(rig.applied.append)
    await supervisor.open()
    try:
        yield rig
    finally:
        bridge.close()
        await supervisor.close()


def fill(dialog: ModelDialog, **values: str) -> None:
    for name, value in values.items():
        dialog.fields[name].setText(value)


NEW_MODEL = {"key": "b", "model": "/models/b", "port": "8002"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("port", "80000", "must be at most 65535, got 80000"),
        ("port", "8001", "port 8001 is already used by model 'a'"),
        ("port", "8420", "port 8420 is already used by the proxy"),
        ("port", "eighty", "expected a whole number, got 'eighty'"),
        ("gpu_memory_utilization", "1.5", "must be a share of GPU memory above 0 and at most 1"),
        ("model", "", "missing required setting 'model'"),
        ("key", "bad key!", "model key 'bad key!' must start with a letter or digit"),
        ("key", "a", "there is already a model called 'a'"),
        ("aliases", "x, a", "alias 'a' is the key of model 'a'"),
        ("devices", "0, 0", "GPU 0 is listed twice in devices"),
        ("extra_args", "--port 9000", "--port cannot be an extra arg"),
        ("extra_args", "--chat-template 'unclosed", "cannot split the arguments"),
        ("max_model_len", "0", "must be at least 1, got 0"),
    ],
)
def test_an_invalid_model_is_refused_next_to_its_field_and_nothing_is_saved(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path, name: str, value: str, message: str
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            before = rig.path.read_bytes()
            config = rig.supervisor.config
            dialog = ModelDialog(rig.bridge, None)
            qtbot.addWidget(dialog)  # closed and deleted after the test
            dialog.show()
            fill(dialog, **{**NEW_MODEL, name: value})
            assert not await dialog.submit()
            assert message in dialog.errors.text(name)
            others = [f for f in dialog.errors.fields if f != name and dialog.errors.text(f)]
            assert others == [] and dialog.errors.text(None) == ""
            assert rig.path.read_bytes() == before and rig.files() == ["config.yaml"]
            assert rig.supervisor.config is config and rig.applied == []
            assert dialog.result() != QDialog.DialogCode.Accepted
            if name == "key" and value == "bad key!":  # a long message: wrapped, not cut
                dialog.grab().save(str(artifact_path("model-dialog-error.png")))

    run_on_qt(qapp, scenario())


def test_a_valid_model_is_saved_atomically_and_joins_the_engine(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = ModelDialog(rig.bridge, None)
            assert dialog.fields["port"].text() == "8002"  # the first free port is suggested
            fill(
                dialog,
                key="b",
                name="Coder",
                model="/models/coder",
                aliases="coder, code",
                category="coding",
                size="small",
                gpu_memory_utilization="0.4",
                max_model_len="8192",
                devices="0",
                extra_args="--trust-remote-code --chat-template '/t/my template.jinja'",
                idle_ttl="600",
            )
            dialog.env.setPlainText("HF_HUB_OFFLINE=1\n\nVLLM_LOGGING_LEVEL = DEBUG\n")
            dialog.sleep_mode.setChecked(True)
            assert await dialog.submit()
            expected = ModelConfig(
                name="Coder",
                model="/models/coder",
                aliases=("coder", "code"),
                category="coding",
                size="small",
                port=8002,
                gpu_memory_utilization=0.4,
                max_model_len=8192,
                devices=(0,),
                extra_args=("--trust-remote-code", "--chat-template", "/t/my template.jinja"),
                env={"HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "DEBUG"},
                sleep_mode=True,
                idle_ttl=600,
            )
            saved = load_config(rig.path)
            assert list(saved.models) == ["a", "b"] and saved.models["b"] == expected
            assert rig.files() == ["config.yaml"]  # the temp file was renamed, none is left
            assert rig.supervisor.config == saved and rig.applied == [saved]
            assert rig.bridge.instance("coder").state is InstanceState.STOPPED
            assert dialog.result() == QDialog.DialogCode.Accepted

    run_on_qt(qapp, scenario())


def test_the_save_button_runs_the_same_save(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = ModelDialog(rig.bridge, None)
            fill(dialog, **NEW_MODEL)
            buttons = dialog.findChild(QDialogButtonBox)
            assert buttons is not None
            buttons.button(QDialogButtonBox.StandardButton.Save).click()
            await wait_for(lambda: dialog.result() == QDialog.DialogCode.Accepted, "the save")
            assert "b" in load_config(rig.path).models

    run_on_qt(qapp, scenario())


def test_editing_keeps_what_the_dialog_does_not_show(qapp: QApplication, tmp_path: Path) -> None:
    entry = managed(
        8001,
        name="A",
        served_name="a-served",
        aliases=["x"],
        image="vllm/vllm-openai:v0.6.4",
        devices=[0, 1],
        extra_args=["--trust-remote-code", "--max-num-seqs", "8"],
        env={"A": "1"},
        start_timeout=120,
        max_model_len=4096,
    )

    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": entry}) as rig:
            before = rig.supervisor.config
            dialog = ModelDialog(rig.bridge, "a")
            assert dialog.fields["key"].isReadOnly() and not dialog.kind.isEnabled()
            assert dialog.fields["devices"].text() == "0, 1"
            assert await dialog.submit()  # nothing changed: the same config comes back
            assert load_config(rig.path) == before == rig.supervisor.config

    run_on_qt(qapp, scenario())


def test_editing_a_running_models_spec_offers_a_restart_that_applies_it(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            await rig.supervisor.ensure_ready("a")
            asked: list[list[str]] = []
            dialog = ModelDialog(
                rig.bridge, "a", ask_restart=lambda keys: asked.append(keys) or True
            )
            fill(dialog, port="8005")
            assert await dialog.submit()
            assert asked == [["a"]]

            def restarted() -> bool:
                inst = rig.bridge.instance("a")
                return inst.state is InstanceState.READY and inst.port == 8005

            await wait_for(restarted, "a to run again on its new port")
            assert not rig.bridge.instance("a").config_changed
            assert rig.starts() == ["a", "a"]
            container = rig.runtime.by_key("a")
            assert container is not None and container.info.host_port == 8005

    run_on_qt(qapp, scenario())


def test_the_default_restart_question_waits_without_blocking_the_loop(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            await rig.supervisor.ensure_ready("a")
            dialog = ModelDialog(rig.bridge, "a")
            qtbot.addWidget(dialog)
            dialog.show()
            fill(dialog, port="8006")
            saving = rig.bridge.spawn(dialog.submit())
            await wait_for(lambda: dialog.findChild(QMessageBox) is not None, "the question")
            box = dialog.findChild(QMessageBox)
            assert box is not None and "restart it now" in box.text().lower()
            assert not saving.done()  # the save waits for the answer; the loop runs on
            box.button(QMessageBox.StandardButton.Yes).click()
            assert await saving

            def restarted() -> bool:
                inst = rig.bridge.instance("a")
                return inst.state is InstanceState.READY and inst.port == 8006

            await wait_for(restarted, "a to run again on its new port")

    # As in the tray app: closing the last window (the question) must not end Qt's loop.
    quits = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    try:
        run_on_qt(qapp, scenario())
    finally:
        qapp.setQuitOnLastWindowClosed(quits)


def test_no_restart_is_offered_without_a_spec_change_and_a_no_keeps_it_running(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            await rig.supervisor.ensure_ready("a")
            asked: list[list[str]] = []
            renamed = ModelDialog(
                rig.bridge, "a", ask_restart=lambda keys: asked.append(keys) or True
            )
            fill(renamed, name="Renamed", aliases="alpha")
            assert await renamed.submit()
            assert asked == [] and rig.bridge.instance("alpha").name == "Renamed"
            resized = ModelDialog(
                rig.bridge, "a", ask_restart=lambda keys: asked.append(keys) or False
            )
            fill(resized, max_model_len="2048")
            assert await resized.submit()
            assert asked == [["a"]]
            inst = rig.bridge.instance("a")
            assert inst.state is InstanceState.READY and inst.config_changed
            assert rig.starts() == ["a"]

    run_on_qt(qapp, scenario())


def test_a_remote_model_needs_an_http_url(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = ModelDialog(rig.bridge, None)
            dialog.kind.setCurrentIndex(REMOTE)
            fill(dialog, key="remote", url="ftp://elsewhere:9000", aliases="big")
            assert not await dialog.submit()
            assert "url must start with http:// or https://" in dialog.errors.text("url")
            fill(dialog, url="http://10.0.0.5:9000/")
            assert await dialog.submit()
            saved = load_config(rig.path).models["remote"]
            assert saved == ExternalModelConfig(url="http://10.0.0.5:9000", aliases=("big",))
            assert rig.bridge.instance("big").external
            edit = ModelDialog(rig.bridge, "remote")
            assert edit.kind.currentIndex() == REMOTE
            assert edit.fields["url"].text() == "http://10.0.0.5:9000"

    run_on_qt(qapp, scenario())


def test_env_lines_must_be_name_equals_value(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            before = rig.path.read_bytes()
            dialog = ModelDialog(rig.bridge, None)
            fill(dialog, **NEW_MODEL)
            dialog.env.setPlainText("GOOD=1\nnot a setting\nCUDA_VISIBLE_DEVICES=0")
            assert not await dialog.submit()
            errors = dialog.errors.text("env")
            assert "line 2: write NAME=VALUE, not 'not a setting'" in errors
            assert "set the GPUs with `devices:` instead of CUDA_VISIBLE_DEVICES" in errors
            assert rig.path.read_bytes() == before

    run_on_qt(qapp, scenario())


def test_every_problem_shows_at_once_clashes_beside_bad_values(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001, aliases=["x"])}) as rig:
            dialog = ModelDialog(rig.bridge, None)
            fill(dialog, **{**NEW_MODEL, "port": "8001"}, gpu_memory_utilization="1.5", aliases="x")
            assert not await dialog.submit()
            assert "must be a share of GPU memory" in dialog.errors.text("gpu_memory_utilization")
            assert "port 8001 is already used by model 'a'" in dialog.errors.text("port")
            assert "alias 'x' is already the alias of model 'a'" in dialog.errors.text("aliases")

    run_on_qt(qapp, scenario())


def test_the_host_is_chosen_in_the_dialog_when_there_are_several(
    qapp: QApplication, tmp_path: Path
) -> None:
    hosts = {"gpu2": {"url": "ssh://me@gpu2", "models_dir": "/srv/models"}}

    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as one_host:
            alone = ModelDialog(one_host.bridge, "a")
            assert not alone._form.isRowVisible(alone._host_row)  # one engine: nothing to pick
            alone.deleteLater()
        async with config_rig(tmp_path, {"a": managed(8001)}, hosts=hosts) as rig:
            dialog = ModelDialog(rig.bridge, None)
            assert dialog._form.isRowVisible(dialog._host_row)
            choices = [dialog.host.itemData(i) for i in range(dialog.host.count())]
            assert choices == ["local", "gpu2", "any"]
            # A folder on gpu2 is not looked for on this machine.
            fill(dialog, key="far", model="/models/only-on-gpu2", port="8002")
            assert dialog.errors.text("model") != ""  # not in this machine's models folder
            dialog.host.setCurrentIndex(choices.index("gpu2"))
            assert dialog.errors.text("model") == ""
            assert await dialog.submit()
            saved = load_config(rig.path).models["far"]
            assert isinstance(saved, ModelConfig) and saved.host == "gpu2"

            edit = ModelDialog(rig.bridge, "far")
            assert edit.host.currentData() == "gpu2"
            edit.host.setCurrentIndex(choices.index("any"))
            assert await edit.submit()
            moved = load_config(rig.path).models["far"]
            assert isinstance(moved, ModelConfig) and moved.host == "any"
            edit.deleteLater()
            dialog.deleteLater()

    run_on_qt(qapp, scenario())
