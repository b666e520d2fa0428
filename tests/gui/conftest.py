"""Qt tests run on the offscreen platform: no display is needed, and none is opened."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_NO_GLIB", "1")  # Qt's own event dispatcher, as ryx-desktop uses

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.qt)


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_qt_thread() -> Iterator[None]:
    """As in the app: no automatic collection, which could run on a worker thread.

    PySide crashes when a widget caught in a reference cycle is collected on an executor's or
    qasync's thread; the test's garbage is collected here, on the Qt thread, after it.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.enable()
