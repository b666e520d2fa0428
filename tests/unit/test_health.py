"""The HTTP health probe against ``httpx.MockTransport`` servers: health, served names, metrics."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from ryx_desktop.adapters.health import HttpHealthProbe, parse_metrics
from ryx_desktop.core.ports import AnswerResult
from ryx_desktop.core.states import ModelMetrics

BASE = "http://127.0.0.1:8001"

METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="qwen"} 5.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="qwen"} 0.25
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="qwen"} 0.9
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="qwen"} 1.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="qwen"} 3.0
vllm:e2e_request_latency_seconds_count{model_name="qwen"} 3.0
vllm:e2e_request_latency_seconds_sum{model_name="qwen"} 1.5
"""

Handler = Callable[[httpx.Request], httpx.Response]


def server(routes: dict[str, httpx.Response], seen: list[str] | None = None) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        return routes.get(request.url.path) or httpx.Response(404, json={"detail": "Not Found"})

    return handle


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def models(*names: str) -> httpx.Response:
    return httpx.Response(
        200, json={"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
    )


@pytest.mark.asyncio
async def test_healthy_server_lists_its_served_names() -> None:
    seen: list[str] = []
    probe = HttpHealthProbe(
        transport=httpx.MockTransport(
            server({"/health": httpx.Response(200), "/v1/models": models("qwen", "qwen-b")}, seen)
        )
    )
    try:
        result = await probe.probe(BASE + "/")
    finally:
        await probe.close()
    assert result.reachable
    assert result.healthy
    assert result.served_names == ("qwen", "qwen-b")
    assert result.error == ""
    assert result.serves("qwen")
    assert seen == ["/health", "/v1/models"]


@pytest.mark.asyncio
async def test_connection_refused_is_unreachable_not_an_exception() -> None:
    probe = HttpHealthProbe(transport=httpx.MockTransport(refuse))
    try:
        result = await probe.probe(BASE)
        metrics = await probe.metrics(BASE)
    finally:
        await probe.close()
    assert not result.reachable
    assert not result.healthy
    assert result.served_names == ()
    assert result.error == "connection refused"
    assert metrics is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (httpx.ConnectTimeout, "connection timed out"),
        (httpx.ReadTimeout, "no answer within 3 s"),
        (httpx.RemoteProtocolError, "the server closed the connection without answering"),
    ],
)
async def test_other_network_failures(exception: type[httpx.RequestError], error: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exception("boom", request=request)

    probe = HttpHealthProbe(transport=httpx.MockTransport(fail))
    try:
        result = await probe.probe(BASE)
    finally:
        await probe.close()
    assert not result.reachable
    assert result.error == error


@pytest.mark.asyncio
async def test_really_refused_socket() -> None:
    probe = HttpHealthProbe()  # the real network: nothing listens on port 1
    try:
        result = await probe.probe("http://127.0.0.1:1")
    finally:
        await probe.close()
    assert not result.reachable
    assert result.error == "connection refused"


@pytest.mark.asyncio
async def test_unhealthy_server_still_reports_names() -> None:
    probe = HttpHealthProbe(
        transport=httpx.MockTransport(
            server({"/health": httpx.Response(503), "/v1/models": models("qwen")})
        )
    )
    try:
        result = await probe.probe(BASE)
    finally:
        await probe.close()
    assert result.reachable
    assert not result.healthy
    assert result.served_names == ("qwen",)
    assert result.error == "/health answered HTTP 503"
    assert not result.serves("qwen")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, text="<html>hi</html>"), "not a model list"),
        (httpx.Response(200, json={"data": "nope"}), "not a model list"),
        (httpx.Response(500, text="oops"), "/v1/models answered HTTP 500"),
    ],
)
async def test_bad_model_lists(response: httpx.Response, error: str) -> None:
    probe = HttpHealthProbe(
        transport=httpx.MockTransport(
            server({"/health": httpx.Response(200), "/v1/models": response})
        )
    )
    try:
        result = await probe.probe(BASE)
    finally:
        await probe.close()
    assert result.reachable
    assert result.healthy
    assert result.served_names == ()
    assert error in result.error


