"""Helpers for the GUI's sleep-mode tests: a recording ``SleepControl`` and a model set.

``RecordingSleep`` stands in for vLLM's sleep routes (``ryx_desktop.core.ports.SleepControl``):
it records every call, can hold a sleep or a wake until the test lets it finish (to see the
states in between), and can be told to fail a step the way the real adapter does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ryx_desktop.core.errors import RyxError
from tests.gui.fixtures_engine import managed

#: s: runs with sleep mode; p: plain (no sleep mode, no GPU: it never takes turns with s).
SLEEP_MODELS: dict[str, Any] = {
    "s": managed(8011, name="Sleepy 7B", sleep_mode=True, gpu_memory_utilization=0.4),
    "p": managed(8012, name="Plain 3B", devices="none"),
}


class RecordingSleep:
    """A ``SleepControl`` in memory: ``calls`` holds (verb, base URL, level) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []
        #: verb ("sleep" or "wake") -> the error its next calls raise.
        self.errors: dict[str, RyxError] = {}
        #: verb -> an event its calls wait for before they finish.
        self.gates: dict[str, asyncio.Event] = {}
        self.asleep: dict[str, int] = {}  # base URL -> level
        self.closed = False

    def hold(self, verb: str) -> asyncio.Event:
        """Make calls of ``verb`` wait until the returned event is set."""
        gate = self.gates[verb] = asyncio.Event()
        return gate

    def verbs(self) -> list[tuple[str, int | None]]:
        return [(verb, level) for verb, _url, level in self.calls]

    async def _step(self, verb: str, base_url: str, level: int | None) -> None:
        self.calls.append((verb, base_url, level))
        gate = self.gates.get(verb)
        if gate is not None:
            await gate.wait()
        error = self.errors.get(verb)
        if error is not None:
            raise error

    async def sleep(self, base_url: str, level: int, api_key: str | None = None) -> None:
        await self._step("sleep", base_url, level)
        self.asleep[base_url] = level

    async def wake(self, base_url: str, level: int, api_key: str | None = None) -> None:
        await self._step("wake", base_url, level)
        self.asleep.pop(base_url, None)

    async def is_sleeping(self, base_url: str, api_key: str | None = None) -> bool | None:
        self.calls.append(("is_sleeping", base_url, None))
        return base_url in self.asleep

    async def close(self) -> None:
        self.closed = True
