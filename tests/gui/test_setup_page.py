"""The setup page over a fake Docker engine, fake NVML and a folder of model directories.

The page gets the real ``SetupProbe`` (over ``FakeSetupDocker`` and the fake ``pynvml``), the
real scanner, and the config watcher's real ``save`` writing ``config.yaml`` under
``tmp_path``; what it saves is read back with the config loader. Everything runs on a qasync
loop; each click's task is awaited, nothing sleeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.adapters.setup_probe import SetupProbe
from ryx_desktop.config import (
    MISSING,
    Config,
    ConfigWatcher,
    ModelConfig,
    default_config,
    load_config,
    read_config,
    save_config,
)
from ryx_desktop.core.ports import PullProgress
from ryx_desktop.core.setup_checks import (
    DOCKER,
    FIX_PERMISSION,
    FIX_START_DOCKER,
    GPUS,
    IMAGE,
    MODELS,
    NOT_NEEDED,
    RUNTIME,
)
from ryx_desktop.ui._setup_parts import BAD_MARK, OK_MARK
from ryx_desktop.ui.setup_page import SetupPage
from tests.gui.fixtures_engine import run_on_qt
from tests.support.artifacts import artifact_path
from tests.support.config_files import hand_edit
from tests.support.fake_pynvml import FakeGpu, FakePynvml, GiB
from tests.support.model_dirs import FOUND, LLAMA, make_model, model_tree
from tests.support.setup_fakes import FakeSetupDocker, State

IMAGE_NAME = "vllm/vllm-openai:latest"


class ConfigBox:
    """The app's config as the page sees it: replaced by each save the watcher applies."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.applied: list[Config] = []

    def current(self) -> Config:
        return self.config

    async def apply(self, new: Config) -> None:
        self.config = new
        self.applied.append(new)


@dataclass
class Rig:
    page: SetupPage
    docker: FakeSetupDocker
    path: Path  # the config file
    models: Path  # the models folder the config names
    box: ConfigBox
    added: list[list[str]] = field(default_factory=list)


class Picker:
    """A folder or file picker that answers ``answer`` and remembers where it started."""

    def __init__(self, answer: Path | None) -> None:
        self.answer = answer
        self.started: list[Path] = []

    async def __call__(self, parent: QWidget, start: Path) -> Path | None:
        self.started.append(start)
        return self.answer


@contextlib.asynccontextmanager
async def setup_rig(
    tmp_path: Path,
    qtbot: QtBot,
    *,
    state: State = "up",
    images: set[str] | None = None,
    config: Config | None = None,
    file_exists: bool = False,
    **pickers: Any,
) -> AsyncIterator[Rig]:
    """The page over a first-run config (the built-in examples) naming a models folder."""
    models = model_tree(tmp_path / "models")
    path = tmp_path / "config.yaml"
    if config is None:
        config = default_config().model_copy(
            update={"docker": default_config().docker.model_copy(update={"models_dir": models})}
        )
    if file_exists:
        save_config(config, path)
    config, fingerprint = read_config(path) if file_exists else (config, MISSING)
    docker = FakeSetupDocker(state, images=images)
    gpus = NvmlGpuProbe(FakePynvml([FakeGpu(name="NVIDIA GeForce RTX 4090", total=24 * GiB)]))
    probe = SetupProbe(docker, gpus, environ={})
    box = ConfigBox(config)
    watcher = ConfigWatcher(path, fingerprint, box.apply)
    page = SetupPage(
        config=box.current,
        facts=probe.facts,
        scan=probe.scan,
        save=watcher.save,
        pull=probe.pull,
        load_compose=probe.load_compose,
        **pickers,
    )
    qtbot.addWidget(page)
    rig = Rig(page, docker, path, models, box)
    page.modelsAdded.connect(rig.added.append)
    try:
        yield rig
    finally:
        rig.page.cancel()
        await gpus.close()


