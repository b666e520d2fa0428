"""``ryx-desktop serve`` runs on uvloop where it is installed; the other commands do not.

The proxy serves about a third more requests per second on uvloop (``bench/run.py --proxy
all``); ``RYX_EVENT_LOOP=asyncio`` keeps asyncio's own loop. The GUI runs on Qt's loop and is
not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping

import pytest

from ryx_desktop import cli
from ryx_desktop.cli import _commands, _serve

UVLOOP, ASYNCIO = 1, 2


async def loop_kind() -> int:
    """UVLOOP or ASYNCIO: which loop runs this coroutine."""
    module = type(asyncio.get_running_loop()).__module__
    return UVLOOP if module.startswith("uvloop") else ASYNCIO


def test_serve_runs_on_uvloop() -> None:
    assert _serve.run(loop_kind(), {}) == UVLOOP


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO", " asyncio "])
def test_ryx_event_loop_asyncio_keeps_asyncios_loop(value: str) -> None:
    assert _serve.run(loop_kind(), {"RYX_EVENT_LOOP": value}) == ASYNCIO


def test_without_uvloop_serve_runs_on_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert _serve.loop_factory({}) is None
    assert _serve.run(loop_kind(), {}) == ASYNCIO


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["serve"], UVLOOP), (["status"], ASYNCIO), (["config", "check"], ASYNCIO)],
)
def test_only_serve_changes_loops(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: int
) -> None:
    async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        return await loop_kind()

    monkeypatch.setattr(_commands, "run", run)
    monkeypatch.delenv("RYX_EVENT_LOOP", raising=False)
    assert cli.main(argv) == expected
