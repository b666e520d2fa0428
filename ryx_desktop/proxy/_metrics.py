"""The proxy's Prometheus metrics, in a registry of its own (never the process-wide one).

Label children are cached per model so the hot path does a dict lookup, not a label parse.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ryx_desktop.core.states import Instance, InstanceState

#: Upstream times run from sub-millisecond (cached) to minutes (long generations).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_START_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ProxyMetrics:
    """Requests by model and status, in flight, upstream timings, model starts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "ryx_proxy_requests",
            "Requests answered, by model key and HTTP status.",
            ("model", "status"),
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "ryx_proxy_requests_in_flight",
            "Requests being forwarded now, by model key.",
            ("model",),
            registry=self.registry,
        )
        self._ttfb = Histogram(
            "ryx_proxy_upstream_ttfb_seconds",
            "Time from forwarding a request to the upstream's response headers.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "ryx_proxy_upstream_duration_seconds",
            "Time from forwarding a request to the end of the upstream's response.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self._children: dict[tuple[str, int], Counter] = {}
        self._per_model: dict[str, tuple[Gauge, Histogram, Histogram]] = {}
        self._starting_since: dict[str, float] = {}
        self._last_state: dict[str, InstanceState] = {}

    def _model(self, key: str) -> tuple[Gauge, Histogram, Histogram]:
        found = self._per_model.get(key)
        if found is None:
            found = (
                self._in_flight.labels(key),
                self._ttfb.labels(key),
                self._duration.labels(key),
            )
            self._per_model[key] = found
        return found

    def request_done(self, key: str, status: int) -> None:
        child = self._children.get((key, status))
        if child is None:
            child = self._requests.labels(key, str(status))
            self._children[(key, status)] = child
        child.inc()

    def forwarding(self, key: str, delta: int) -> None:
        self._model(key)[0].inc(delta)

    def upstream_headers(self, key: str, seconds: float) -> None:
        self._model(key)[1].observe(seconds)

    def upstream_done(self, key: str, seconds: float) -> None:
        self._model(key)[2].observe(seconds)

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
