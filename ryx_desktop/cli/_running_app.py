"""Asking a running ryx-desktop (the tray app or ``serve``) what it sees, over its proxy's API.

A second process (``ryx-desktop status``) sees only what Docker shows: the app that started a
model also knows how far its start has come (its first answer included) and reads its metrics.
When an app answers ``GET /api/instances`` on the configured proxy port, with the models of the
same config, its snapshots are the ones to show; otherwise (no app, another program on the port,
another config) the caller reads Docker itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ConfigError
from ryx_desktop.core.states import Instance, instance_from_json
from ryx_desktop.proxy import resolve_api_key

#: A running app answers at once; anything slower is not one.
_TIMEOUT = 1.0
_WILDCARDS = ("0.0.0.0", "::", "")


async def instances_from_running_app(
    config: Config, environ: Mapping[str, str]
) -> list[Instance] | None:
    """The running app's snapshots, in config order; None when no app of this config answers."""
    host = config.proxy.host
    host = "127.0.0.1" if host in _WILDCARDS else host
    netloc = f"[{host}]" if ":" in host else host
    try:
        key = resolve_api_key(config.proxy.api_key, environ)
    except ConfigError:
        return None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"http://{netloc}:{config.proxy.port}/api/instances"
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT, trust_env=False) as client:
            response = await client.get(url, headers=headers)
        if response.status_code != 200:
            return None
        items = response.json()["instances"]
        found = {item["key"]: instance_from_json(item) for item in items}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if set(found) != set(config.models):
        return None  # an app of another config
    return [found[key] for key in config.models]
