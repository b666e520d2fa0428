"""A large request body does not freeze the event loop (the GUI's loop, in the desktop app).

Parsing 22.7 MiB of JSON with ``json.loads`` takes ~300 ms, and dumping it again as long: on
the loop, every other request and the GUI would wait that long. The proxy parses large bodies
in a worker thread and rewrites ``model`` in place, so the loop keeps running. The test runs
the proxy on its own loop with a probe that measures how late a timer due every 2 ms runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.proxy.helpers import client_for, external, make_config
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.asyncio

#: What parsing the body on the loop must take here for the test to tell anything: the stall
#: the proxy would cause if it parsed on the loop (and more when it dumps again for a rewrite).
MEANINGFUL = 0.12
#: The loop's worst lateness allowed while the proxy handles the body (the issue's bound).
MAX_STALL = 0.05


class LoopProbe:
    """A timer due every ``step`` seconds; ``worst`` is the most any one of them ran late."""

    def __init__(self, step: float = 0.002) -> None:
        self._step = step
        self._loop = asyncio.get_running_loop()
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.worst = 0.0
        self.ticks = 0

    def start(self) -> None:
        self._due = self._loop.time() + self._step
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.worst = max(self.worst, now - self._due)
        self.ticks += 1
        self._due = now + self._step
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def big_chat(count: int, model: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"message number {i}"} for i in range(count)]
    return {"messages": messages, "model": model, "max_tokens": 3}


def sized_body(model: str) -> bytes:
    """A chat body that takes at least MEANINGFUL seconds to parse here (at most 48 MiB)."""
    count = 200_000
    while True:
        raw = json.dumps(big_chat(count, model)).encode()
        began = time.perf_counter()
        json.loads(raw)
        if time.perf_counter() - began >= MEANINGFUL or len(raw) > 24 << 20:
            return raw
        count *= 2


@pytest.mark.parametrize("model", ["a1", "alpha-served"], ids=["rewritten", "kept"])
async def test_a_large_body_does_not_stall_the_loop(alpha: FakeUpstream, model: str) -> None:
    raw = sized_body(model)
    config = make_config({"alpha": external(alpha, alpha.served_name, "a1")}, max_body_mb=64)
    async with running_proxy(config) as proxy, client_for(proxy, timeout=60.0) as client:
        probe = LoopProbe()
        probe.start()
        try:
            response = await client.post(
                "/v1/chat/completions",
                content=raw,
                headers={"Content-Type": "application/json"},
            )
        finally:
            probe.stop()
    assert response.status_code == 200, response.text
    assert response.json()["model"] == alpha.served_name  # the fake checks the name it serves
    assert probe.ticks > 10
    assert probe.worst < MAX_STALL, f"the loop stalled {probe.worst * 1000:.0f} ms"
    forwarded = [r for r in alpha.requests() if r["method"] == "POST"]
    assert len(forwarded) == 1
    sent = json.loads(raw)
    sent["model"] = alpha.served_name
    assert forwarded[0]["json"] == sent
