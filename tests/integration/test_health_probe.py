"""``HttpHealthProbe`` against a real container of the fake vLLM image."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.core.ports import ProbeResult

GENERAL = "/models/medium/general/qwen2.5-7b-gptq"


@pytest.mark.asyncio
async def test_probe_turns_healthy_and_reads_metrics(run_fake_vllm: Callable[..., Any]) -> None:
    fake = run_fake_vllm(
        GENERAL, "--served-model-name", "qwen", env={"FAKE_VLLM_LOAD_SECONDS": "1.5"}
    )
    probe = HttpHealthProbe()
    try:
        # While the fake loads nothing listens in the container: unreachable, never an exception.
        first = await probe.probe(fake.url)
        assert not first.reachable
        assert not first.healthy
        assert first.error
        assert await probe.metrics(fake.url) is None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        result: ProbeResult = first
        while not result.serves("qwen"):
            if loop.time() > deadline:
                pytest.fail(f"the fake never turned healthy; last probe: {result}\n{fake.logs()}")
            await asyncio.sleep(0.05)
            result = await probe.probe(fake.url)
        assert result.reachable
        assert result.healthy
        assert result.served_names == ("qwen",)
        assert result.error == ""

        metrics = await probe.metrics(fake.url)
        assert metrics is not None
        assert metrics.requests_running == 0.0
        assert metrics.requests_waiting == 0.0
        assert metrics.kv_cache_usage == 0.0
    finally:
        await probe.close()


@pytest.mark.asyncio
async def test_probe_of_a_stopped_server_is_unreachable(
    run_fake_vllm: Callable[..., Any],
) -> None:
    fake = run_fake_vllm(GENERAL).wait_healthy()
    probe = HttpHealthProbe()
    try:
        assert (await probe.probe(fake.url)).serves(GENERAL)
        fake.container.stop(timeout=5)
        result = await probe.probe(fake.url)
        assert not result.reachable
        assert not result.healthy
        assert result.error
        assert await probe.metrics(fake.url) is None
    finally:
        await probe.close()
