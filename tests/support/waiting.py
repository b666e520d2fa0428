"""Waiting on the loop for something another process or task does, with a deadline.

For conditions with no event to await (a container's state, a subprocess's counter, the
supervisor's monitor rounds): poll briefly while the loop keeps running, fail with ``what``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Return the seconds it took until ``predicate()`` held; fail after ``timeout``."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - began


async def wait_for_async(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Like :func:`wait_for` for an async predicate (one that does I/O itself)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
