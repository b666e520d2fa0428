"""``ryx-desktop status`` asks a running app first: the same snapshots the app shows.

A proxy runs (as the tray app or ``serve`` runs it) in front of external models; a second
process's client reads ``GET /api/instances`` and must get back exactly the app's snapshots, in
config order, and fall back (None) whenever what answers is not this config's app.
"""

from __future__ import annotations

import dataclasses

import pytest

from ryx_desktop.cli._running_app import instances_from_running_app
from ryx_desktop.core.states import Instance, InstanceState, instance_json
from tests.proxy.helpers import external, free_port_url, make_config
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream, free_port

pytestmark = pytest.mark.asyncio

ENV = {"RYX_TEST_KEY": "sekret"}


def comparable(inst: Instance) -> dict[str, object]:
    """A snapshot minus the clock times, which only mean something inside the app."""
    return instance_json(dataclasses.replace(inst, started_at=None, last_used=None))


async def test_status_reads_the_running_apps_snapshots(alpha: FakeUpstream) -> None:
    port = free_port()
    models = {"alpha": external(alpha), "gone": {"url": free_port_url()}}
    config = make_config(models, port=port, api_key="env:RYX_TEST_KEY")
    async with running_proxy(config, environ=ENV, port=port) as proxy:
        got = await instances_from_running_app(config, ENV)
        assert got is not None
        assert [i.key for i in got] == ["alpha", "gone"]
        assert [i.state for i in got] == [InstanceState.READY, InstanceState.UNREACHABLE]
        assert [comparable(i) for i in got] == [comparable(i) for i in proxy.supervisor.instances()]

        # Not this app: a wrong key, or an app of another config.
        assert await instances_from_running_app(config, {"RYX_TEST_KEY": "wrong"}) is None
        assert await instances_from_running_app(config, {}) is None  # the key's variable unset
        other = make_config({"alpha": external(alpha)}, port=port, api_key="sekret")
        assert await instances_from_running_app(other, ENV) is None
    # No app at all.
    assert await instances_from_running_app(config, ENV) is None
