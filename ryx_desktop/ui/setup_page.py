"""The setup page: what a first run needs, the models already on disk, and adding them.

A checklist with a green or red mark and a one-line fix per line (Docker, the NVIDIA runtime,
the GPUs, the vLLM image, the models folder; see ``core/setup_checks.py``), a Pull button with
the image's download progress, the models folder with Browse, "Find my models" listing the
model directories found there (checked ones are added as models, saved through the app's one
save path), and "Import compose file…".

Every collaborator comes through the constructor (the outside world is
``adapters/setup_probe.py``'s ``SetupProbe`` in the app, fakes in the tests). Buttons are thin
slots over methods that return the task they started (``recheck``, ``pull_image``, ``browse``,
``find_models``, ``add_checked``, ``import_compose``), so a test can await what a click set off.
Errors show in the page's status line, one sentence plus a hint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.config import Config
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.found_model import FoundModel
from ryx_desktop.core.model_estimate import GIB
from ryx_desktop.core.model_import import (
    ImportResult,
    add_compose_models,
    add_found_models,
    configured_key,
    example_keys,
)
from ryx_desktop.core.ports import PullProgress
from ryx_desktop.core.setup_checks import CheckResult, SetupFacts, run_checks
from ryx_desktop.ui._setup_parts import Checklist, FoundTable, ask_compose_file, ask_folder

#: The checklist's facts for a config and a models folder (``SetupProbe.facts``).
FactsProvider = Callable[[Config, Path], Awaitable[SetupFacts]]
#: The model directories under a folder; RyxError when it cannot be read (``SetupProbe.scan``).
Scanner = Callable[[Path], Awaitable[list[FoundModel]]]
#: Saves and applies a config; RyxError when refused (the config watcher's ``save``).
Saver = Callable[[Config], Awaitable[None]]
#: Downloads an image, reporting progress (``SetupProbe.pull``).
Puller = Callable[[str, Callable[[PullProgress], None]], Awaitable[None]]
#: The models of a compose file; RyxError when it cannot be used (``SetupProbe.load_compose``).
ComposeLoader = Callable[[Path], Awaitable[Config]]
#: Asks the user for a folder or file, starting somewhere; None when cancelled.
Picker = Callable[[QWidget, Path], Awaitable[Path | None]]

_ERROR_STYLE = "color: #c62828;"
_T = TypeVar("_T")


log = logging.getLogger("ryx_desktop.ui.setup")


class SetupPage(QWidget):
    """The first-run checklist and "Find my models"; emits ``modelsAdded`` with new keys."""

    modelsAdded = Signal(list)  # list[str]: keys of the models just saved into the config
    checksDone = Signal(list)  # list[CheckResult]: after each check

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        facts: FactsProvider,
        scan: Scanner,
        save: Saver,
        pull: Puller,
        load_compose: ComposeLoader,
        pick_folder: Picker = ask_folder,
        pick_compose: Picker = ask_compose_file,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._config = config
        self._facts_of = facts
        self._scan = scan
        self._save = save
        self._pull = pull
        self._load_compose = load_compose
        self._pick_folder = pick_folder
        self._pick_compose = pick_compose
        self._folder: Path | None = None  # chosen with Browse; None: the config's
        self._scanned: Path | None = None  # the folder the table lists
        self.facts: SetupFacts | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()

        self.checklist = Checklist()
        self.recheck_button = QPushButton("Re-check")
        self.recheck_button.clicked.connect(self.recheck)
        self.pull_button = QPushButton("Pull")
        self.pull_button.setToolTip("Download the vLLM image (several GB)")
        self.pull_button.setEnabled(False)
        self.pull_button.clicked.connect(self.pull_image)
        self.progress = QProgressBar()
        self.progress.hide()
        self.progress_text = QLabel()
        self.progress_text.hide()
        checks = QGroupBox("What ryx-desktop needs")
        checks_layout = QVBoxLayout(checks)
        checks_layout.addWidget(self.checklist)
        row = QHBoxLayout()
        row.addWidget(self.recheck_button)
        row.addWidget(self.pull_button)
        row.addWidget(self.progress, 3)
        row.addStretch(1)  # keeps the buttons their size while no progress shows
        checks_layout.addLayout(row)
        checks_layout.addWidget(self.progress_text)

        self.folder_label = QLabel()
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse)
        self.find_button = QPushButton("Find my models")
        self.find_button.clicked.connect(self.find_models)
        self.table = FoundTable()
        self.replace_examples = QCheckBox()
        self.replace_examples.setChecked(True)
        self.add_button = QPushButton("Add checked models")
        self.add_button.setEnabled(False)
        self.add_button.clicked.connect(self.add_checked)
        self.table.itemChanged.connect(self._update_add_button)
        self.compose_button = QPushButton("Import compose file…")
        self.compose_button.clicked.connect(self.import_compose)
        models = QGroupBox("Your models")
        models_layout = QVBoxLayout(models)
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Models folder:"))
        folder_row.addWidget(self.folder_label, 1)
        folder_row.addWidget(self.browse_button)
        folder_row.addWidget(self.find_button)
        models_layout.addLayout(folder_row)
        models_layout.addWidget(self.table, 1)
        models_layout.addWidget(self.replace_examples)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.compose_button)
        buttons.addStretch(1)
        models_layout.addLayout(buttons)

        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(checks)
        layout.addWidget(models, 1)
        layout.addWidget(self.status)
        self.refresh()

    # ---- what the page shows --------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The models folder: the one chosen with Browse, else the config's."""
        return self._folder or self._config().docker.models_dir

    def refresh(self, *_: object) -> None:
        """Show the config as it is now (the folder, the examples box, what is added).

        Connect the bridge's ``configChanged`` here, so that a hand edit shows too.
        """
        config = self._config()
        self.folder_label.setText(str(self.folder))
        examples = example_keys(config)
        self.replace_examples.setText(
            f"Replace the built-in example models ({', '.join(examples)})"
        )
        self.replace_examples.setVisible(bool(examples))
        if self._scanned == self.folder:
            self._show_found(self.table.models)
        self._update_add_button()

    def _update_add_button(self, *_: object) -> None:
        self.add_button.setEnabled("add" not in self._busy and bool(self.table.checked()))

    def say(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` in the status line (red for an error)."""
        self.status.setText(text)
        self.status.setStyleSheet(_ERROR_STYLE if error else "")

    def _fail(self, exc: RyxError) -> None:
        message = exc.message[:1].upper() + exc.message[1:]
        text = message if message.endswith(".") else f"{message}."
        self.say(f"{text} {exc.hint}".strip(), error=True)

    # ---- slots: each starts a task and returns it ----------------------------------------

    def recheck(self) -> asyncio.Task[list[CheckResult]]:
        """Run the checklist again."""
        return self._spawn(self.check())

    def pull_image(self) -> asyncio.Task[bool]:
        """Download the missing image(s), showing the progress."""
        return self._spawn(self.pull())

    def browse(self) -> asyncio.Task[bool]:
        """Choose the models folder, then check it and list its models."""
        return self._spawn(self.choose_folder())

    def find_models(self) -> asyncio.Task[list[FoundModel]]:
        """List the model directories of the models folder."""
        return self._spawn(self.search())

    def add_checked(self) -> asyncio.Task[list[str]]:
        """Add the checked models to the config."""
        return self._spawn(self.add())

    def import_compose(self) -> asyncio.Task[list[str]]:
        """Choose a compose file and add its models to the config."""
        return self._spawn(self.import_compose_file())

    def cancel(self) -> None:
        """Cancel the work under way (for closing the window)."""
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the work (awaitable) -------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Gather the facts and show the checklist; returns its lines."""
        if "check" in self._busy:
            return self.checklist.results
        self._busy.add("check")
        self.recheck_button.setEnabled(False)
        self.recheck_button.setText("Checking…")
        try:
            facts = await self._facts_of(self._config(), self.folder)
        except RyxError as exc:
            self._fail(exc)
            return self.checklist.results
        finally:
            self._busy.discard("check")
            self.recheck_button.setEnabled(True)
            self.recheck_button.setText("Re-check")
        self.facts = facts
        results = run_checks(facts)
        log.info(
            "setup checklist: %s",
            "; ".join(f"{r.name} {'ok' if r.ok else 'missing'}" for r in results),
        )
        self.checklist.show_results(results)
        self.pull_button.setEnabled(bool(facts.missing_images) and "pull" not in self._busy)
        self.refresh()
        self.checksDone.emit(results)
        return results

    async def pull(self) -> bool:
        """Pull every image the last check found missing; True when all arrived."""
        images = self.facts.missing_images if self.facts is not None else ()
        if not images or "pull" in self._busy:
            return False
        self._busy.add("pull")
        self.pull_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.progress_text.show()
        try:
            for image in images:
                self.progress_text.setText(f"Pulling {image}…")
                await self._pull(image, self._on_progress)
        except RyxError as exc:
            self._fail(exc)
            return False
        finally:
            self._busy.discard("pull")
            self.progress.hide()
            self.progress_text.hide()
            self.pull_button.setEnabled(True)  # a failed pull can be tried again
        self.say(f"Pulled {', '.join(images)}.")
        await self.check()
        return True

    def _on_progress(self, progress: PullProgress) -> None:
        percent = progress.percent
        if percent is None:
            self.progress.setRange(0, 0)  # busy: the sizes are not known yet
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(percent))
        sizes = ""
        if progress.total_bytes > 0:
            sizes = f", {progress.done_bytes / GIB:.2f} of {progress.total_bytes / GIB:.2f} GiB"
        self.progress_text.setText(
            f"Pulling {progress.image}: {progress.layers_done} of {progress.layers_total} "
            f"layers{sizes}"
        )

    async def choose_folder(self) -> bool:
        """Ask for the models folder; when one is chosen, check it and list its models."""
        chosen = await self._pick_folder(self, self.folder)
        if chosen is None:
            return False
        self._folder = chosen.expanduser()
        self.refresh()
        await self.search()
        await self.check()
        return True

    async def search(self) -> list[FoundModel]:
        """Scan the models folder and list what it holds."""
        folder = self.folder
        self.find_button.setEnabled(False)
        self.say(f"Looking for models in {folder}…")
        try:
            found = await self._scan(folder)
        except RyxError as exc:
            self._fail(exc)
            return []
        finally:
            self.find_button.setEnabled(True)
        self._scanned = folder
        self._show_found(found)
        if found:
            self.say(f"Found {len(found)} model{'s' if len(found) != 1 else ''} in {folder}.")
        else:
            self.say(
                f"No model directory (a config.json plus weights) in {folder}. "
                "Choose another folder with Browse.",
                error=True,
            )
        self._update_add_button()
        return found

    def _show_found(self, found: list[FoundModel]) -> None:
        config = self._config()
        configured = {
            m.path: key
            for m in found
            if (key := configured_key(config, self.folder, m)) is not None
        }
        total = self.facts.gpu_total_bytes if self.facts is not None else None
        self.table.show_models(found, configured, total)

    async def add(self) -> list[str]:
        """Add the checked models to the config and save it; returns the new keys."""
        chosen = self.table.checked()
        if not chosen:
            self.say("Check the models to add first.", error=True)
            return []
        if self.facts is None:
            await self.check()  # the GPU's size, for each model's share
        total = self.facts.gpu_total_bytes if self.facts is not None else None
        folder = self.folder

        def build(config: Config) -> ImportResult:
            return add_found_models(
                config, chosen, folder, gpu_total_bytes=total, replace_examples=self._replacing()
            )

        return await self._apply("add", build)

    async def import_compose_file(self) -> list[str]:
        """Ask for a compose file and add its models; returns their keys."""
        path = await self._pick_compose(self, Path.home())
        if path is None:
            return []
        try:
            imported = await self._load_compose(path)
        except RyxError as exc:
            self._fail(exc)
            return []

        def build(config: Config) -> ImportResult:
            return add_compose_models(config, imported, replace_examples=self._replacing())

        return await self._apply("compose", build)

    def _replacing(self) -> bool:
        return self.replace_examples.isVisibleTo(self) and self.replace_examples.isChecked()

    async def _apply(self, what: str, build: Callable[[Config], ImportResult]) -> list[str]:
        """Build the new config from the current one, save it, and say what changed."""
        if what in self._busy:
            return []
        self._busy.add(what)
        self.add_button.setEnabled(False)
        self.compose_button.setEnabled(False)
        try:
            result = build(self._config())
            if not result.added:
                self.say("Nothing to add: those models are in the config already.")
                return []
            await self._save(result.config)
        except RyxError as exc:
            self._fail(exc)
            return []
        finally:
            self._busy.discard(what)
            self.compose_button.setEnabled(True)
            self.refresh()
        self._folder = None if result.models_dir_changed else self._folder
        self.say(_summary(result))
        self.refresh()
        self.modelsAdded.emit(list(result.added))
        return list(result.added)


def _summary(result: ImportResult) -> str:
    added = [k for k in result.added if k not in result.replaced]
    parts = []
    if added:
        parts.append(
            f"Added {len(added)} model{'s' if len(added) != 1 else ''}: {', '.join(added)}."
        )
    if result.replaced:
        parts.append(f"Replaced {', '.join(result.replaced)}.")
    if result.removed_examples:
        parts.append(f"Removed the examples {', '.join(result.removed_examples)}.")
    if result.models_dir_changed:
        parts.append(f"The models folder is now {result.config.docker.models_dir}.")
    return " ".join(parts)
