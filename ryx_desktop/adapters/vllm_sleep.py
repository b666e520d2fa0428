"""vLLM's sleep mode over HTTP, with httpx: put an engine to sleep, wake it, ask whether it sleeps.

The routes are vLLM's dev-mode ones (present only with ``VLLM_SERVER_DEV_MODE=1``; useful only
with ``--enable-sleep-mode``): ``POST /sleep?level=1|2`` (the level is a query parameter, not a
JSON body), ``POST /wake_up`` with optional ``?tags=weights`` / ``?tags=kv_cache``,
``POST /collective_rpc`` and ``GET /is_sleeping``. Waking from level 2 takes three steps: the
weights' memory back, ``reload_weights`` (level 2 threw them away), then the KV cache.

httpx errors and error answers are turned into ``SleepNotSupportedError`` (a 404: no such route)
or ``SleepFailedError`` (anything else) here, once. A server started with ``--api-key`` gets the
key as ``Authorization: Bearer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ryx_desktop.core.errors import SleepFailedError, SleepNotSupportedError

CONNECT_TIMEOUT = 2.0
#: Level 1 copies the weights to host RAM before answering: tens of GiB take a while.
SLEEP_TIMEOUT = 120.0
#: Per step; a level-2 wake reloads the weights from disk in its second step.
WAKE_TIMEOUT = 600.0
#: ``/is_sleeping`` only reads a flag.
STATUS_TIMEOUT = 5.0

_MISSING = 404
_REFUSED_KEY = (401, 403)
_KEY_HINT = (
    "The server wants an API key: set --api-key in extra_args or VLLM_API_KEY in env to the "
    "server's key."
)


@dataclass(frozen=True, slots=True)
class _Step:
    """One request of a sleep or wake."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """How messages name it, e.g. ``POST /wake_up?tags=weights``."""
        query = "&".join(f"{k}={v}" for k, v in self.params)
        text = f"{self.method} {self.path}" + (f"?{query}" if query else "")
        if self.body is not None and isinstance(self.body.get("method"), str):
            text += f" {self.body['method']}"
        return text


_WAKE_ALL = (_Step("POST", "/wake_up"),)
_WAKE_IN_THREE = (
    _Step("POST", "/wake_up", (("tags", "weights"),)),
    _Step("POST", "/collective_rpc", body={"method": "reload_weights"}),
    _Step("POST", "/wake_up", (("tags", "kv_cache"),)),
)


class HttpSleepControl:
    """``SleepControl`` over HTTP. ``transport`` replaces the network (tests use
    ``httpx.MockTransport``)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        sleep_timeout: float = SLEEP_TIMEOUT,
        wake_timeout: float = WAKE_TIMEOUT,
        status_timeout: float = STATUS_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._sleep_timeout = sleep_timeout
        self._wake_timeout = wake_timeout
        self._status_timeout = status_timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout(self._status_timeout),
                trust_env=False,  # model servers are local: never through a proxy
                follow_redirects=False,
            )
        return self._client

    def _timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=self._connect_timeout, pool=self._connect_timeout)

    async def sleep(self, base_url: str, level: int, api_key: str | None = None) -> None:
        """``POST /sleep?level=N``. The caller drains the model's requests first: vLLM does not
        wait for them. ``ValueError`` for a level other than 1 or 2 (a caller's bug)."""
        _check_level(level)
        base = base_url.rstrip("/")
        step = _Step("POST", "/sleep", (("level", str(level)),))
        await self._run(
            base,
            step,
            api_key,
            self._sleep_timeout,
            doing=f"Putting the vLLM at {base} to sleep (level {level})",
        )

    async def wake(self, base_url: str, level: int, api_key: str | None = None) -> None:
        """Wake an engine put to sleep at ``level``: one ``POST /wake_up`` for level 1; for level
        2 the weights, ``reload_weights`` and the KV cache, in order, stopping at the first
        failure. ``ValueError`` for a level other than 1 or 2 (a caller's bug)."""
        _check_level(level)
        base = base_url.rstrip("/")
        steps = _WAKE_ALL if level == 1 else _WAKE_IN_THREE
        for number, step in enumerate(steps, start=1):
            where = f" at step {number} of {len(steps)}" if len(steps) > 1 else ""
            await self._run(
                base,
                step,
                api_key,
                self._wake_timeout,
                doing=f"Waking the vLLM at {base} from sleep level {level}{where}",
            )

    async def is_sleeping(self, base_url: str, api_key: str | None = None) -> bool | None:
        """``GET /is_sleeping``'s ``is_sleeping``; None when the route is missing, the server
        does not answer or answers something else. Never raises."""
        try:
            response = await self._http().get(
                f"{base_url.rstrip('/')}/is_sleeping",
                headers=_auth(api_key),
                timeout=self._timeout(self._status_timeout),
            )
        except (httpx.HTTPError, httpx.InvalidURL):
            return None
        if response.status_code != 200:
            return None
        try:
            body: Any = response.json()
        except ValueError:
            return None
        flag = body.get("is_sleeping") if isinstance(body, dict) else None
        return flag if isinstance(flag, bool) else None

    async def close(self) -> None:
        """Close the HTTP client (it is created again on next use)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _run(
        self, base: str, step: _Step, api_key: str | None, timeout: float, *, doing: str
    ) -> None:
        """Send ``step``; return on a 2xx answer, raise the core error for anything else."""
        try:
            response = await self._http().request(
                step.method,
                base + step.path,
                params=list(step.params),
                json=step.body,
                headers=_auth(api_key),
                timeout=self._timeout(timeout),
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = _describe(exc, timeout)
            raise SleepFailedError(
                f"{doing} failed: {step.label} got no answer ({detail}).",
                step=step.label,
                detail=detail,
            ) from exc
        if response.is_success:
            return
        if response.status_code == _MISSING:
            raise SleepNotSupportedError(
                f"The vLLM at {base} does not offer sleep mode: {step.label} answered 404.",
                route=step.label,
            )
        detail = _error_message(response)
        raise SleepFailedError(
            f"{doing} failed: {step.label} answered HTTP {response.status_code}: {detail}",
            hint=_KEY_HINT if response.status_code in _REFUSED_KEY else None,
            step=step.label,
            status=response.status_code,
            detail=detail,
        )


def _check_level(level: int) -> None:
    if level not in (1, 2):
        raise ValueError(f"vLLM's sleep level is 1 or 2, not {level!r}")


def _auth(api_key: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _describe(exc: Exception, waited: float) -> str:
    """A short reason for a request that got no answer."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return f"none within {waited:g} s"
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"invalid URL: {exc}"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "refused" in text.lower() or _refused(exc):
            return "connection refused"
        return f"cannot connect: {text or type(exc).__name__}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _refused(exc: BaseException) -> bool:
    """Whether a ``ConnectionRefusedError`` is behind ``exc`` (its causes and contexts)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _error_message(response: httpx.Response) -> str:
    """vLLM's message in an error answer: OpenAI's nested ``{"error": {"message"}}``, a flat
    ``{"message"}`` or ``{"error": "..."}``, FastAPI's ``{"detail"}`` (a string or a list of
    validation errors), or the start of the text."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else "(no message)"
    if isinstance(body, dict):
        inner = body.get("error")
        for holder in (inner, body):
            if isinstance(holder, dict):
                for field in ("message", "detail"):
                    value = holder.get(field)
                    if isinstance(value, str) and value:
                        return value
        if isinstance(inner, str) and inner:
            return inner
        detail = body.get("detail")
        if isinstance(detail, list):
            messages = [str(d["msg"]) for d in detail if isinstance(d, dict) and "msg" in d]
            if messages:
                return "; ".join(messages)
    return str(body)[:300]
