"""Python's cyclic garbage collector, run on the Qt thread only.

Qt objects caught in reference cycles must be deleted on the thread that owns them. Left to
itself the collector runs on whichever thread happens to allocate when a threshold is crossed,
Docker's and NVML's executor threads and qasync's workers included, and PySide then crashes
deleting widgets there. As qutebrowser does, automatic collection is switched off and a timer
on the Qt thread collects each generation once its threshold is crossed. Once the app has
started, what startup built is frozen (``gc.freeze``), so full collections stay short.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class MainThreadGarbageCollector(QObject):
    """Switches automatic collection off and collects from a timer on the Qt thread."""

    def __init__(self, interval_ms: int = 1000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self.collections = 0

    def start(self) -> None:
        gc.disable()
        self._timer.start()

    def freeze(self) -> None:
        """Move everything alive now (what startup built) out of the collector's sight.

        Full collections then walk only what came after, so they stay short enough not to
        stall the loop; nothing frozen is ever freed, which is what long-lived app objects are.
        """
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        """Back to Python's own collection (and a last full collection, here)."""
        self._timer.stop()
        gc.collect()
        gc.enable()

    def collect_due(self) -> int:
        """Collect the generations whose thresholds are crossed; the objects found unreachable."""
        counts = gc.get_count()
        thresholds = gc.get_threshold()
        found = 0
        generation = -1
        for gen in range(3):
            if counts[gen] <= thresholds[gen]:
                break
            generation = gen
        if generation >= 0:
            found = gc.collect(generation)
            self.collections += 1
        return found