@pytest.mark.asyncio
async def test_models_fails_after_health() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        raise httpx.ReadTimeout("slow", request=request)

    probe = HttpHealthProbe(transport=httpx.MockTransport(handle))
    try:
        result = await probe.probe(BASE)
    finally:
        await probe.close()
    assert result.reachable
    assert result.healthy
    assert result.served_names == ()
    assert result.error == "/v1/models: no answer within 3 s"


@pytest.mark.asyncio
async def test_metrics_reads_the_three_figures() -> None:
    probe = HttpHealthProbe(
        transport=httpx.MockTransport(server({"/metrics": httpx.Response(200, text=METRICS)}))
    )
    try:
        metrics = await probe.metrics(BASE)
    finally:
        await probe.close()
    # The new KV-cache name wins over the old one when a server reports both.
    assert metrics == ModelMetrics(requests_running=2.0, requests_waiting=5.0, kv_cache_usage=0.25)


@pytest.mark.asyncio
async def test_metrics_error_status_is_none() -> None:
    probe = HttpHealthProbe(
        transport=httpx.MockTransport(server({"/metrics": httpx.Response(500, text=METRICS)}))
    )
    try:
        assert await probe.metrics(BASE) is None
    finally:
        await probe.close()


def test_old_kv_cache_name_and_several_engines() -> None:
    text = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="q"} 1
