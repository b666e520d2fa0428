"""Pieces of "is it ready yet?" that the supervisor's start loop is built from.

A starting vLLM does not listen until its engine is built, so the start loop probes it often
(a refused connection costs next to nothing) and wakes at once when the log says the server is
up or the container dies. Before a model counts as ready it answers one tiny completion, since
``/health`` is 200 before any forward pass ran. Starts on one GPU take turns between container
start and ready, so two vLLMs never size their KV cache against each other (vllm#55827).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

from ryx_desktop.core.errors import ContainerExitedError
from ryx_desktop.core.ports import Clock

#: Log lines that say the HTTP server is (about to be) listening: vLLM 0.3x prints both; older
#: versions printed uvicorn's own line.
STARTUP_LINES = ("Application startup complete", "Starting vLLM server on", "Uvicorn running on")


def parse_startup_complete(line: str) -> bool:
    """True when a log line says the server is up (or is binding its port right now).

    >>> parse_startup_complete("(APIServer pid=1) INFO:     Application startup complete.")
    True
    """
    return any(marker in line for marker in STARTUP_LINES)


_SKIP_CHECK = (
    "set `first_answer_check: false` to skip this check (the model will then fail on its first "
    "real request instead)."
)


class FirstAnswerError(ContainerExitedError):
    """The model's server said it was healthy but could not answer a 1-token request."""

    hint = f"The model's log shows the engine's error; {_SKIP_CHECK}"


def first_answer_hint(key: str) -> str:
    """``FirstAnswerError``'s hint for model ``key``."""
    return f"`ryx-desktop logs {key}` shows the engine's error; {_SKIP_CHECK}"


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` or until ``wake`` is set; True when woken."""
    if wake.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    return wake.is_set()


class GpuStartGate:
    """One start at a time per GPU, held from container start until ready (or failure)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._holders: dict[tuple[str, int], str] = {}

    def holder(self, gpu: int, host: str = "local") -> str | None:
        """The key of the model whose start holds ``gpu`` (of ``host``) now."""
        return self._holders.get((host, gpu))

    @contextlib.asynccontextmanager
    async def hold(
        self,
        key: str,
        gpus: Iterable[int],
        on_wait: Callable[[str], None] | None = None,
        *,
        host: str = "local",
    ) -> AsyncIterator[None]:
        """Take every GPU of ``gpus`` (on ``host``) in index order (so two starts cannot
        deadlock). GPUs of different hosts are different GPUs.

        ``on_wait`` hears a short sentence each time the start has to wait for another one.
        No GPUs (``devices: none``): nothing to take.
        """
        taken: list[tuple[str, int]] = []
        where = "" if host == "local" else f" of host {host}"
        try:
            for gpu in sorted(gpus):
                lock = self._locks.setdefault((host, gpu), asyncio.Lock())
                if lock.locked() and on_wait is not None:
                    holder = self._holders.get((host, gpu), "another model")
                    on_wait(f"waiting for GPU {gpu}{where}: {holder} is starting on it")
                await lock.acquire()
                taken.append((host, gpu))
                self._holders[(host, gpu)] = key
            yield
        finally:
            for slot in reversed(taken):
                self._holders.pop(slot, None)
                self._locks[slot].release()
