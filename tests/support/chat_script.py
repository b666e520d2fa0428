"""A scripted ``CompletionClient`` for the chat's tests, and the clock it moves.

Each call of ``stream`` plays the next script: its ``ChatProgress``, ``ChatDelta`` and
``CompletionUsage`` items are yielded, a ``Tick`` moves the clock, a ``Pause`` says it was
reached and waits to be released, a ``ChatRequestError`` is raised. ``ended`` records how each
call ended: complete, cancelled, or closed by its consumer.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ryx_desktop.core.chat import ChatDelta, ChatProgress, ChatRequestError, CompletionUsage


class FakeClock:
    """The chat service's clock: moves only when a script says so."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Tick:
    """Move the clock this many seconds."""

    seconds: float


@dataclass
class Pause:
    """Say so (``reached``) and wait until the test lets it go on (``release``)."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


Step = ChatProgress | ChatDelta | CompletionUsage | Tick | Pause | ChatRequestError


class ScriptedClient:
    """A ``CompletionClient`` that plays one script per call and records each call's end."""

    def __init__(self, clock: FakeClock, *scripts: builtins.list[Step]) -> None:
        self._clock = clock
        self.scripts: builtins.list[builtins.list[Step]] = [list(s) for s in scripts]
        self.calls: builtins.list[tuple[str, builtins.list[dict[str, str]]]] = []
        self.ended: builtins.list[str] = []

    def play(self, *steps: Step) -> None:
        """Queue the script of the next answer."""
        self.scripts.append(list(steps))

    async def stream(
        self, model: str, messages: builtins.list[dict[str, str]]
    ) -> AsyncIterator[ChatProgress | ChatDelta | CompletionUsage]:
        self.calls.append((model, [dict(m) for m in messages]))
        script = self.scripts.pop(0)
        try:
            for step in script:
                if isinstance(step, Tick):
                    self._clock.now += step.seconds
                elif isinstance(step, Pause):
                    step.reached.set()
                    await step.release.wait()
                elif isinstance(step, ChatRequestError):
                    raise step
                else:
                    yield step
            self.ended.append("complete")
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        except GeneratorExit:
            self.ended.append("closed")
            raise
