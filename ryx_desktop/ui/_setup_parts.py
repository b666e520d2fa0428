"""The setup page's pieces: the checklist, the table of found models, the file pickers.

The pickers open their dialog with ``open()`` and await its answer on the one loop, as
``_questions.ask_yes_no`` does, so no nested Qt event loop runs inside an asyncio task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ryx_desktop.core.found_model import FoundModel
from ryx_desktop.core.model_estimate import GIB, fits, suggest_share
from ryx_desktop.core.setup_checks import CheckResult

OK_MARK, BAD_MARK = "\u2714", "\u2716"  # heavy check mark, heavy multiplication x
_OK_STYLE = "color: #2e7d32; font-weight: bold;"
_BAD_STYLE = "color: #c62828; font-weight: bold;"
_FIX_STYLE = "color: #555555;"
COLUMNS = ("Model", "Architecture", "Size on disk", "Quantisation", "Parameters", "GPU memory")
ESTIMATE_TIP = (
    "Estimated GPU memory: (weights + KV cache for the context) x 1.2 + 1 GiB; "
    "the share is what the model gets as gpu_memory_utilization on the first GPU."
)


class Checklist(QWidget):
    """One line per check: a green or red mark, the check's name and text, and its fix."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setColumnStretch(2, 1)
        self.results: list[CheckResult] = []
        self._labels: dict[str, tuple[QLabel, QLabel, QLabel]] = {}
        self._placeholder = QLabel("Not checked yet: press Re-check.")
        self._grid.addWidget(self._placeholder, 0, 0, 1, 3)

    def show_results(self, results: Sequence[CheckResult]) -> None:
        """Replace the lines with ``results``."""
        while self._grid.count():
            item = self._grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None and widget is not self._placeholder:
                widget.deleteLater()
        self._placeholder.hide()
        self.results = list(results)
        self._labels = {}
        for row, result in enumerate(self.results):
            mark = QLabel(OK_MARK if result.ok else BAD_MARK)
            mark.setStyleSheet(_OK_STYLE if result.ok else _BAD_STYLE)
            mark.setAccessibleName("ok" if result.ok else "problem")
            name = QLabel(result.name)
            name.setStyleSheet("font-weight: bold;")
            text = QLabel(result.text)
            fix = QLabel(result.fix)
            fix.setStyleSheet(_FIX_STYLE)
            for label in (name, text, fix):
                label.setTextFormat(Qt.TextFormat.PlainText)
            for label in (text, fix):
                label.setWordWrap(True)
                label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            fix.setVisible(bool(result.fix))
            self._grid.addWidget(mark, 2 * row, 0, Qt.AlignmentFlag.AlignTop)
            self._grid.addWidget(name, 2 * row, 1, Qt.AlignmentFlag.AlignTop)
            self._grid.addWidget(text, 2 * row, 2)
            self._grid.addWidget(fix, 2 * row + 1, 2)
            self._labels[result.name] = (mark, text, fix)

    def line(self, name: str) -> tuple[str, str, str]:
        """What the line of check ``name`` shows: its mark, text and fix."""
        mark, text, fix = self._labels[name]
        return mark.text(), text.text(), fix.text() if fix.isVisibleTo(self) else ""


class FoundTable(QTableWidget):
    """Found models with a checkbox each; models configured already are listed, greyed out."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.models: list[FoundModel] = []

    def show_models(
        self,
        models: Sequence[FoundModel],
        configured: dict[str, str],
        gpu_total_bytes: int | None,
    ) -> None:
        """List ``models``; ``configured`` maps a model's path to the key that has it already.

        New models are checked, unless they do not fit the GPU; a model listed before keeps
        the box the user left it with.
        """
        before = {m.path: self._is_checked(row) for row, m in enumerate(self.models)}
        self.models = list(models)
        self.setRowCount(len(self.models))
        for row, model in enumerate(self.models):
            key = configured.get(model.path)
            first = QTableWidgetItem(model.path if key is None else f"{model.path} (added: {key})")
            first.setToolTip(model.path)
            flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable
            fitting = fits(model.need_bytes, gpu_total_bytes) is not False
            wanted = key is None and before.get(model.path, fitting)
            if key is not None:
                flags = Qt.ItemFlag.ItemIsUserCheckable  # shown, not enabled: nothing to add
            first.setFlags(flags)
            first.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)
            cells = [
                first,
                QTableWidgetItem(model.architecture or "unknown"),
                QTableWidgetItem(_gib(model.weights_bytes)),
                QTableWidgetItem(model.quantization or "unknown"),
                QTableWidgetItem(_parameters(model.parameters)),
                QTableWidgetItem(_need(model.need_bytes, gpu_total_bytes)),
            ]
            cells[-1].setToolTip(ESTIMATE_TIP)
            for column, item in enumerate(cells):
                if column:
                    item.setFlags(flags & ~Qt.ItemFlag.ItemIsUserCheckable)
                self.setItem(row, column, item)

    def checked(self) -> list[FoundModel]:
        """The models whose box is checked (and that can be added)."""
        return [m for row, m in enumerate(self.models) if self._is_checked(row)]

    def set_checked(self, path: str, checked: bool) -> None:
        """Check or uncheck the model at ``path``."""
        for row, model in enumerate(self.models):
            item = self.item(row, 0)
            if model.path == path and item is not None:
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def _is_checked(self, row: int) -> bool:
        item = self.item(row, 0)
        return (
            item is not None
            and bool(item.flags() & Qt.ItemFlag.ItemIsEnabled)
            and item.checkState() == Qt.CheckState.Checked
        )


def _gib(value: int) -> str:
    if value < GIB:
        return f"{value / 2**20:.0f} MiB"
    return f"{value / GIB:.1f} GiB"


def _parameters(value: int | None) -> str:
    if value is None:
        return "unknown"
    if value >= 1e9:
        return f"{value / 1e9:.1f} B"
    return f"{value / 1e6:.0f} M"


def _need(need: int, total: int | None) -> str:
    if total is None:
        return _gib(need)
    if fits(need, total) is False:
        return f"{_gib(need)}: more than this GPU's {total / GIB:.0f} GiB"
    return f"{_gib(need)} (share {suggest_share(need, total):.2f} of {total / GIB:.0f} GiB)"


async def ask_folder(parent: QWidget, start: Path) -> Path | None:
    """Ask for a folder, starting at ``start``; None when the user cancels."""
    dialog = QFileDialog(parent, "Choose the folder that holds your models", str(start))
    dialog.setFileMode(QFileDialog.FileMode.Directory)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    return await _answer(dialog)


async def ask_compose_file(parent: QWidget, start: Path) -> Path | None:
    """Ask for a compose file, starting at ``start``; None when the user cancels."""
    dialog = QFileDialog(parent, "Import a compose file", str(start))
    dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    dialog.setNameFilters(["Compose files (*.yml *.yaml)", "All files (*)"])
    return await _answer(dialog)


async def _answer(dialog: QFileDialog) -> Path | None:
    answer: asyncio.Future[Path | None] = asyncio.get_running_loop().create_future()

    def done(result: int) -> None:
        files = dialog.selectedFiles()
        if not answer.done():
            accepted = result == QFileDialog.DialogCode.Accepted.value and files
            answer.set_result(Path(files[0]) if accepted else None)

    dialog.finished.connect(done)
    dialog.open()
    try:
        return await answer
    finally:
        dialog.deleteLater()
