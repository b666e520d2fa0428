"""Health and metrics probes of vLLM (or any OpenAI-compatible) servers over HTTP, with httpx.

``probe`` asks ``/health`` and ``/v1/models``; ``metrics`` reads vLLM's request and KV-cache gauges
from ``/metrics``. Network failures never raise: they come back as an unreachable result or None.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ryx_desktop.core.ports import ProbeResult
from ryx_desktop.core.states import ModelMetrics

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 3.0

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_OLD = "vllm:gpu_cache_usage_perc"  # vLLM before 0.10
_WANTED = (RUNNING, WAITING, KV_CACHE, KV_CACHE_OLD)


class HttpHealthProbe:
    """``HealthProbe`` over HTTP. ``transport`` replaces the network (tests use
    ``httpx.MockTransport``)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._read_timeout = read_timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                trust_env=False,  # model servers are local: never route probes through a proxy
                follow_redirects=False,
            )
        return self._client

    async def probe(self, base_url: str) -> ProbeResult:
        """GET ``/health`` then ``/v1/models``; never raises for network errors."""
        base = base_url.rstrip("/")
        try:
            health = await self._http().get(f"{base}/health")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ProbeResult(reachable=False, healthy=False, error=self._describe(exc))
        healthy = health.status_code == 200
        error = "" if healthy else f"/health answered HTTP {health.status_code}"
        try:
            models = await self._http().get(f"{base}/v1/models")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ProbeResult(
                reachable=True, healthy=healthy, error=f"/v1/models: {self._describe(exc)}"
            )
        names: tuple[str, ...] = ()
        if models.status_code == 200:
            parsed = _served_names(models)
            if parsed is None:
                error = error or "/v1/models answered something that is not a model list"
            else:
                names = parsed
        else:
            error = error or f"/v1/models answered HTTP {models.status_code}"
        return ProbeResult(reachable=True, healthy=healthy, served_names=names, error=error)

    async def metrics(self, base_url: str) -> ModelMetrics | None:
        """vLLM's requests running and waiting and its KV-cache use (0..1), from ``/metrics``.

        Several series of one gauge (one per engine) are summed; the KV-cache share is their
        mean. None when the server is unreachable, answers an error, or reports none of them.
        """
        try:
            response = await self._http().get(f"{base_url.rstrip('/')}/metrics")
        except (httpx.HTTPError, httpx.InvalidURL):
            return None
        if response.status_code != 200:
            return None
        return parse_metrics(response.text)

    async def close(self) -> None:
        """Close the HTTP client (it is created again on next use)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _describe(self, exc: Exception) -> str:
        """A short reason for a failed request."""
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return "connection timed out"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self._read_timeout:g} s"
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return f"invalid URL ({exc})"
        if isinstance(exc, httpx.ConnectError):
            text = str(exc)
            causes = list(_os_errors(exc))
            if any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in text:
                return "connection refused"
            if any(c.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) for c in causes):
                return "host unreachable"
            if "Name or service not known" in text or "nodename nor servname" in text:
                return "unknown host name"
            return f"cannot connect ({text or type(exc).__name__})"
        if isinstance(exc, httpx.RemoteProtocolError):
            return "the server closed the connection without answering"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _os_errors(exc: BaseException, depth: int = 0) -> Iterator[OSError]:
    """The OS errors behind ``exc``: its causes, contexts and exception-group members."""
    if depth > 10:
        return
    if isinstance(exc, OSError):
        yield exc
    inner: list[BaseException] = []
    if isinstance(exc, BaseExceptionGroup):
        inner.extend(exc.exceptions)
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and linked is not exc:
            inner.append(linked)
    for item in inner:
        yield from _os_errors(item, depth + 1)


def _served_names(response: httpx.Response) -> tuple[str, ...] | None:
    """The model ids of an OpenAI ``/v1/models`` answer, or None when it is not one."""
    try:
        body: Any = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return tuple(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)


def parse_metrics(text: str) -> ModelMetrics | None:
    """The three vLLM figures from Prometheus exposition ``text``; None when unparseable or
    when none of them is there.

    Only the lines of the wanted metrics are handed to the parser: vLLM's page is large (many
    histograms) and this runs on the event loop.
    """
    lines = [line for line in text.splitlines() if _wanted_line(line)]
    if not lines:
        return None
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                if sample.name in _WANTED:
                    values.setdefault(sample.name, []).append(float(sample.value))
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    if not values:
        return None
    kv = values.get(KV_CACHE) or values.get(KV_CACHE_OLD)
    return ModelMetrics(
        requests_running=sum(values[RUNNING]) if RUNNING in values else None,
        requests_waiting=sum(values[WAITING]) if WAITING in values else None,
        kv_cache_usage=sum(kv) / len(kv) if kv else None,
    )


def _wanted_line(line: str) -> bool:
    stripped = line.strip()
    if stripped.startswith("#"):
        parts = stripped.split()
        return len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in _WANTED
    name = stripped.split("{", 1)[0].split(" ", 1)[0]
    return name in _WANTED
