"""The proxy's shared deadline: one timer cuts waits on silent upstreams, and only those."""

from __future__ import annotations

import asyncio

import pytest

from ryx_desktop.proxy._forward import _Deadlines


async def _wait_on_upstream(
    deadlines: _Deadlines, release: asyncio.Event, waiting: asyncio.Event | None = None
) -> BaseException | None:
    task = deadlines.begin()
    if waiting is not None:
        waiting.set()
    try:
        await release.wait()
    except BaseException as exc:
        return deadlines.end(task, exc)
    deadlines.end(task)
    return None


@pytest.mark.asyncio
async def test_a_silent_wait_is_cut_as_a_timeout_and_others_go_on() -> None:
    deadlines = _Deadlines(0.2)
    silent = asyncio.create_task(_wait_on_upstream(deadlines, asyncio.Event()))
    answered = asyncio.Event()
    quick = asyncio.create_task(_wait_on_upstream(deadlines, answered))
    answered.set()
    assert await quick is None
    cause = await silent
    assert isinstance(cause, TimeoutError)
    assert silent.cancelling() == 0  # the cut's own cancellation was taken back


@pytest.mark.asyncio
async def test_a_cancellation_that_is_not_the_deadline_propagates() -> None:
    deadlines = _Deadlines(30.0)
    waiting = asyncio.Event()
    task = asyncio.create_task(_wait_on_upstream(deadlines, asyncio.Event(), waiting))
    await waiting.wait()
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
