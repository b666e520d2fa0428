"""The proxy shares the GUI's event loop: it must serve streams without starving Qt's timers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from ryx_desktop.config import Config
from ryx_desktop.ui.event_loop import QtAsyncioLoop
from tests.support.proxy import running_proxy
from tests.support.upstream import start_fake_upstream

TOKENS = 25
TOKEN_DELAY = 0.06  # the fake's pause between tokens: its short reply streams for ~0.4 s
TICK_MS = 10


def test_streams_on_the_qt_loop_while_a_timer_keeps_firing(
    qapp: QApplication, tmp_path: Path
) -> None:
    upstream = start_fake_upstream(tmp_path, env={"FAKE_VLLM_TOKEN_DELAY": str(TOKEN_DELAY)})
    config = Config.model_validate(
        {
            "default_model": "remote",
            "models": {"remote": {"url": upstream.url, "served_name": upstream.served_name}},
        }
    )
    ticks: list[float] = []
    loop = QtAsyncioLoop(qapp)
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(loop.time()))

    async def scenario() -> tuple[list[tuple[int, str]], int]:
        assert asyncio.get_running_loop() is loop  # the proxy really runs on Qt's loop
        events: list[tuple[int, str]] = []  # (ticks seen so far, SSE line)
        async with running_proxy(config) as proxy, httpx.AsyncClient(timeout=10) as client:
            timer.start()
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
            body["max_tokens"] = TOKENS
            async with client.stream(
                "POST", f"{proxy.base}/v1/chat/completions", json=body
            ) as response:
                assert response.status_code == 200
                assert response.headers["x-ryx-model"] == "remote"
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append((len(ticks), line))
            timer.stop()
        return events, len(ticks)

    try:
        with loop:
            events, total_ticks = loop.run_until_complete(scenario())
    finally:
        upstream.stop()

    data = [line for _, line in events]
    assert data[-1] == "data: [DONE]"
    assert len(data) >= 5  # the role chunk, several tokens, [DONE]: relayed one by one
    first, last = events[0][0], events[-1][0]
    # A few hundred ms of streaming at one tick per 10 ms: the timer kept firing between chunks.
    assert last - first >= 10, f"only {last - first} timer ticks while streaming"
    assert total_ticks >= last
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.25, f"the Qt loop stalled for {max(gaps):.3f} s"
