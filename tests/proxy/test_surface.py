"""The proxy's own endpoints: /v1/models, /health, /metrics and the control API's listing."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ryx_desktop.config import Config
from tests.proxy.helpers import (
    Chunks,
    chat,
    external,
    free_port_url,
    make_config,
    serve,
)
from tests.support.upstream import FakeUpstream


def config_with_unreachable(alpha: FakeUpstream) -> Config:
    return make_config(
        {
            "alpha": external(alpha, "alpha-served", "a1"),
            "gone": external(free_port_url(), "gone-served"),
        },
        default_model="alpha",
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.mark.asyncio
async def test_v1_models_lists_every_model_with_its_state(alpha: FakeUpstream) -> None:
    async with serve(config_with_unreachable(alpha)) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["alpha-served", "gone-served"]
    first, second = body["data"]
    assert first == {
        "id": "alpha-served",
        "object": "model",
        "created": 0,
        "owned_by": "ryx-desktop",
        "key": "alpha",
        "name": "alpha",
        "state": "ready",
        "aliases": ["a1"],
        "selected": True,
    }
    assert second["state"] == "unreachable"
    assert second["selected"] is False


@pytest.mark.asyncio
async def test_health(alpha: FakeUpstream) -> None:
    async with serve(config_with_unreachable(alpha)) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "selected": "alpha",
        "models": {"alpha": "ready", "gone": "unreachable"},
    }


@pytest.mark.asyncio
async def test_api_instances(alpha: FakeUpstream) -> None:
    async with serve(config_with_unreachable(alpha)) as client:
        response = await client.get("/api/instances")
    assert response.status_code == 200
    body = response.json()
    assert body["selected"] == "alpha"
    instances = {item["key"]: item for item in body["instances"]}
    assert list(instances) == ["alpha", "gone"]
    assert instances["alpha"]["state"] == "ready"
    assert instances["alpha"]["selected"] is True
    assert instances["alpha"]["served_name"] == "alpha-served"
    assert instances["gone"]["state"] == "unreachable"
    assert instances["gone"]["selected"] is False


@pytest.mark.asyncio
async def test_metrics_count_requests_by_model_and_status(alpha: FakeUpstream) -> None:
    async with serve(config_with_unreachable(alpha)) as client:
        before = samples((await client.get("/metrics")).text)
        assert ("ryx_proxy_requests_total", (("model", "alpha"), ("status", "200"))) not in before
        for _ in range(2):
            ok = await client.post("/v1/chat/completions", json=chat(model="a1"))
            assert ok.status_code == 200
        gone = await client.post("/v1/chat/completions", json=chat(model="gone"))
        assert gone.status_code == 502
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE ryx_proxy_requests_total counter" in response.text
    found = samples(response.text)
    assert found[("ryx_proxy_requests_total", (("model", "alpha"), ("status", "200")))] == 2
    assert found[("ryx_proxy_requests_total", (("model", "gone"), ("status", "502")))] == 1
    assert found[("ryx_proxy_requests_in_flight", (("model", "alpha"),))] == 0
    assert found[("ryx_proxy_upstream_ttfb_seconds_count", (("model", "alpha"),))] == 2
    assert found[("ryx_proxy_upstream_duration_seconds_count", (("model", "alpha"),))] == 2
    assert found[("ryx_proxy_upstream_duration_seconds_sum", (("model", "alpha"),))] > 0
    buckets = [key for key in found if key[0] == "ryx_proxy_upstream_ttfb_seconds_bucket"]
    assert buckets, "the ttfb histogram has no buckets"


@pytest.mark.asyncio
async def test_metrics_in_flight_gauge_counts_a_running_stream(slow: FakeUpstream) -> None:
    config = make_config({"slow": external(slow)})
    gauge = ("ryx_proxy_requests_in_flight", (("model", "slow"),))
    async with serve(config) as client:
        body = chat("a few tokens", stream=True)  # the fake's reply takes a few token delays
        async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            async with Chunks(stream) as chunks:
                await chunks.read()
                during = samples((await client.get("/metrics")).text)
                assert (await chunks.read_to_end()).endswith(b"data: [DONE]\n\n")
        after = samples((await client.get("/metrics")).text)
    assert during[gauge] == 1
    assert after[gauge] == 0
