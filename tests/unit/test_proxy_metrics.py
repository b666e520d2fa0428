"""Model starts are counted from the snapshots the supervisor publishes, whoever started them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.proxy._metrics import ProxyMetrics


def samples(metrics: ProxyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def snap(key: str, state: InstanceState) -> Instance:
    return Instance(key=key, name=key, served_name=key, state=state)


def test_a_start_is_counted_once_with_its_duration_and_result() -> None:
    metrics = ProxyMetrics()
    metrics.observe_instance(snap("a", InstanceState.STOPPED), 100.0)
    metrics.observe_instance(snap("a", InstanceState.STARTING), 100.0)
    metrics.observe_instance(snap("a", InstanceState.STARTING), 101.0)  # progress only
    metrics.observe_instance(snap("a", InstanceState.READY), 142.0)
    metrics.observe_instance(snap("a", InstanceState.READY), 150.0)
    metrics.observe_instance(snap("b", InstanceState.STARTING), 150.0)
    metrics.observe_instance(snap("b", InstanceState.FAILED), 153.0)
    found = samples(metrics)
    assert found[("ryx_model_starts_total", (("model", "a"), ("result", "ready")))] == 1
    assert found[("ryx_model_starts_total", (("model", "b"), ("result", "failed")))] == 1
    assert found[("ryx_model_start_duration_seconds_sum", (("model", "a"),))] == 42.0
    assert found[("ryx_model_start_duration_seconds_sum", (("model", "b"),))] == 3.0


def test_a_start_cut_short_by_a_stop_is_cancelled() -> None:
    metrics = ProxyMetrics()
    metrics.observe_instance(snap("a", InstanceState.STARTING), 0.0)
    metrics.observe_instance(snap("a", InstanceState.STOPPING), 5.0)
    metrics.observe_instance(snap("a", InstanceState.STOPPED), 6.0)
    found = samples(metrics)
    assert found[("ryx_model_starts_total", (("model", "a"), ("result", "cancelled")))] == 1
    assert ("ryx_model_starts_total", (("model", "a"), ("result", "ready"))) not in found


def test_requests_by_model_and_status_and_in_flight() -> None:
    metrics = ProxyMetrics()
    metrics.forwarding("a", 1)
    metrics.forwarding("a", 1)
    metrics.forwarding("a", -1)
    metrics.request_done("a", 200)
    metrics.request_done("a", 200)
    metrics.request_done("a", 503)
    metrics.upstream_headers("a", 0.02)
    found = samples(metrics)
    assert found[("ryx_proxy_requests_total", (("model", "a"), ("status", "200")))] == 2
    assert found[("ryx_proxy_requests_total", (("model", "a"), ("status", "503")))] == 1
    assert found[("ryx_proxy_requests_in_flight", (("model", "a"),))] == 1
    assert found[("ryx_proxy_upstream_ttfb_seconds_count", (("model", "a"),))] == 1
    assert metrics.requests_total() == 3


def test_upstream_time_buckets_are_cumulative_and_include_their_bound() -> None:
    metrics = ProxyMetrics()
    for seconds in (0.005, 0.0051, 0.3, 1000.0):
        metrics.upstream_done("a", seconds)
    found = samples(metrics)

    def bucket(le: str) -> float:
        return found[("ryx_proxy_upstream_duration_seconds_bucket", (("le", le), ("model", "a")))]

    assert bucket("0.005") == 1  # a bucket counts values up to and including its bound
    assert bucket("0.01") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("300.0") == 3
    assert bucket("+Inf") == 4
    assert found[("ryx_proxy_upstream_duration_seconds_count", (("model", "a"),))] == 4
    assert found[("ryx_proxy_upstream_duration_seconds_sum", (("model", "a"),))] == pytest.approx(
        1000.3101
    )
