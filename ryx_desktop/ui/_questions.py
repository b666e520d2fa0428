"""Questions that are awaited (yes/no, a folder), never run as a nested Qt event loop.

``QMessageBox.question()`` (and ``QFileDialog.getExistingDirectory()``) runs its own event
loop; inside an asyncio task on the Qt loop that lets qasync run other tasks (and the asking
task's own timer) re-entrantly. ``open()`` plus a future waits for the answer on the one loop
instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

_YES = QMessageBox.StandardButton.Yes
_NO = QMessageBox.StandardButton.No


async def ask_yes_no(parent: QWidget, title: str, text: str, *, default_yes: bool) -> bool:
    """Ask ``text`` in a window-modal box over ``parent``; True when the user chose Yes."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, _YES | _NO, parent)
    box.setDefaultButton(_YES if default_yes else _NO)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def done(_result: int) -> None:
        if not answer.done():
            answer.set_result(box.clickedButton() is box.button(_YES))

    box.finished.connect(done)
    box.open()
    try:
        return await answer
    finally:
        box.deleteLater()


async def ask_folder(parent: QWidget, title: str, start: Path) -> Path | None:
    """Ask for a folder in a window-modal file dialog over ``parent``, starting at ``start``;
    the chosen folder, or None when cancelled."""
    dialog = QFileDialog(parent, title, str(start))
    dialog.setFileMode(QFileDialog.FileMode.Directory)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    chosen: asyncio.Future[Path | None] = asyncio.get_running_loop().create_future()

    def done(result: int) -> None:
        files = dialog.selectedFiles()
        if not chosen.done():
            accepted = result == QFileDialog.DialogCode.Accepted and files
            chosen.set_result(Path(files[0]) if accepted else None)

    dialog.finished.connect(done)
    dialog.open()
    try:
        return await chosen
    finally:
        dialog.deleteLater()
