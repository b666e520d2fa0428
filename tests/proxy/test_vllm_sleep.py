"""The HTTP sleep control against the fake vLLM run as a process: its dev-mode sleep routes.

The fake follows vLLM 0.32: the routes exist only with ``VLLM_SERVER_DEV_MODE=1``, the level is a
query parameter, level 2 throws the weights away (the model answers ``!`` tokens until
``reload_weights``), and ``/fake/requests`` records what came in, in order. Error answers the
fake cannot be made to give (a 500 from ``/wake_up``) come from ``httpx.MockTransport``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ryx_desktop.adapters.vllm_sleep import HttpSleepControl
from ryx_desktop.core.errors import SleepFailedError, SleepNotSupportedError
from tests.proxy.helpers import StallingUpstream
from tests.support.upstream import FakeUpstream, free_port, start_fake_upstream

SERVED = "sleepy-served"
KEY = "sk-sleep-test"
DEV_MODE = {"VLLM_SERVER_DEV_MODE": "1"}
NO_DEV_MODE = {"VLLM_SERVER_DEV_MODE": "0"}
SLEEP_FLAGS = ("--enable-sleep-mode",)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., FakeUpstream]]:
    """Start a fake of the test's own (its sleep state is the test's alone); stopped after."""
    started: list[FakeUpstream] = []

    def run(*, env: dict[str, str], flags: tuple[str, ...] = SLEEP_FLAGS) -> FakeUpstream:
        upstream = start_fake_upstream(tmp_path, served_name=SERVED, flags=flags, env=env)
        started.append(upstream)
        upstream.clear_requests()  # forget the readiness polls
        return upstream

    yield run
    for upstream in started:
        upstream.stop()


@pytest_asyncio.fixture
async def control() -> AsyncIterator[HttpSleepControl]:
    sleep_control = HttpSleepControl()
    yield sleep_control
    await sleep_control.close()


def calls(upstream: FakeUpstream) -> list[tuple[str, str, Any]]:
    """The sleep-route requests the fake received, in order: (method, path with query, json)."""
    routes = ("/sleep", "/wake_up", "/collective_rpc", "/is_sleeping")
    return [
        (r["method"], r["path"], r["json"])
        for r in upstream.requests()
        if r["path"].startswith(routes)
    ]


async def chat(upstream: FakeUpstream, api_key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        response = await client.post(
            f"{upstream.url}/v1/chat/completions",
            json={"model": SERVED, "messages": [{"role": "user", "content": "hello"}]},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.mark.asyncio
async def test_level_1_sleeps_and_one_wake_up_wakes_it(
    start: Callable[..., FakeUpstream], control: HttpSleepControl
) -> None:
    upstream = start(env=DEV_MODE)
    assert await control.is_sleeping(upstream.url) is False

    await control.sleep(upstream.url, 1)
    assert await control.is_sleeping(upstream.url) is True

    await control.wake(upstream.url + "/", 1)  # a trailing slash is fine
    assert await control.is_sleeping(upstream.url) is False
    assert await chat(upstream) == "fake reply from sleepy-served to: hello"

    assert calls(upstream) == [
        ("GET", "/is_sleeping", None),
        ("POST", "/sleep?level=1", None),  # the level in the query, no JSON body
        ("GET", "/is_sleeping", None),
        ("POST", "/wake_up", None),
        ("GET", "/is_sleeping", None),
    ]
    assert all("authorization" not in r["headers"] for r in upstream.requests())


@pytest.mark.asyncio
async def test_level_2_wakes_in_three_steps_and_reloads_the_weights(
    start: Callable[..., FakeUpstream], control: HttpSleepControl
) -> None:
    upstream = start(env=DEV_MODE)
    await control.sleep(upstream.url, 2)
    assert await control.is_sleeping(upstream.url) is True
    upstream.clear_requests()

    await control.wake(upstream.url, 2)

    assert calls(upstream) == [
        ("POST", "/wake_up?tags=weights", None),
        ("POST", "/collective_rpc", {"method": "reload_weights"}),
        ("POST", "/wake_up?tags=kv_cache", None),
    ]
    assert await control.is_sleeping(upstream.url) is False
    # Without reload_weights the fake answers "!" tokens, as vLLM does after level 2.
    assert await chat(upstream) == "fake reply from sleepy-served to: hello"


@pytest.mark.asyncio
async def test_without_dev_mode_there_is_no_sleep_mode(
    start: Callable[..., FakeUpstream], control: HttpSleepControl
) -> None:
    upstream = start(env=NO_DEV_MODE)

    with pytest.raises(SleepNotSupportedError) as raised:
        await control.sleep(upstream.url, 1)
    assert str(raised.value) == (
        f"The vLLM at {upstream.url} does not offer sleep mode: POST /sleep?level=1 answered 404."
    )
    assert raised.value.route == "POST /sleep?level=1"
    for needed in ("sleep_mode: true", "--enable-sleep-mode", "VLLM_SERVER_DEV_MODE=1"):
        assert needed in raised.value.hint

    with pytest.raises(SleepNotSupportedError) as raised_wake:
        await control.wake(upstream.url, 2)
    assert raised_wake.value.route == "POST /wake_up?tags=weights"
    assert await control.is_sleeping(upstream.url) is None
    assert await chat(upstream) == "fake reply from sleepy-served to: hello"  # still serving


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["flag", "env"])
async def test_the_api_key_goes_with_every_sleep_request(
    start: Callable[..., FakeUpstream], control: HttpSleepControl, how: str
) -> None:
    if how == "flag":
        upstream = start(env=DEV_MODE, flags=(*SLEEP_FLAGS, "--api-key", KEY))
    else:
        upstream = start(env={**DEV_MODE, "VLLM_API_KEY": KEY})

    await control.sleep(upstream.url, 2, api_key=KEY)
    assert await control.is_sleeping(upstream.url, api_key=KEY) is True
    await control.wake(upstream.url, 2, api_key=KEY)
    assert await control.is_sleeping(upstream.url, api_key=KEY) is False
    assert await chat(upstream, api_key=KEY) == "fake reply from sleepy-served to: hello"

    sent = [r for r in upstream.requests() if not r["path"].startswith("/v1/")]
    assert [r["path"] for r in sent] == [
        "/sleep?level=2",
        "/is_sleeping",
        "/wake_up?tags=weights",
        "/collective_rpc",
        "/wake_up?tags=kv_cache",
        "/is_sleeping",
    ]
    assert {r["headers"].get("authorization") for r in sent} == {f"Bearer {KEY}"}


@pytest.mark.asyncio
async def test_a_server_that_is_down_fails_each_step(control: HttpSleepControl) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(SleepFailedError) as raised:
        await control.sleep(url, 1)
    assert str(raised.value) == (
        f"Putting the vLLM at {url} to sleep (level 1) failed: "
        "POST /sleep?level=1 got no answer (connection refused)."
    )
    assert (raised.value.step, raised.value.status) == ("POST /sleep?level=1", None)
    assert "restarted" in raised.value.hint

    with pytest.raises(SleepFailedError) as raised_wake:
        await control.wake(url, 2)
    assert "from sleep level 2 at step 1 of 3" in str(raised_wake.value)
    assert raised_wake.value.step == "POST /wake_up?tags=weights"
    assert await control.is_sleeping(url) is None


@pytest.mark.asyncio
async def test_a_sleep_with_no_answer_ends_at_the_configured_timeout(
    stalling: StallingUpstream,
) -> None:
    control = HttpSleepControl(sleep_timeout=0.3)
    try:
        with pytest.raises(SleepFailedError) as raised:
            await control.sleep(stalling.url, 1)
    finally:
        await control.close()
    assert raised.value.detail == "none within 0.3 s"
    assert "POST /sleep?level=1 got no answer (none within 0.3 s)" in str(raised.value)


def _mock(
    answers: dict[str, httpx.Response], seen: list[str]
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        seen.append(target)
        return answers.get(target) or httpx.Response(200, json={})

    return handle


@pytest.mark.asyncio
async def test_a_failed_wake_step_names_the_step_and_vllms_message() -> None:
    seen: list[str] = []
    answers = {
        "/collective_rpc": httpx.Response(
            500,
            json={
                "error": {
                    "message": "CUDA out of memory while reloading",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            },
        )
    }
    control = HttpSleepControl(transport=httpx.MockTransport(_mock(answers, seen)))
    try:
        with pytest.raises(SleepFailedError) as raised:
            await control.wake("http://vllm:8000", 2)
    finally:
        await control.close()
    assert str(raised.value) == (
        "Waking the vLLM at http://vllm:8000 from sleep level 2 at step 2 of 3 failed: "
        "POST /collective_rpc reload_weights answered HTTP 500: CUDA out of memory while reloading"
    )
    assert (raised.value.status, raised.value.detail) == (
        500,
        "CUDA out of memory while reloading",
    )
    assert seen == ["/wake_up?tags=weights", "/collective_rpc"]  # no kv_cache after a failure


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (
            httpx.Response(500, json={"detail": "Sleep mode is not enabled"}),
            "Sleep mode is not enabled",
        ),
        (
            httpx.Response(
                422, json={"detail": [{"type": "int_parsing", "msg": "Input should be an int"}]}
            ),
            "Input should be an int",
        ),
        (httpx.Response(503, text="upstream gone\n"), "upstream gone"),
        (httpx.Response(500), "(no message)"),
    ],
)
async def test_error_bodies_are_read_for_vllms_message(answer: httpx.Response, detail: str) -> None:
    seen: list[str] = []
    control = HttpSleepControl(transport=httpx.MockTransport(_mock({"/wake_up": answer}, seen)))
    try:
        with pytest.raises(SleepFailedError) as raised:
            await control.wake("http://vllm:8000", 1)
    finally:
        await control.close()
    assert raised.value.detail == detail
    assert str(raised.value).endswith(f"answered HTTP {answer.status_code}: {detail}")
    assert seen == ["/wake_up"]


@pytest.mark.asyncio
async def test_a_refused_key_says_to_set_one() -> None:
    answers = {"/sleep?level=1": httpx.Response(401, json={"error": "Unauthorized"})}
    control = HttpSleepControl(transport=httpx.MockTransport(_mock(answers, [])))
    try:
        with pytest.raises(SleepFailedError) as raised:
            await control.sleep("http://vllm:8000", 1)
    finally:
        await control.close()
    assert raised.value.detail == "Unauthorized"
    assert "VLLM_API_KEY" in raised.value.hint


@pytest.mark.asyncio
@pytest.mark.parametrize("level", [0, 3])
async def test_only_levels_1_and_2_are_asked_for(level: int) -> None:
    seen: list[str] = []
    control = HttpSleepControl(transport=httpx.MockTransport(_mock({}, seen)))
    try:
        with pytest.raises(ValueError, match="1 or 2"):
            await control.sleep("http://vllm:8000", level)
        with pytest.raises(ValueError, match="1 or 2"):
            await control.wake("http://vllm:8000", level)
    finally:
        await control.close()
    assert seen == []
