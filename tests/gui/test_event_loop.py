"""The app's loop: asyncio on Qt's event loop, ready callbacks run in batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from ryx_desktop.ui.event_loop import QtAsyncioLoop, use_qt_event_dispatcher

_T = TypeVar("_T")


def run(qapp: QApplication, scenario: Coroutine[Any, Any, _T]) -> _T:
    loop = QtAsyncioLoop(qapp)
    with loop:
        result: _T = loop.run_until_complete(scenario)
    return result


def test_callbacks_run_in_order_and_cancelled_ones_do_not(qapp: QApplication) -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        done = asyncio.Event()
        for n in range(5):
            handle = loop.call_soon(seen.append, n)
            if n == 2:
                handle.cancel()
        loop.call_soon(done.set)
        await done.wait()
        return seen

    assert run(qapp, scenario()) == [0, 1, 3, 4]


def test_qt_events_run_between_batches(qapp: QApplication) -> None:
    # A callback that keeps rescheduling itself must not starve Qt: a zero timer still fires.
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        spins = 0
        fired = asyncio.Event()

        def spin() -> None:
            nonlocal spins
            spins += 1
            if not fired.is_set():
                loop.call_soon(spin)

        QTimer.singleShot(0, fired.set)
        loop.call_soon(spin)
        await fired.wait()
        return spins

    assert run(qapp, scenario()) < 10_000


def test_tasks_executors_and_threads_work_as_on_asyncio(qapp: QApplication) -> None:
    async def scenario() -> tuple[list[int], str, int]:
        loop = asyncio.get_running_loop()

        async def square(n: int) -> int:
            await asyncio.sleep(0)
            return n * n

        squares = await asyncio.gather(*(square(n) for n in range(50)))
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        from_thread: asyncio.Future[int] = loop.create_future()
        threading.Thread(
            target=lambda: loop.call_soon_threadsafe(from_thread.set_result, 42)
        ).start()
        return squares, name, await from_thread

    squares, name, answer = run(qapp, scenario())
    assert squares == [n * n for n in range(50)]
    assert name != threading.current_thread().name
    assert answer == 42


def test_qt_runs_its_own_event_dispatcher_not_glibs(qapp: QApplication) -> None:
    # ryx-desktop asks for it before creating its QApplication (use_qt_event_dispatcher);
    # the GUI tests' QApplication is created the same way (tests/gui/conftest.py).
    dispatcher = qapp.eventDispatcher()
    assert dispatcher is not None
    assert "Glib" not in dispatcher.metaObject().className()


def test_the_dispatcher_choice_leaves_a_users_own_setting_alone() -> None:
    environ: dict[str, str] = {}
    use_qt_event_dispatcher(environ)
    assert environ == {"QT_NO_GLIB": "1"}
    chosen = {"QT_NO_GLIB": "yes"}
    use_qt_event_dispatcher(chosen)
    assert chosen == {"QT_NO_GLIB": "yes"}
