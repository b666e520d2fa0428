"""The model dialog's path: a ``/models/...`` path that is not there is said at once and refused,
and Browse… fills in the ``/models/...`` path of a folder chosen in the models folder.

The same rig as the model dialog's tests (``config_rig``): its models folder is
``tmp_path/models`` and holds ``b`` and ``coder``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication, QFileDialog
from pytestqt.qtbot import QtBot

from ryx_desktop.config import load_config
from ryx_desktop.ui.model_dialog import REMOTE, ModelDialog
from tests.gui.fixtures_engine import managed, run_on_qt
from tests.gui.test_model_dialog import NEW_MODEL, config_rig, fill
from tests.support.waiting import wait_for


class Picker:
    """A folder picker that answers ``answer`` and records where it was asked to start."""

    def __init__(self, answer: Path | None) -> None:
        self.answer = answer
        self.starts: list[Path] = []

    async def __call__(self, start: Path) -> Path | None:
        self.starts.append(start)
        return self.answer


def test_a_missing_path_is_said_as_it_is_typed_and_refused(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            before = rig.path.read_bytes()
            dialog = ModelDialog(rig.bridge, None)
            assert dialog.errors.text("model") == ""
            fill(dialog, **{**NEW_MODEL, "model": "/models/nowhere"})
            said = dialog.errors.text("model")  # at once, before any Save
            assert said.startswith("/models/nowhere is not in the models folder: ")
            assert str(tmp_path / "models" / "nowhere") in said and "Browse…" in said
            assert not await dialog.submit()
            assert dialog.errors.text("model") == said
            assert rig.path.read_bytes() == before

            fill(dialog, model="/models/b")  # there: the line clears as it is typed
            assert dialog.errors.text("model") == ""
            fill(dialog, model="Qwen/Qwen2.5-0.5B-Instruct")  # a Hugging Face name: not ours
            assert dialog.errors.text("model") == ""
            fill(dialog, model="/models/nowhere")
            dialog.kind.setCurrentIndex(REMOTE)  # no model path for a remote server
            assert dialog.errors.text("model") == ""

    run_on_qt(qapp, scenario())


def test_browse_fills_in_the_models_path_of_the_chosen_folder(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            models = tmp_path / "models"
            (models / "org" / "deep").mkdir(parents=True)
            picker = Picker(models / "org" / "deep")
            dialog = ModelDialog(rig.bridge, None, pick_folder=picker)
            fill(dialog, **{**NEW_MODEL, "model": "/models/nowhere"})
            assert await dialog.browse_model()
            assert picker.starts == [models]  # it opens in the models folder
            assert dialog.fields["model"].text() == "/models/org/deep"
            assert dialog.errors.text("model") == ""
            assert await dialog.submit()
            assert load_config(rig.path).models["b"].model == "/models/org/deep"

    run_on_qt(qapp, scenario())


def test_a_folder_outside_the_models_folder_is_refused_and_a_cancel_changes_nothing(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            outside = tmp_path / "elsewhere"
            outside.mkdir()
            dialog = ModelDialog(rig.bridge, None, pick_folder=Picker(outside))
            fill(dialog, model="/models/b")
            assert not await dialog.browse_model()
            assert dialog.fields["model"].text() == "/models/b"
            said = dialog.errors.text("model")
            assert said.startswith(f"{outside} is not inside the models folder ")
            assert "as /models" in said

            cancelled = ModelDialog(rig.bridge, None, pick_folder=Picker(None))
            fill(cancelled, model="/models/b")
            assert not await cancelled.browse_model()
            assert cancelled.fields["model"].text() == "/models/b"
            assert cancelled.errors.text("model") == ""

    run_on_qt(qapp, scenario())


def test_nothing_is_checked_for_an_engine_on_another_machine(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        docker = {"models_dir": str(tmp_path / "models"), "host": "tcp://gpu-box:2375"}
        async with config_rig(tmp_path, {"a": managed(8001)}, docker=docker) as rig:
            dialog = ModelDialog(rig.bridge, None)
            fill(dialog, **{**NEW_MODEL, "model": "/models/on-the-gpu-box"})
            assert dialog.errors.text("model") == ""
            assert await dialog.submit()

    run_on_qt(qapp, scenario())


def test_an_unchanged_missing_path_is_said_but_does_not_stop_an_edit(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:  # /models/m8001: not there
            dialog = ModelDialog(rig.bridge, "a")
            assert dialog.errors.text("model").startswith("/models/m8001 is not in the models")
            fill(dialog, name="Renamed")
            assert await dialog.submit()
            assert load_config(rig.path).models["a"].name == "Renamed"

    run_on_qt(qapp, scenario())


def test_the_default_picker_asks_without_blocking_the_loop(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with config_rig(tmp_path, {"a": managed(8001)}) as rig:
            dialog = ModelDialog(rig.bridge, None)
            qtbot.addWidget(dialog)
            dialog.show()
            browsing = rig.bridge.spawn(dialog.browse_model())
            await wait_for(lambda: dialog.findChild(QFileDialog) is not None, "the file dialog")
            picker = dialog.findChild(QFileDialog)
            assert picker is not None and not browsing.done()
            assert picker.directory().absolutePath() == str(tmp_path / "models")  # it starts there
            picker.setDirectory(str(tmp_path / "models" / "coder"))  # the user goes in, chooses
            picker.accept()
            assert await browsing
            assert dialog.fields["model"].text() == "/models/coder"

    quits = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    try:
        run_on_qt(qapp, scenario())
    finally:
        qapp.setQuitOnLastWindowClosed(quits)