def test_docker_unreachable_is_red_with_its_fix_then_green_once_it_answers(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, state="down") as rig:
            page = rig.page
            results = await page.recheck()
            assert [r.name for r in results] == [DOCKER, RUNTIME, GPUS, IMAGE, MODELS]
            mark, text, fix = page.checklist.line(DOCKER)
            assert mark == BAD_MARK
            assert text == (
                "no Docker engine answers at unix:///var/run/docker.sock (connection refused)"
            )
            assert fix == FIX_START_DOCKER
            assert page.checklist.line(IMAGE)[0] == BAD_MARK
            assert not page.pull_button.isEnabled()  # nothing to pull from without Docker
            page.resize(900, 760)
            page.grab().save(str(artifact_path("setup-page-docker-down.png")))

            rig.docker.state = "denied"
            await page.recheck()
            assert page.checklist.line(DOCKER)[2] == FIX_PERMISSION

            rig.docker.state = "up"
            rig.docker.images.add(IMAGE_NAME)
            await page.recheck()
            for name in (DOCKER, RUNTIME, GPUS, IMAGE, MODELS):
                mark, _text, fix = page.checklist.line(name)
                assert (name, mark, fix) == (name, OK_MARK, "")
            assert page.checklist.line(GPUS)[1] == "1 GPU: NVIDIA GeForce RTX 4090 (24 GiB)"
            assert page.checklist.line(MODELS)[1] == (
                f"{rig.models} holds {len(FOUND)} model directories"
            )
            page.resize(900, 760)
            page.grab().save(str(artifact_path("setup-page-checklist.png")))

    run_on_qt(qapp, scenario())


def test_pull_shows_the_layer_progress_then_the_image_is_green(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot) as rig:
            page = rig.page
            await page.recheck()
            mark, text, fix = page.checklist.line(IMAGE)
            assert (mark, text) == (BAD_MARK, f"{IMAGE_NAME} is not on this machine")
            assert fix == f"Press Pull to download {IMAGE_NAME} (several GB)."
            assert page.pull_button.isEnabled()

            rig.docker.steps = [
                PullProgress(IMAGE_NAME, 0, 0, 0, 5, "Pulling fs layer"),
                PullProgress(IMAGE_NAME, 2 * GiB, 5 * GiB, 2, 5, "Downloading"),
            ]
            rig.docker.hold = True
            pulling = page.pull_image()
            await rig.docker.reported.wait()
            assert not page.progress.isHidden()
            assert (page.progress.minimum(), page.progress.maximum()) == (0, 100)
            assert page.progress.value() == 40
            assert page.progress_text.text() == (
                f"Pulling {IMAGE_NAME}: 2 of 5 layers, 2.00 of 5.00 GiB"
            )
            assert not page.pull_button.isEnabled()

            rig.docker.release()
            assert await pulling is True
            assert rig.docker.pulls == [IMAGE_NAME]
            assert page.progress.isHidden()
            assert page.checklist.line(IMAGE)[0] == OK_MARK
            assert not page.pull_button.isEnabled()  # nothing left to pull

    run_on_qt(qapp, scenario())


def test_a_failed_pull_says_why(qapp: QApplication, qtbot: QtBot, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot) as rig:
            await rig.page.recheck()
            rig.docker.pull_error = "cannot resolve registry-1.docker.io (no such host)"
            assert await rig.page.pull_image() is False
            assert rig.page.status.text() == (
                f"Image {IMAGE_NAME} is not available locally and could not be pulled: "
                "cannot resolve registry-1.docker.io (no such host). Check the image name and "
                "your network, or load it with `docker load` / `docker pull`."
            )
            assert rig.page.checklist.line(IMAGE)[0] == BAD_MARK
            assert rig.page.pull_button.isEnabled()  # try again

    run_on_qt(qapp, scenario())


