"""Asking a running ryx-desktop (the tray app or ``serve``) what it sees, and to stop a model.

A second process (``ryx-desktop status``) sees only what Docker shows: the app that started a
model also knows how far its start has come (its first answer included) and reads its metrics.
When an app answers ``GET /api/instances`` on the configured proxy port, with the models of the
same config, its snapshots are the ones to show; otherwise (no app, another program on the port,
another config) the caller reads Docker itself.

``ryx-desktop stop`` asks such an app to stop the model (``POST /api/instances/{key}/stop``):
the app drains the model's requests and records the stop as its own. Stopped behind its back
through Docker, the app could only say the model was "stopped outside ryx-desktop".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ConfigError, RyxError
from ryx_desktop.core.states import Instance, instance_from_json
from ryx_desktop.proxy import resolve_api_key

#: A running app answers at once; anything slower is not one.
_TIMEOUT = 1.0
#: A stop drains the model's requests (up to 30 s in the app), then gives its container
#: docker.stop_timeout to end; this much more covers the rest.
_STOP_MARGIN = 60.0
_WILDCARDS = ("0.0.0.0", "::", "")
_HINT = "Look at the tray app's window; `ryx-desktop status` shows where the model is now."


@dataclass(frozen=True, slots=True)
class _App:
    """Where the running app of a config answers, and the headers it wants."""

    base: str
    headers: dict[str, str]


def _app_of(config: Config, environ: Mapping[str, str]) -> _App | None:
    host = config.proxy.host
    host = "127.0.0.1" if host in _WILDCARDS else host
    netloc = f"[{host}]" if ":" in host else host
    try:
        key = resolve_api_key(config.proxy.api_key, environ)
    except ConfigError:
        return None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return _App(f"http://{netloc}:{config.proxy.port}", headers)


async def instances_from_running_app(
    config: Config, environ: Mapping[str, str]
) -> list[Instance] | None:
    """The running app's snapshots, in config order; None when no app of this config answers."""
    app = _app_of(config, environ)
    if app is None:
        return None
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT, trust_env=False) as client:
            response = await client.get(f"{app.base}/api/instances", headers=app.headers)
        if response.status_code != 200:
            return None
        items = response.json()["instances"]
        found = {item["key"]: instance_from_json(item) for item in items}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if set(found) != set(config.models):
        return None  # an app of another config
    return [found[key] for key in config.models]


async def stop_through_running_app(
    config: Config, environ: Mapping[str, str], key: str
) -> Instance:
    """Have the running app of ``config`` stop model ``key``; its snapshot once stopped.

    The caller found the app with ``instances_from_running_app``. A stop the app could not make
    (or an app gone meanwhile) is a RyxError, with the app's own sentence and hint when it gave
    one.
    """
    app = _app_of(config, environ)
    assert app is not None, "instances_from_running_app found no app"
    timeout = httpx.Timeout(_TIMEOUT, read=config.docker.stop_timeout + _STOP_MARGIN)
    url = f"{app.base}/api/instances/{key}/stop"
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            response = await client.post(url, headers=app.headers)
        data = response.json()
        if response.status_code == 200:
            return instance_from_json(data)
        error = data["error"]
        hint = str(error.get("hint") or "")
        message = str(error["message"]).removesuffix(f". {hint}" if hint else "")
        raise RyxError(message, hint or _HINT)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise RyxError(
            f"the running ryx-desktop did not finish stopping {key} ({type(exc).__name__})",
            _HINT,
        ) from exc
