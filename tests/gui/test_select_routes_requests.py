"""Selecting a model in the tray changes where a request naming no model goes (real proxy).

Two external models in front of two fake vLLM processes on this host (no Docker); the real
proxy and the tray share one supervisor and one qasync loop, as in the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from PySide6.QtWidgets import QApplication

from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy import ProxyServer
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.tray import TrayIcon
from tests.gui.fixtures_engine import run_on_qt
from tests.support.fakes import FakeRuntime
from tests.support.upstream import FakeUpstream, start_fake_upstream


def generations(upstream: FakeUpstream) -> list[Any]:
    """The ``model`` field of each generation request the fake received."""
    return [r["json"].get("model") for r in upstream.requests() if r["method"] == "POST"]


def test_selecting_a_model_in_the_tray_routes_requests_with_no_model(
    qapp: QApplication, tmp_path: Path
) -> None:
    alpha = start_fake_upstream(tmp_path, served_name="alpha-served")
    beta = start_fake_upstream(tmp_path, served_name="beta-served")
    config = Config.model_validate(
        {
            "default_model": "alpha",
            "models": {
                "alpha": {"url": alpha.url, "served_name": "alpha-served", "name": "Alpha"},
                "beta": {"url": beta.url, "served_name": "beta-served", "name": "Beta"},
            },
        }
    )
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def scenario() -> None:
        runtime = FakeRuntime()
        health = HttpHealthProbe()
        supervisor = Supervisor(config, runtime, health, MonotonicClock())
        await supervisor.open(watch=False)
        server = ProxyServer(config, supervisor, port=0)
        await server.start()
        bridge = EngineBridge(supervisor, runtime, proxy_url=server.url)
        tray = TrayIcon(bridge)
        try:
            async with httpx.AsyncClient(
                base_url=server.url, trust_env=False, timeout=10
            ) as client:

                async def ask() -> str:
                    response = await client.post("/chat/completions", json=body)
                    assert response.status_code == 200, response.text
                    return str(response.headers["X-Ryx-Model"])

                assert await ask() == "alpha"
                assert generations(alpha) == ["alpha-served"] and generations(beta) == []

                tray.rebuild_menu()
                beta_action = tray.action("model:beta")
                assert beta_action is not None and not beta_action.isChecked()
                beta_action.trigger()
                assert supervisor.selected == "beta"
                assert await ask() == "beta"
                assert generations(beta) == ["beta-served"]  # the model field was filled in
                assert generations(alpha) == ["alpha-served"]

                tray.rebuild_menu()
                alpha_action = tray.action("model:alpha")
                assert alpha_action is not None and not alpha_action.isChecked()
                alpha_action.trigger()
                assert await ask() == "alpha"
                assert generations(alpha) == ["alpha-served", "alpha-served"]
                assert generations(beta) == ["beta-served"]
        finally:
            bridge.close()
            await server.close()
            await supervisor.close()
            await health.close()

    try:
        run_on_qt(qapp, scenario())
    finally:
        alpha.stop()
        beta.stop()
