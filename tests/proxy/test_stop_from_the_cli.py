"""``ryx-desktop stop`` while the app runs: the app stops the model and tells it as its own stop.

Stopped behind the app's back (Docker only), the model read "stopped outside ryx-desktop" in the
app. The CLI asks the running app of its config instead (``POST /api/instances/{key}/stop``):
the app drains the model and records why it stopped. The config's Docker engine is an address
where nothing answers, so a stop that went past the app would fail rather than touch Docker.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ryx_desktop.cli._commands import run
from ryx_desktop.config import Config, save_config
from ryx_desktop.core.errors import UnknownModelError
from ryx_desktop.core.states import InstanceState
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream, free_port

pytestmark = pytest.mark.asyncio

ENV = {"RYX_TEST_KEY": "sekret"}


def config_for(upstream: FakeUpstream, port: int, tmp: Path) -> Config:
    """Model ``m`` is managed (the fake runtime "runs" it) and served by the fake vLLM."""
    return Config.model_validate(
        {
            "proxy": {"port": port, "api_key": "env:RYX_TEST_KEY"},
            "docker": {"host": f"unix://{tmp}/no-docker.sock"},
            "models": {
                "m": {
                    "model": "/models/m",
                    "port": upstream.port,
                    "served_name": upstream.served_name,
                    "aliases": ["em"],
                    "devices": "none",
                },
            },
        }
    )


async def test_the_cli_stop_is_the_running_apps_own_stop(
    alpha: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = config_for(alpha, port, tmp_path)
    path = tmp_path / "config.yaml"
    save_config(config, path)

    async def stop(name: str) -> int:
        args = argparse.Namespace(command="stop", model=name, config=str(path))
        return await run(args, ENV)

    async with running_proxy(config, environ=ENV, port=port) as proxy:
        sup = proxy.supervisor
        await sup.ensure_ready("m")
        assert sup.get("m").state is InstanceState.READY

        assert await stop("em") == 0  # by alias, as the CLI takes it
        assert capsys.readouterr().out == "m stopped\n"
        inst = sup.get("m")
        assert inst.state is InstanceState.STOPPED and inst.container_id is None
        assert inst.note == "stopped through the control API"
        assert "outside" not in inst.note

        assert await stop("m") == 0  # nothing runs: nothing to ask
        assert capsys.readouterr().out == "m is not running\n"
        with pytest.raises(UnknownModelError):
            await stop("nope")