vllm:num_requests_running{engine="1",model_name="q"} 3
vllm:gpu_cache_usage_perc{engine="0",model_name="q"} 0.2
vllm:gpu_cache_usage_perc{engine="1",model_name="q"} 0.4
"""
    metrics = parse_metrics(text)
    assert metrics is not None
    assert metrics.requests_running == 4.0
    assert metrics.requests_waiting is None
    assert metrics.kv_cache_usage == pytest.approx(0.3)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html><body>not metrics</body></html>",
        "# only a comment\n",
        'vllm:num_requests_running{model_name="q"} not-a-number\n',
        'vllm:num_requests_running{model_name="q 1\n',
        "# TYPE vllm:num_requests_running gauge\n# TYPE vllm:num_requests_running counter\n",
    ],
)
def test_malformed_or_foreign_metrics_are_none(text: str) -> None:
    assert parse_metrics(text) is None


def test_unrelated_garbage_does_not_hide_the_figures() -> None:
    text = 'some_other_metric{a="b" garbage\nvllm:num_requests_waiting 7\n'
    assert parse_metrics(text) == ModelMetrics(requests_waiting=7.0)


@pytest.mark.asyncio
async def test_client_is_lazy_and_reusable_after_close() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={"data": []})

    probe = HttpHealthProbe(transport=httpx.MockTransport(handle))
    await probe.close()  # nothing to close yet
    assert (await probe.probe(BASE)).healthy
    await probe.close()
    assert (await probe.probe(BASE)).healthy
    await probe.close()
    assert calls == 4


# ---- the model's API key and the first answer ------------------------------------------------


def keyed(routes: dict[str, httpx.Response], key: str, seen: list[httpx.Request]) -> Handler:
    """A server like vLLM with ``--api-key key``: every ``/v1/*`` path wants the key."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        wanted = f"Bearer {key}"
        if request.url.path.startswith("/v1") and request.headers.get("authorization") != wanted:
            return httpx.Response(401, json={"error": "Unauthorized"})
        return routes.get(request.url.path) or httpx.Response(404, json={"detail": "Not Found"})

    return handle


@pytest.mark.asyncio
async def test_probe_and_metrics_send_the_models_api_key() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "/health": httpx.Response(200),
        "/v1/models": models("qwen"),
        "/metrics": httpx.Response(200, text=METRICS),
    }
    probe = HttpHealthProbe(transport=httpx.MockTransport(keyed(routes, "s3cret", seen)))
    try:
        with_key = await probe.probe(BASE, "s3cret")
        metrics = await probe.metrics(BASE, "s3cret")
        without = await probe.probe(BASE)
    finally:
        await probe.close()
    assert with_key.serves("qwen")
    assert metrics is not None and metrics.requests_running == 2.0
    assert [r.headers.get("authorization") for r in seen[:3]] == ["Bearer s3cret"] * 3
    assert "authorization" not in seen[3].headers
    assert not without.serves("qwen") and without.healthy
    assert "401" in without.error and "API key" in without.error


def answering(routes: dict[str, httpx.Response], seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return routes.get(request.url.path) or httpx.Response(404, json={"detail": "Not Found"})

    return handle


async def first_answer(
    routes: dict[str, httpx.Response], api_key: str | None = None
) -> tuple[AnswerResult, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    probe = HttpHealthProbe(transport=httpx.MockTransport(answering(routes, seen)))
    try:
        return await probe.first_answer(BASE, "qwen", api_key), seen
    finally:
        await probe.close()


COMPLETION = httpx.Response(200, json={"choices": [{"text": "!"}]})


@pytest.mark.asyncio
async def test_first_answer_asks_one_token_of_the_served_name_with_the_key() -> None:
    answer, seen = await first_answer({"/v1/completions": COMPLETION}, api_key="k")
    assert answer == AnswerResult(ok=True, status=200)
    assert [r.url.path for r in seen] == ["/v1/completions"]
    assert json.loads(seen[0].content) == {"model": "qwen", "prompt": "Hi", "max_tokens": 1}
    assert seen[0].headers["authorization"] == "Bearer k"


@pytest.mark.asyncio
async def test_first_answer_falls_back_to_chat_when_completions_is_missing() -> None:
    answer, seen = await first_answer({"/v1/chat/completions": COMPLETION})
    assert answer.ok and not answer.skipped
    assert [r.url.path for r in seen] == ["/v1/completions", "/v1/chat/completions"]
    body = json.loads(seen[1].content)
    assert body["model"] == "qwen" and body["max_tokens"] == 1 and body["messages"]


@pytest.mark.asyncio
async def test_first_answer_is_skipped_by_a_server_without_either_endpoint() -> None:
    answer, _ = await first_answer({})
    assert answer.ok and answer.skipped and answer.status == 404


ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."


@pytest.mark.asyncio
async def test_a_server_error_on_the_first_answer_fails_with_vllms_message() -> None:
    nested = {
        "error": {
            "message": ENGINE_DEAD,
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    answer, _ = await first_answer({"/v1/completions": httpx.Response(500, json=nested)})
    assert not answer.ok and answer.status == 500
    assert (
        answer.error
        == "HTTP 500: EngineCore encountered an issue. See stack trace (above) for the root cause."
    )


@pytest.mark.asyncio
async def test_first_answer_reads_old_flat_errors_and_refused_keys() -> None:
    flat = {"object": "error", "message": "bad key", "type": "Unauthorized", "code": 401}
    answer, _ = await first_answer({"/v1/completions": httpx.Response(401, json=flat)})
    assert not answer.ok and answer.error == "HTTP 401: bad key"


@pytest.mark.asyncio
async def test_a_refused_question_still_counts_as_answered() -> None:
    refusal = {"error": {"message": "This model's maximum context length is 2", "code": 400}}
    answer, _ = await first_answer({"/v1/completions": httpx.Response(400, json=refusal)})
    assert answer.ok and answer.status == 400 and "maximum context length" in answer.error


@pytest.mark.asyncio
async def test_no_answer_at_all_is_a_failed_first_answer() -> None:
    probe = HttpHealthProbe(transport=httpx.MockTransport(refuse))
    try:
        answer = await probe.first_answer(BASE, "qwen")
    finally:
        await probe.close()
    assert not answer.ok and answer.status is None
    assert answer.error == "/v1/completions: connection refused"


@pytest.mark.parametrize(
    ("state", "level"), [("awake", 0), ("weights_offloaded", 1), ("discard_all", 2)]
)
def test_the_engine_sleep_state_gives_the_sleep_level(state: str, level: int) -> None:
    lines = [
        f'vllm:engine_sleep_state{{engine="0",model_name="q",sleep_state="{name}"}} '
        f"{1.0 if name == state else 0.0}"
        for name in ("awake", "weights_offloaded", "discard_all")
    ]
    text = "# TYPE vllm:engine_sleep_state gauge\n" + "\n".join(lines) + "\n"
    text += 'vllm:num_requests_running{engine="0",model_name="q"} 0\n'
    metrics = parse_metrics(text)
    assert metrics is not None
    assert metrics.sleep_level == level
    assert metrics.requests_running == 0