def test_find_my_models_lists_the_models_and_ignores_the_junk(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, images={IMAGE_NAME}) as rig:
            page = rig.page
            await page.recheck()  # the GPU's size, for the shares
            found = await page.find_models()
            assert [m.path for m in found] == list(FOUND)
            table = page.table
            assert table.rowCount() == len(FOUND)
            rows = [
                [table.item(r, c).text() for c in range(table.columnCount())]
                for r in range(table.rowCount())
            ]
            by_path = {row[0]: row for row in rows}
            assert by_path["Qwen/Qwen2.5-0.5B-GPTQ"][1:4] == [
                "Qwen2ForCausalLM",
                "0 MiB",
                "gptq 4-bit",
            ]
            assert by_path["tiny-llama"][4] == "1.2 B"
            assert by_path["tiny-llama"][5] == "1.3 GiB (share 0.10 of 24 GiB)"
            assert [m.path for m in table.checked()] == list(FOUND)  # all new: all checked
            page.resize(900, 760)
            page.grab().save(str(artifact_path("setup-page-models.png")))
            assert page.add_button.isEnabled()
            assert page.status.text() == f"Found {len(FOUND)} models in {rig.models}."

            # The user's choices survive a re-check (which lists the table again).
            table.set_checked("tiny-llama", False)
            await page.recheck()
            assert "tiny-llama" not in [m.path for m in table.checked()]
            assert len(table.checked()) == len(FOUND) - 1

    run_on_qt(qapp, scenario())


def test_adding_the_checked_models_writes_a_config_the_loader_reads(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, images={IMAGE_NAME}) as rig:
            page = rig.page
            assert not rig.path.exists()  # a first run: no config file yet
            assert page.replace_examples.isVisibleTo(page)
            await page.recheck()
            await page.find_models()
            page.table.set_checked("custom-code", False)
            page.table.set_checked("models--meta-llama--Llama-3.2-1B/snapshots/abc123", False)
            keys = await page.add_checked()
            assert keys == ["qwen2.5-0.5b-gptq", "deep-model", "sharded-model", "tiny-llama"]
            assert rig.added == [keys]

            saved = load_config(rig.path)
            assert saved == rig.box.config == rig.box.applied[-1]
            assert list(saved.models) == keys  # the examples were replaced
            assert saved.default_model == "qwen2.5-0.5b-gptq"
            entries = [saved.models[k] for k in keys]
            managed = [m for m in entries if isinstance(m, ModelConfig)]
            assert [m.model for m in managed] == [
                "/models/Qwen/Qwen2.5-0.5B-GPTQ",
                "/models/medium/general/deep-model",
                "/models/org/sharded-model",
                "/models/tiny-llama",
            ]
            assert [m.port for m in managed] == [8001, 8002, 8003, 8004]
            assert all(m.gpu_memory_utilization == 0.1 for m in managed)  # tiny on 24 GiB
            assert page.status.text().startswith(
                "Added 4 models: qwen2.5-0.5b-gptq, deep-model, sharded-model, tiny-llama. "
                "Removed the examples medium-general, medium-coding, small-general."
            )
            # What was added is listed as added; the rest keep their boxes and can be added
            # later, with new ports.
            assert not page.replace_examples.isVisibleTo(page)
            assert page.table.checked() == [] and not page.add_button.isEnabled()
            page.table.set_checked("custom-code", True)
            page.table.set_checked("models--meta-llama--Llama-3.2-1B/snapshots/abc123", True)
            page.table.set_checked("tiny-llama", True)  # added already: cannot be checked
            assert page.add_button.isEnabled()
            assert [m.path for m in page.table.checked()] == [
                "custom-code",
                "models--meta-llama--Llama-3.2-1B/snapshots/abc123",
            ]
            assert page.table.item(FOUND.index("tiny-llama"), 0).text() == (
                "tiny-llama (added: tiny-llama)"
            )
            more = await page.add_checked()
            assert more == ["custom-code", "llama-3.2-1b"]
            again = load_config(rig.path)
            assert len(again.models) == 6
            assert again.models["custom-code"].extra_args == ("--trust-remote-code",)  # type: ignore[union-attr]
            assert again.models["llama-3.2-1b"].port == 8006  # type: ignore[union-attr]

    run_on_qt(qapp, scenario())


