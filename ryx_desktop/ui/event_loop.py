"""The app's asyncio loop on Qt's: qasync's, with ready callbacks run in batches.

qasync gives every ``call_soon`` a Qt timer of its own (start it, receive its event, kill it),
and everything asyncio does goes through ``call_soon``: each task step, each future's callback,
each socket that became readable. At proxy rates that per-callback cost dominates. Here ready
callbacks wait in a queue and one Qt timer event runs all of them that were queued before it
started, as asyncio's own loop does per iteration; callbacks they schedule run in the next
batch, after Qt has processed its events (painting, input, sockets) in between.

Qt on Linux dispatches its events through GLib's main loop unless told otherwise; its
per-wakeup cost shows when the proxy's sockets wake the loop thousands of times a second, so
the app asks for Qt's own dispatcher (``use_qt_event_dispatcher``) before it creates the
QApplication. bench/stall.py measured both: see bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

import qasync


class QtAsyncioLoop(qasync.QEventLoop):  # type: ignore[misc]
    """``qasync.QEventLoop`` with batched ``call_soon``; everything else is qasync's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: deque[asyncio.Handle] = deque()
        self._batch_due = False

    def call_soon(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context=context)
        self._batch.append(handle)
        if not self._batch_due:
            self._batch_due = True
            super().call_soon(self._run_batch)
        return handle

    def _run_batch(self) -> None:
        self._batch_due = False
        batch = self._batch
        for _ in range(len(batch)):  # only what was queued before this batch began
            handle = batch.popleft()
            if not handle._cancelled:
                handle._run()
        if batch and not self._batch_due:
            self._batch_due = True
            super().call_soon(self._run_batch)


def use_qt_event_dispatcher(environ: MutableMapping[str, str]) -> None:
    """Ask Qt for its own event dispatcher rather than GLib's (unless the user chose).

    Qt reads ``QT_NO_GLIB`` from the process environment when the application is created, so
    this must run first and ``environ`` is normally ``os.environ``.
    """
    environ.setdefault("QT_NO_GLIB", "1")
