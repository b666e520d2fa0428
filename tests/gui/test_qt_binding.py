"""The Qt binding the app runs on: guards against known-broken PySide6 releases."""

from __future__ import annotations

import sys

from PySide6.QtCore import QCoreApplication, QObject, QTimerEvent, Signal


class _Emitter(QObject):
    changed = Signal(object)


def test_emitting_a_signal_does_not_leak_a_reference_to_true() -> None:
    # PySide6 6.12.0 drops one reference to True per emit; on Python 3.11 the count reaches
    # zero in a long-running app and the interpreter aborts (bool_dealloc). pyproject excludes it.
    emitter = _Emitter()
    received: list[object] = []
    emitter.changed.connect(received.append)
    before = sys.getrefcount(True)
    for n in range(200):
        emitter.changed.emit(n)
    assert len(received) == 200
    assert sys.getrefcount(True) - before > -50


class _TimerCounter(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.events = 0

    def timerEvent(self, event: QTimerEvent) -> None:
        self.events += 1


def test_a_python_event_override_does_not_leak_a_reference_to_none(qapp: QCoreApplication) -> None:
    # 6.12.0 also drops a reference to None each time Qt calls a Python override that returns
    # nothing; qasync runs every asyncio callback through timerEvent, so the loop would abort.
    counter = _TimerCounter()
    before = sys.getrefcount(None)
    for _ in range(200):
        QCoreApplication.sendEvent(counter, QTimerEvent(1))
    assert counter.events == 200
    assert sys.getrefcount(None) - before > -50
