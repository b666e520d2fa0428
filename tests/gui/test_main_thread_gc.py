"""The app's garbage collection happens on the Qt thread, never on a worker thread."""

from __future__ import annotations

import gc
import threading
import weakref

from pytestqt.qtbot import QtBot

from ryx_desktop.ui.main_thread_gc import MainThreadGarbageCollector


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cycles_are_collected_by_the_timer_on_the_qt_thread(qtbot: QtBot) -> None:
    collector = MainThreadGarbageCollector(interval_ms=10)
    collector.start()
    try:
        assert not gc.isenabled()
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle
        collected_on: list[str] = []

        def garbage_from_a_worker() -> None:
            # Allocations on a worker thread must not trigger a collection there.
            junk = [_Cycle() for _ in range(5 * gc.get_threshold()[0])]
            del junk
            collected_on.append("worker done")

        worker = threading.Thread(target=garbage_from_a_worker)
        worker.start()
        worker.join()
        assert gone() is not None  # still there: nothing collected automatically
        qtbot.waitUntil(lambda: gone() is None, timeout=5000)
        assert collector.collections >= 1
        assert collected_on == ["worker done"]
    finally:
        collector.stop()
    assert gc.isenabled()


def test_freeze_keeps_what_startup_built_out_of_later_collections() -> None:
    collector = MainThreadGarbageCollector()
    before = gc.get_freeze_count()
    try:
        collector.freeze()
        assert gc.get_freeze_count() > before
        frozen = gc.get_freeze_count()
        gc.collect()
        assert gc.get_freeze_count() == frozen  # a full collection does not look at them
    finally:
        gc.unfreeze()
