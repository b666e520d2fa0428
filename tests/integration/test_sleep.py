"""Sleep mode on real containers of the fake vLLM, which serves vLLM 0.32's dev-mode sleep routes.

The supervisor sleeps and wakes models through the real HTTP adapter; the fake records every
request it gets (``/fake/requests``), so the tests see what vLLM would have been sent and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.adapters.host import LocalHostFacts
from ryx_desktop.adapters.vllm_sleep import HttpSleepControl
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import SleepNotSupportedError
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from tests.integration.runtimes import GpuFakingRuntime, OffsetClock
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio

SMALL = "/models/small/general/qwen2.5-3b"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


Make = Callable[..., Supervisor]


@pytest_asyncio.fixture
async def supervisor() -> AsyncIterator[Make]:
    made: list[tuple[Supervisor, GpuFakingRuntime, HttpHealthProbe, HttpSleepControl]] = []

    def make(config: Config, **kw: Any) -> Supervisor:
        runtime = GpuFakingRuntime(config.docker.host)
        health = HttpHealthProbe()
        sleep = HttpSleepControl()
        kw.setdefault("clock", MonotonicClock())
        clock = kw.pop("clock")
        kw.setdefault("host_facts", LocalHostFacts())
        sup = Supervisor(
            config, runtime, health, clock, probe_interval=0.1, sleep_control=sleep, **kw
        )
        made.append((sup, runtime, health, sleep))
        return sup

    yield make
    for sup, runtime, health, sleep in made:
        await sup.close()
        await health.close()
        await sleep.close()
        await runtime.close()


def sleeper(**extra: Any) -> dict[str, Any]:
    return {"model": SMALL, "sleep_mode": True, **extra}


async def recorded(url: str) -> list[str]:
    """The paths (with their query) the fake was asked for, oldest first; not its probes."""
    async with httpx.AsyncClient(timeout=10) as http:
        found = (await http.get(f"{url}/fake/requests")).json()
    skip = ("/health", "/metrics", "/v1/models")
    return [r["path"] for r in found if not str(r["path"]).startswith(skip)]


async def test_sleep_then_a_request_wakes_it_with_one_shared_wake(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    sup = supervisor(make_config({"s": sleeper()}))
    await sup.open()
    ready = await sup.ensure_ready("s")
    url = ready.url or ""

    asleep = await sup.sleep("s", 1)
    assert asleep.state is InstanceState.SLEEPING
    assert asleep.sleep_level == 1
    assert "asleep at level 1" in asleep.note
    async with httpx.AsyncClient(timeout=10) as http:
        sleeping = (await http.get(f"{url}/is_sleeping")).json()
    assert sleeping == {"is_sleeping": True}

    # Five requests at once: one wake, and all of them get the model ready.
    woken = await asyncio.gather(*(sup.ensure_ready("s") for _ in range(5)))
    assert {w.state for w in woken} == {InstanceState.READY}
    assert woken[0].sleep_level is None
    assert "woken from level 1" in woken[0].note
    calls = await recorded(url)
    assert calls.count("/wake_up") == 1, calls
    assert calls.index("/sleep?level=1") < calls.index("/wake_up")
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": SMALL})
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"].startswith("fake reply")


async def test_level_2_wakes_in_three_steps_and_answers_sensibly(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    sup = supervisor(make_config({"s": sleeper()}))
    await sup.open()
    url = (await sup.ensure_ready("s")).url or ""
    await sup.sleep("s", 2)
    await sup.wake("s")
    calls = await recorded(url)
    at = calls.index("/sleep?level=2")
    assert calls[at + 1 : at + 4] == [
        "/wake_up?tags=weights",
        "/collective_rpc",
        "/wake_up?tags=kv_cache",
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": SMALL})
    # Without reload_weights the fake answers "!" tokens after a level-2 wake, as vLLM would.
    assert answer.json()["choices"][0]["message"]["content"].startswith("fake reply")


async def test_a_busy_model_sleeps_only_after_its_requests_finish(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config({"s": sleeper(env={"FAKE_VLLM_TOKEN_DELAY": "0.05"})})
    sup = supervisor(config)
    await sup.open()
    url = (await sup.ensure_ready("s")).url or ""

    async def long_request() -> str:
        async with sup.track_request("s"), httpx.AsyncClient(timeout=30) as http:
            body = {"model": SMALL, "prompt": "tell me", "max_tokens": 20}
            answer = await http.post(f"{url}/v1/completions", json=body)
            return str(answer.json()["choices"][0]["text"])

    request = asyncio.create_task(long_request())
    await wait_for(lambda: sup.get("s").in_flight == 1, "the request in flight")
    sleeping = asyncio.create_task(sup.sleep("s", 1))
    # Marked sleeping at once (new requests wait for a wake), but vLLM is not asked yet.
    await wait_for(lambda: sup.get("s").state is InstanceState.SLEEPING, "sleeping")
    assert "going to sleep" in sup.get("s").note
    assert "/sleep?level=1" not in await recorded(url)
    assert await request == f"fake reply from {SMALL} to: tell me"  # it ran to its end
    await sleeping
    calls = await recorded(url)
    assert calls.index("/v1/completions") < calls.index("/sleep?level=1")


async def test_idle_ttl_sleeps_and_sleep_ttl_stops(
    make_config: Callable[..., Config], supervisor: Make, models_dir: Path
) -> None:
    # Weights of a known size that fit in this machine's RAM: the idle sleep is level 1.
    (models_dir / "small/general/qwen2.5-3b/model.safetensors").write_bytes(b"w" * 4096)
    clock = OffsetClock()
    sup = supervisor(make_config({"s": sleeper()}, idle_ttl=600, sleep_ttl=3600), clock=clock)
    await sup.open()
    await sup.ensure_ready("s")
    clock.offset += 601
    await wait_for(lambda: sup.get("s").sleep_level == 1, "idle sleep", 20)
    assert "idle for 600 s" in sup.get("s").note
    assert sup.get("s").host_ram_bytes == 4096  # its weights wait in host RAM
    clock.offset += 3601
    await wait_for(lambda: sup.get("s").state is InstanceState.STOPPED, "sleep_ttl stop", 20)
    assert sup.get("s").note == "stopped after 3600 s asleep"


async def test_a_vllm_without_sleep_routes_keeps_running_and_idle_ttl_stops_it(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    clock = OffsetClock()
    # sleep_mode on, but the server runs without dev mode: its sleep routes are 404.
    config = make_config({"s": sleeper(env={"VLLM_SERVER_DEV_MODE": "0"})}, idle_ttl=600)
    sup = supervisor(config, clock=clock)
    await sup.open()
    await sup.ensure_ready("s")
    with pytest.raises(SleepNotSupportedError):
        await sup.sleep("s", 1)
    inst = sup.get("s")
    assert inst.state is InstanceState.READY
    assert inst.note.startswith("vLLM refused sleep mode")
    assert not sup.sleep_mode_of("s")  # remembered: plain stop and start from now on
    clock.offset += 601
    await wait_for(lambda: sup.get("s").state is InstanceState.STOPPED, "idle stop", 20)
    assert sup.get("s").note == "stopped after 600 s idle"


async def test_a_wake_slower_than_wake_timeout_restarts_the_model(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config({"s": sleeper(env={"FAKE_VLLM_WAKE_SECONDS": "5"}, wake_timeout=0.5)})
    sup = supervisor(config)
    await sup.open()
    first = await sup.ensure_ready("s")
    await sup.sleep("s", 1)
    again = await sup.ensure_ready("s")
    assert again.state is InstanceState.READY
    assert again.container_id != first.container_id  # a fresh container
    assert "the wake failed (no answer within wake_timeout (0.5 s))" in again.note


async def test_a_second_process_sees_the_model_asleep_and_wakes_it(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config({"s": sleeper()})
    first = supervisor(config)
    await first.open()
    await first.ensure_ready("s")
    await first.sleep("s", 2)
    await first.close()

    # Another process (the CLI, or the app restarted) finds it asleep, at its level.
    other = supervisor(config)
    await other.open(watch=False)
    inst = other.get("s")
    assert inst.state is InstanceState.SLEEPING
    assert inst.sleep_level == 2
    woken = await other.wake("s")
    assert woken.state is InstanceState.READY
    assert "woken from level 2" in woken.note


async def test_a_stream_through_the_proxy_wakes_the_model_and_says_so(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    config = make_config(
        {"s": sleeper(env={"FAKE_VLLM_WAKE_SECONDS": "0.5"})},
        proxy={"loading_messages": "reasoning"},
    )
    sup = supervisor(config)
    server = ProxyServer(config, sup, port=0, loading_interval=0.1)
    await sup.open()
    await server.start()
    try:
        await sup.ensure_ready("s")
        await sup.sleep("s", 1)
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="s", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
    finally:
        await server.close()
    thoughts = [
        str((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "")
        for c in chunks
        if c.choices
    ]
    assert any(t.startswith("waking s") for t in thoughts), thoughts
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"fake reply from {SMALL} to: hi"
    assert sup.get("s").state is InstanceState.READY


async def test_exclusive_swaps_put_the_other_model_to_sleep_instead_of_stopping_it(
    make_config: Callable[..., Config], supervisor: Make
) -> None:
    models = {
        "a": sleeper(devices=[0], served_name="a"),
        "b": sleeper(devices=[0], served_name="b"),
        "plain": {"model": SMALL, "devices": [0], "served_name": "plain"},
    }
    sup = supervisor(make_config(models, gpu={"policy": "exclusive"}))
    await sup.open()
    a = await sup.ensure_ready("a")

    await sup.ensure_ready("b")
    slept = sup.get("a")
    assert slept.state is InstanceState.SLEEPING
    assert slept.container_id == a.container_id  # still there, asleep
    assert slept.sleep_level == 2  # its weights are unknown (no weight files): the safe level
    assert "to make room for b" in slept.note

    back = await sup.ensure_ready("a")  # a wake, not a cold start
    assert back.container_id == a.container_id
    assert "woken from level 2" in back.note
    assert sup.get("b").state is InstanceState.SLEEPING

    # A model without sleep mode in the way is stopped, as before.
    await sup.ensure_ready("plain")
    assert sup.get("a").state is InstanceState.SLEEPING
    await sup.ensure_ready("a")
    assert sup.get("plain").state is InstanceState.STOPPED
    assert sup.get("plain").note == "stopped to make room for a"
