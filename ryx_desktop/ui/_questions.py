"""Yes/no questions that are awaited, never run as a nested Qt event loop.

``QMessageBox.question()`` runs its own event loop; inside an asyncio task on the Qt loop that
lets qasync run other tasks (and the asking task's own timer) re-entrantly. ``open()`` plus a
future waits for the answer on the one loop instead.
"""

from __future__ import annotations

import asyncio

from PySide6.QtWidgets import QMessageBox, QWidget

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