def test_browse_picks_another_folder_that_becomes_the_models_folder(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    other = make_model(tmp_path / "elsewhere", "Mistral-7B", LLAMA).parent
    picker = Picker(other)

    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, pick_folder=picker) as rig:
            page = rig.page
            assert await page.browse() is True
            assert picker.started == [rig.models]
            assert page.folder == other and page.folder_label.text() == str(other)
            assert [m.path for m in page.table.models] == ["Mistral-7B"]
            assert page.checklist.line(MODELS)[1] == f"{other} holds 1 model directory"
            assert await page.add_checked() == ["mistral-7b"]
            saved = load_config(rig.path)
            assert saved.docker.models_dir == other
            assert saved.models["mistral-7b"].model == "/models/Mistral-7B"  # type: ignore[union-attr]
            assert page.status.text().endswith(f"The models folder is now {other}.")

            picker.answer = None  # cancelled: nothing changes
            assert await page.browse() is False
            assert page.folder == other

    run_on_qt(qapp, scenario())


def test_import_a_compose_file(qapp: QApplication, qtbot: QtBot, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yml"
    compose.write_text(
        "services:\n"
        "  vllm-small-general:\n"
        "    image: vllm/vllm-openai:latest\n"
        "    ports: ['127.0.0.1:8011:8000']\n"
        f"    volumes: ['{tmp_path / 'models'}:/models:ro']\n"
        "    command: --model /models/tiny-llama\n",
        encoding="utf-8",
    )
    picker = Picker(compose)

    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, pick_compose=picker) as rig:
            keys = await rig.page.import_compose()
            assert keys == ["small-general"]
            saved = load_config(rig.path)
            # The example of the same key was replaced by the compose file's model.
            assert list(saved.models) == ["small-general"]
            assert saved.models["small-general"].port == 8011  # type: ignore[union-attr]
            assert rig.added == [["small-general"]]
            assert "Removed the examples" in rig.page.status.text()

            compose.write_text("services: {}\n", encoding="utf-8")
            assert await rig.page.import_compose() == []
            assert "no vLLM services found" in rig.page.status.text()
            assert rig.added == [["small-general"]]

    run_on_qt(qapp, scenario())


def test_a_cpu_only_config_does_not_need_the_nvidia_lines(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    cpu = Config.model_validate(
        {
            "docker": {"models_dir": str(tmp_path / "models")},
            "models": {"a": {"model": "/models/tiny-llama", "port": 8001, "devices": "none"}},
        }
    )

    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, config=cpu, images={IMAGE_NAME}) as rig:
            rig.docker.runtimes = ("runc",)
            await rig.page.recheck()
            assert rig.page.checklist.line(RUNTIME) == (OK_MARK, NOT_NEEDED, "")
            assert rig.page.checklist.line(GPUS) == (OK_MARK, NOT_NEEDED, "")
            assert not rig.page.replace_examples.isVisibleTo(rig.page)

    run_on_qt(qapp, scenario())


def test_a_save_refused_because_the_file_changed_says_so(
    qapp: QApplication, qtbot: QtBot, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with setup_rig(tmp_path, qtbot, file_exists=True) as rig:
            await rig.page.find_models()
            before = hand_edit(rig.path, "port: 8001", "port: 8101")
            assert await rig.page.add_checked() == []
            assert "changed on disk since ryx-desktop read it" in rig.page.status.text()
            assert rig.path.read_bytes() == before and rig.added == []
            assert rig.page.add_button.isEnabled()  # try again on what is there now

    run_on_qt(qapp, scenario())
