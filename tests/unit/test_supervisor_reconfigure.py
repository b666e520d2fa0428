"""Applying an edited config to a running supervisor: models appear, go, change and restart.

The real supervisor over the in-memory fakes (virtual time), plus the real proxy in front of a
fake vLLM process to show that a model added by ``reconfigure`` is routed without a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import UnknownModelError
from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock, settle
from tests.support.proxy import running_proxy
from tests.support.upstream import start_fake_upstream

pytestmark = pytest.mark.asyncio


def model(port: int, **kw: Any) -> dict[str, Any]:
    return {"model": f"/models/m{port}", "port": port, "devices": "all", **kw}


def config_of(models: dict[str, Any], **top: Any) -> Config:
    return Config.model_validate({"models": models, **top})


class Rig:
    def __init__(self, models: dict[str, Any], **top: Any) -> None:
        self.runtime = FakeRuntime()
        self.health = FakeHealth(self.runtime)
        self.clock = VirtualClock()
        self.sup = Supervisor(
            config_of(models, **top),
            self.runtime,
            self.health,
            self.clock,
            probe_interval=1.0,
            drain_timeout=30.0,
        )
        self.seen: list[Instance] = []
        self.configs: list[Config] = []
        self.selections: list[str | None] = []
        self.sup.subscribe(self.seen.append)
        self.sup.subscribe_config(self.configs.append)
        self.sup.subscribe_selection(self.selections.append)

    def stops(self) -> list[str]:
        return [k for verb, k in self.runtime.calls if verb == "stop"]


async def test_a_new_model_appears_stopped_and_config_observers_hear_of_it() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    new = config_of({"a": model(8001), "b": model(8002, aliases=["bee"])})
    changed = await rig.sup.reconfigure(new)
    assert changed == []
    assert rig.sup.config is new
    assert rig.configs == [new]
    assert [i.key for i in rig.sup.instances()] == ["a", "b"]
    b = rig.sup.get("bee")
    assert b.state is InstanceState.STOPPED and b.port == 8002
    assert b.url == "http://127.0.0.1:8002"
    assert (await rig.sup.ensure_ready("b")).state is InstanceState.READY
    await rig.sup.close()


async def test_a_new_external_model_is_watched() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    rig.health.external_up.add("http://127.0.0.1:9000")
    await rig.sup.reconfigure(config_of({"a": model(8001), "r": {"url": "http://127.0.0.1:9000"}}))
    await settle()
    assert rig.sup.get("r").state is InstanceState.READY  # probed by its monitor, unasked
    await rig.sup.close()


async def test_a_removed_running_model_is_stopped_then_forgotten() -> None:
    rig = Rig({"a": model(8001), "b": model(8002)}, gpu={"policy": "fractional"})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("b")
    await rig.sup.reconfigure(config_of({"b": model(8002)}, gpu={"policy": "fractional"}))
    assert rig.stops() == ["a"]
    assert rig.runtime.by_key("a") is None
    assert [i.key for i in rig.sup.instances()] == ["b"]
    assert rig.sup.get("b").state is InstanceState.READY  # untouched
    last_a = [i for i in rig.seen if i.key == "a"][-1]
    assert last_a.state is InstanceState.STOPPED and last_a.note == "removed from the config"
    with pytest.raises(UnknownModelError):
        rig.sup.get("a")
    rig.sup.request_finished("a")  # a request that outlived its model is ignored, not a KeyError
    await rig.sup.close()


async def test_the_selection_falls_back_to_the_new_default_when_its_model_goes() -> None:
    rig = Rig({"a": model(8001), "b": model(8002)}, default_model="a")
    await rig.sup.open()
    assert rig.sup.selected == "a"
    await rig.sup.reconfigure(config_of({"b": model(8002)}, default_model="b"))
    assert rig.sup.selected == "b"
    assert rig.selections == ["b"]
    await rig.sup.reconfigure(config_of({"c": model(8003)}))
    assert rig.sup.selected is None
    assert rig.selections == ["b", None]
    await rig.sup.close()


async def test_a_changed_default_model_becomes_the_selection() -> None:
    rig = Rig({"a": model(8001), "b": model(8002)}, default_model="a")
    await rig.sup.open()
    await rig.sup.reconfigure(config_of({"a": model(8001), "b": model(8002)}, default_model="b"))
    assert rig.sup.selected == "b" and rig.selections == ["b"]
    rig.sup.select("a")  # the user's own choice survives edits that leave the default alone
    await rig.sup.reconfigure(
        config_of({"a": model(8001, name="A"), "b": model(8002)}, default_model="b")
    )
    assert rig.sup.selected == "a"
    await rig.sup.close()


async def test_a_running_model_whose_spec_changed_keeps_its_container_until_restarted() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    new = config_of({"a": model(8005, name="Model A", aliases=["alpha"])})
    assert await rig.sup.reconfigure(new) == ["a"]
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.READY and inst.config_changed
    assert inst.note == "config changed, restart to apply"
    assert inst.name == "Model A" and inst.aliases == ("alpha",)  # shown at once
    assert inst.port == 8001 and inst.url == "http://127.0.0.1:8001"  # where it still runs
    await rig.clock.advance(5)
    assert rig.sup.get("a").state is InstanceState.READY  # still probed where it runs
    restarted = await rig.sup.restart("a")
    assert restarted.state is InstanceState.READY and not restarted.config_changed
    assert restarted.port == 8005 and restarted.url == "http://127.0.0.1:8005"
    container = rig.runtime.by_key("a")
    assert container is not None
    assert container.info.spec_hash == build_spec("a", new).spec_hash
    await rig.sup.close()


async def test_changes_outside_the_spec_need_no_restart_and_a_revert_clears_the_mark() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    renamed = config_of({"a": model(8001, name="Renamed", category="coding", aliases=["x"])})
    assert await rig.sup.reconfigure(renamed) == []
    inst = rig.sup.get("a")
    assert not inst.config_changed and inst.name == "Renamed" and inst.aliases == ("x",)
    assert await rig.sup.reconfigure(config_of({"a": model(8001, max_model_len=2048)})) == ["a"]
    assert rig.sup.get("a").config_changed
    assert await rig.sup.reconfigure(config_of({"a": model(8001)})) == []
    inst = rig.sup.get("a")
    assert not inst.config_changed and inst.note == ""
    await rig.sup.close()


async def test_a_stopped_model_takes_its_new_port_at_once() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    assert await rig.sup.reconfigure(config_of({"a": model(8009)})) == []
    inst = rig.sup.get("a")
    assert inst.port == 8009 and inst.url == "http://127.0.0.1:8009" and not inst.config_changed
    await rig.sup.close()


async def test_an_unlabelled_container_counts_as_running_the_old_spec() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.add_running("a", 8001, "/models/m8001", spec_hash=None, managed=False)
    await rig.sup.open()
    await rig.clock.advance(1)
    assert rig.sup.get("a").state is InstanceState.READY and rig.sup.get("a").adopted
    assert await rig.sup.reconfigure(config_of({"a": model(8001, name="x")})) == []
    assert await rig.sup.reconfigure(config_of({"a": model(8001, max_model_len=64)})) == ["a"]
    await rig.sup.close()


async def test_turning_a_running_model_into_an_external_one_stops_its_container() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.reconfigure(config_of({"a": {"url": "http://127.0.0.1:9100"}}))
    assert rig.stops() == ["a"] and rig.runtime.containers == {}
    inst = rig.sup.get("a")
    assert inst.external and inst.url == "http://127.0.0.1:9100" and inst.port is None
    await rig.sup.close()


async def test_a_start_waiting_for_room_uses_the_config_it_finds_when_it_builds_its_spec() -> None:
    rig = Rig({"a": model(8001), "b": model(8002)})  # exclusive: b evicts a
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    rig.sup.request_started("a")  # the eviction waits for this request (up to 30 s)
    start_b = asyncio.create_task(rig.sup.ensure_ready("b"))
    await settle()
    assert rig.sup.get("a").state is InstanceState.STOPPING
    assert await rig.sup.reconfigure(config_of({"a": model(8001), "b": model(8012)})) == []
    assert rig.sup.get("b").port == 8012
    rig.sup.request_finished("a")
    inst = await start_b
    assert inst.state is InstanceState.READY and inst.url == "http://127.0.0.1:8012"
    container = rig.runtime.by_key("b")
    assert container is not None and container.info.host_port == 8012
    await rig.sup.close()


async def test_the_proxy_routes_to_a_model_added_while_it_runs(tmp_path: Path) -> None:
    names = ("--served-model-name", "alpha-served", "beta-served")  # one server, two models
    upstream = start_fake_upstream(tmp_path, flags=names)
    try:
        alpha = {"url": upstream.url, "served_name": "alpha-served"}
        config = config_of({"alpha": alpha}, default_model="alpha")
        async with (
            running_proxy(config) as proxy,
            httpx.AsyncClient(base_url=proxy.base, timeout=10) as client,
        ):
            body = {"model": "b1", "messages": [{"role": "user", "content": "hi"}]}
            before = await client.post("/v1/chat/completions", json=body)
            assert before.headers["X-Ryx-Model"] == "alpha"  # unknown name: the selected model
            beta = {"url": upstream.url, "served_name": "beta-served", "aliases": ["b1"]}
            added = config_of({"alpha": alpha, "beta": beta}, default_model="alpha")
            await proxy.supervisor.reconfigure(added)
            after = await client.post("/v1/chat/completions", json=body)
            assert after.status_code == 200, after.text
            assert after.headers["X-Ryx-Model"] == "beta"
            assert after.json()["model"] == "beta-served"
            selected = await client.post("/api/instances/b1/select")
            assert selected.status_code == 200 and proxy.supervisor.selected == "beta"
    finally:
        upstream.stop()
