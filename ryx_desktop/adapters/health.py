"""Health and metrics probes of vLLM (or any OpenAI-compatible) servers over HTTP, with httpx.

``probe`` asks ``/health`` and ``/v1/models``; ``metrics`` reads vLLM's request and KV-cache gauges
from ``/metrics``; ``first_answer`` asks for one token, to know the model can really generate.
Network failures never raise: they come back as an unreachable result, a failed answer or None.
A server started with ``--api-key`` gets the key as ``Authorization: Bearer`` on every request.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ryx_desktop.core.ports import AnswerResult, ProbeResult
from ryx_desktop.core.states import ModelMetrics

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 3.0
#: The first request may compile kernels or capture graphs on the way: give it time.
ANSWER_TIMEOUT = 120.0
#: Statuses that mean the server refused the question itself, not that it cannot answer.
_MISSING = 404
_REFUSED_KEY = (401, 403)

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_OLD = "vllm:gpu_cache_usage_perc"  # vLLM before 0.10
#: Labelled ``sleep_state``: awake, weights_offloaded (level 1) or discard_all (level 2).
SLEEP_STATE = "vllm:engine_sleep_state"
_SLEEP_LEVELS = {"awake": 0, "weights_offloaded": 1, "discard_all": 2}
_WANTED = (RUNNING, WAITING, KV_CACHE, KV_CACHE_OLD, SLEEP_STATE)


class HttpHealthProbe:
    """``HealthProbe`` over HTTP. ``transport`` replaces the network (tests use
    ``httpx.MockTransport``)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._read_timeout = read_timeout
        self._answer_timeout = answer_timeout
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

    async def probe(self, base_url: str, api_key: str | None = None) -> ProbeResult:
        """GET ``/health`` then ``/v1/models``; never raises for network errors."""
        base = base_url.rstrip("/")
        headers = _auth(api_key)
        try:
            health = await self._http().get(f"{base}/health", headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ProbeResult(reachable=False, healthy=False, error=self._describe(exc))
        healthy = health.status_code == 200
        error = "" if healthy else f"/health answered HTTP {health.status_code}"
        try:
            models = await self._http().get(f"{base}/v1/models", headers=headers)
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
        elif models.status_code in _REFUSED_KEY:
            error = error or (
                f"/v1/models answered HTTP {models.status_code}: the server wants an API key "
                "(set --api-key in extra_args or VLLM_API_KEY in env to the server's key)"
            )
        else:
            error = error or f"/v1/models answered HTTP {models.status_code}"
        return ProbeResult(reachable=True, healthy=healthy, served_names=names, error=error)

    async def metrics(self, base_url: str, api_key: str | None = None) -> ModelMetrics | None:
        """vLLM's requests running and waiting and its KV-cache use (0..1), from ``/metrics``.

        Several series of one gauge (one per engine) are summed; the KV-cache share is their
        mean. None when the server is unreachable, answers an error, or reports none of them.
        """
        try:
            response = await self._http().get(
                f"{base_url.rstrip('/')}/metrics", headers=_auth(api_key)
            )
        except (httpx.HTTPError, httpx.InvalidURL):
            return None
        if response.status_code != 200:
            return None
        return parse_metrics(response.text)

    async def first_answer(
        self, base_url: str, served_name: str, api_key: str | None = None
    ) -> AnswerResult:
        """Ask for one token: ``/v1/completions``, or ``/v1/chat/completions`` when that is 404.

        A 5xx, a refused key or no answer at all is a failure, with the server's own message.
        Other refusals (400: the question, not the engine) count as answered; a server with
        neither endpoint (an embedding model) is ``skipped``.
        """
        base = base_url.rstrip("/")
        asks = (
            ("/v1/completions", {"model": served_name, "prompt": "Hi", "max_tokens": 1}),
            (
                "/v1/chat/completions",
                {
                    "model": served_name,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 1,
                },
            ),
        )
        timeout = httpx.Timeout(self._answer_timeout, connect=self._timeout.connect)
        for path, body in asks:
            try:
                answer = await self._http().post(
                    base + path, json=body, headers=_auth(api_key), timeout=timeout
                )
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return AnswerResult(ok=False, error=f"{path}: {self._describe(exc, answer=True)}")
            if answer.status_code == _MISSING and path != asks[-1][0]:
                continue
            if answer.status_code < 300:
                return AnswerResult(ok=True, status=answer.status_code)
            message = _error_message(answer)
            if answer.status_code == _MISSING:
                return AnswerResult(ok=True, status=_MISSING, error=message, skipped=True)
            failed = answer.status_code >= 500 or answer.status_code in _REFUSED_KEY
            return AnswerResult(ok=not failed, status=answer.status_code, error=message)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    async def close(self) -> None:
        """Close the HTTP client (it is created again on next use)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _describe(self, exc: Exception, *, answer: bool = False) -> str:
        """A short reason for a failed request."""
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return "connection timed out"
        if isinstance(exc, httpx.TimeoutException):
            waited = self._answer_timeout if answer else self._read_timeout
            return f"no answer within {waited:g} s"
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


def _auth(api_key: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _error_message(response: httpx.Response) -> str:
    """The message of an error answer: OpenAI's nested ``{"error": {"message"}}``, vLLM 0.6's
    flat ``{"message"}``, FastAPI's ``{"detail"}``, or the start of the text."""
    prefix = f"HTTP {response.status_code}"
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()
        return f"{prefix}: {text[:300]}" if text else prefix
    if isinstance(body, dict):
        inner = body.get("error")
        for holder in (inner, body):
            if isinstance(holder, dict):
                for field in ("message", "detail"):
                    if isinstance(holder.get(field), str) and holder[field]:
                        return f"{prefix}: {holder[field]}"
        if isinstance(inner, str) and inner:
            return f"{prefix}: {inner}"
    return prefix


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
    sleep_level: int | None = None
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                if sample.name == SLEEP_STATE:
                    level = _SLEEP_LEVELS.get(sample.labels.get("sleep_state", ""))
                    if level is not None and float(sample.value) >= 1:
                        sleep_level = max(sleep_level or 0, level)
                elif sample.name in _WANTED:
                    values.setdefault(sample.name, []).append(float(sample.value))
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    if not values and sleep_level is None:
        return None
    kv = values.get(KV_CACHE) or values.get(KV_CACHE_OLD)
    return ModelMetrics(
        requests_running=sum(values[RUNNING]) if RUNNING in values else None,
        requests_waiting=sum(values[WAITING]) if WAITING in values else None,
        kv_cache_usage=sum(kv) / len(kv) if kv else None,
        sleep_level=sleep_level,
    )


def _wanted_line(line: str) -> bool:
    stripped = line.strip()
    if stripped.startswith("#"):
        parts = stripped.split()
        return len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in _WANTED
    name = stripped.split("{", 1)[0].split(" ", 1)[0]
    return name in _WANTED
