"""The proxy's Prometheus metrics, in a registry of its own (never the process-wide one).

Per-request figures are plain integers and bucket counts, updated without locks on the event
loop, and turned into Prometheus families only when ``/metrics`` is scraped: a request costs a
few attribute updates instead of a handful of locked prometheus-client calls. Model starts are
rare and use prometheus-client's own Counter and Histogram.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ryx_desktop.core.states import Instance, InstanceState

#: Upstream times run from sub-millisecond (cached) to minutes (long generations).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_START_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800)
#: The ``le`` labels of the latency buckets, spelled as prometheus-client spells them.
_LE = (*(str(float(bound)) for bound in _LATENCY_BUCKETS), "+Inf")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Timings:
    """One model's upstream time histogram: counts per bucket (the last one is +Inf) and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs as Prometheus exposes them."""
        out: list[tuple[str, float]] = []
        total = 0
        for le, count in zip(_LE, self.counts, strict=True):
            total += count
            out.append((le, total))
        return out


class _ModelFigures:
    """What the proxy counts for one model."""

    __slots__ = ("duration", "in_flight", "ttfb")

    def __init__(self) -> None:
        self.in_flight = 0
        self.ttfb = _Timings()
        self.duration = _Timings()


class _RequestCollector:
    """Turns the plain counters into Prometheus families at scrape time."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "ryx_proxy_requests",
            "Requests answered, by model key and HTTP status.",
            labels=("model", "status"),
        )
        for (key, status), count in sorted(m._answered.items()):
            requests.add_metric((key, str(status)), count)
        yield requests
        in_flight = GaugeMetricFamily(
            "ryx_proxy_requests_in_flight",
            "Requests being forwarded now, by model key.",
            labels=("model",),
        )
        ttfb = HistogramMetricFamily(
            "ryx_proxy_upstream_ttfb_seconds",
            "Time from forwarding a request to the upstream's response headers.",
            labels=("model",),
        )
        duration = HistogramMetricFamily(
            "ryx_proxy_upstream_duration_seconds",
            "Time from forwarding a request to the end of the upstream's response.",
            labels=("model",),
        )
        for key, figures in sorted(m._models.items()):
            in_flight.add_metric((key,), figures.in_flight)
            ttfb.add_metric((key,), figures.ttfb.buckets(), figures.ttfb.sum)
            duration.add_metric((key,), figures.duration.buckets(), figures.duration.sum)
        yield from (in_flight, ttfb, duration)


class ProxyMetrics:
    """Requests by model and status, in flight, upstream timings, model starts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._answered: dict[tuple[str, int], int] = {}
        self._models: dict[str, _ModelFigures] = {}
        self._total = 0
        self.registry.register(_RequestCollector(self))
        self._starts = Counter(
            "ryx_model_starts",
            "Model starts seen, by model key and how they ended (ready, failed, cancelled).",
            ("model", "result"),
            registry=self.registry,
        )
        self._start_seconds = Histogram(
            "ryx_model_start_duration_seconds",
            "Time from a model's start to ready (or failure).",
            ("model",),
            buckets=_START_BUCKETS,
            registry=self.registry,
        )
        self._starting_since: dict[str, float] = {}
        self._last_state: dict[str, InstanceState] = {}

    def _model(self, key: str) -> _ModelFigures:
        figures = self._models.get(key)
        if figures is None:
            figures = self._models[key] = _ModelFigures()
        return figures

    def requests_total(self) -> int:
        """Requests answered so far, every model and status together."""
        return self._total

    def request_done(self, key: str, status: int) -> None:
        answered = self._answered
        answered[key, status] = answered.get((key, status), 0) + 1
        self._total += 1

    def forwarding(self, key: str, delta: int) -> None:
        self._model(key).in_flight += delta

    def upstream_headers(self, key: str, seconds: float) -> None:
        self._model(key).ttfb.observe(seconds)

    def upstream_done(self, key: str, seconds: float) -> None:
        self._model(key).duration.observe(seconds)

    def observe_instance(self, inst: Instance, now: float) -> None:
        """Feed every snapshot in: starts are counted from their state changes."""
        before = self._last_state.get(inst.key)
        if before is inst.state:
            return
        self._last_state[inst.key] = inst.state
        if inst.state is InstanceState.STARTING:
            self._starting_since[inst.key] = now
            return
        since = self._starting_since.pop(inst.key, None)
        if since is None:
            return
        result = {InstanceState.READY: "ready", InstanceState.FAILED: "failed"}.get(
            inst.state, "cancelled"
        )
        self._starts.labels(inst.key, result).inc()
        self._start_seconds.labels(inst.key).observe(now - since)

    def render(self) -> bytes:
        return generate_latest(self.registry)
