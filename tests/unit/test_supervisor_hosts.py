"""The supervisor over several hosts (issue 13), against in-memory engines behind the real
multi-engine runtime: models start on their host, a host that goes away turns its models
``unreachable`` while the others keep working, a host that comes back is read again and what
runs there adopted, and ``host: any`` is placed by measured free memory, then by load.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from ryx_desktop.adapters.host_engines import build_hosts_runtime
from ryx_desktop.adapters.multi_engine import MultiEngineRuntime
from ryx_desktop.cli._output import status_table
from ryx_desktop.config import Config
from ryx_desktop.core.errors import ConfigError, HostUnreachableError
from ryx_desktop.core.gpu import GpuStatus
from ryx_desktop.core.placement import HostRoom, pick_host
from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import VirtualClock, settle
from tests.support.host_fakes import GIB, FakePorts, FixedGpus, FlakyEngine, HostsHealth

pytestmark = pytest.mark.asyncio

REMOTE = "gpu2"
DOWN = "no Docker engine answers at ssh://me@box2"


def config(**extra_models: dict[str, object]) -> Config:
    return Config.model_validate(
        {
            "hosts": {REMOTE: {"url": "ssh://me@box2"}},
            "models": {
                "a": {"model": "/models/a", "port": 8001, "devices": "none"},
                "b": {"model": "/models/b", "port": 8002, "devices": "none", "host": REMOTE},
                **extra_models,
            },
        }
    )


@dataclass
class Rig:
    sup: Supervisor
    runtime: MultiEngineRuntime[tuple[str, int]]
    local: FlakyEngine
    remote: FlakyEngine
    ports: FakePorts
    clock: VirtualClock
    heard: list[tuple[str, str | None]]
    gpus: dict[str, FixedGpus]


async def make_rig(cfg: Config) -> Rig:
    local, remote = FlakyEngine("local"), FlakyEngine(REMOTE)
    ports, clock = FakePorts(), VirtualClock()
    gpus = {"local": FixedGpus(), REMOTE: FixedGpus()}
    sup: Supervisor | None = None

    def on_host(host: str, problem: str | None) -> None:
        assert sup is not None
        sup.host_changed(host, problem)

    runtime = MultiEngineRuntime(
        {"local": local, REMOTE: remote},
        ports.open_port,
        ports.close_port,
        on_host=on_host,
        clock=clock,
    )
    sup = Supervisor(
        cfg,
        runtime,
        HostsHealth(local, remote),
        clock,
        probe_interval=1.0,
        gpu_probe=gpus["local"],
        gpu_probes={REMOTE: gpus[REMOTE]},
    )
    heard: list[tuple[str, str | None]] = []
    sup.subscribe_hosts(lambda host, problem: heard.append((host, problem)))
    return Rig(sup, runtime, local, remote, ports, clock, heard, gpus)


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    r = await make_rig(config())
    await r.sup.open()
    await settle()
    yield r
    await r.sup.close()
    await r.runtime.close()


async def test_each_model_starts_on_its_host_and_a_remote_port_is_forwarded(rig: Rig) -> None:
    assert rig.sup.hosts == ("local", REMOTE)
    assert rig.sup.host_problems == {"local": None, REMOTE: None}
    a = await rig.sup.ensure_ready("a")
    b = await rig.sup.ensure_ready("b")
    assert (a.host, b.host) == ("local", REMOTE)
    assert rig.local.by_key("a") is not None and rig.local.by_key("b") is None
    assert rig.remote.by_key("b") is not None and rig.remote.by_key("a") is None
    assert rig.ports.live == [(REMOTE, 8002)]
    table = status_table(rig.sup.instances(), rig.sup.config)
    header, row_a, row_b = table.splitlines()[:3]
    assert header.split()[:3] == ["MODEL", "HOST", "STATE"]
    assert row_a.split()[:2] == ["a", "local"] and row_b.split()[:2] == ["b", REMOTE]


async def test_a_host_away_turns_its_models_unreachable_and_the_rest_keeps_working(
    rig: Rig,
) -> None:
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("b")
    rig.remote.crash(DOWN)
    await settle()
    b = rig.sup.get("b")
    assert b.state is InstanceState.UNREACHABLE
    assert (
        b.note == f"host {REMOTE} does not answer: the engine of {REMOTE} closed its event stream"
    )
    await rig.clock.advance(1)  # the follower tries again: the engine's own reason
    await settle()
    assert rig.sup.get("b").note == f"host {REMOTE} does not answer: {DOWN}"
    assert rig.sup.host_problems[REMOTE] == DOWN
    assert (REMOTE, DOWN) in rig.heard
    assert rig.sup.get("a").state is InstanceState.READY
    assert rig.sup.engine_problem is None  # the local engine is fine
    with pytest.raises(HostUnreachableError, match=REMOTE):
        await rig.sup.ensure_ready("b")
    assert rig.sup.get("b").state is InstanceState.UNREACHABLE  # refused, not failed
    await rig.clock.advance(1)
    assert rig.sup.get("a").state is InstanceState.READY


async def test_a_model_whose_server_answers_is_served_while_its_engine_is_away(rig: Rig) -> None:
    b = await rig.sup.ensure_ready("b")
    rig.remote.crash(DOWN)
    await settle()
    assert rig.sup.get("b").state is InstanceState.UNREACHABLE
    assert isinstance(rig.sup._health, HostsHealth)
    rig.sup._health.serve_when_down = True  # the engine restarts; the model's server does not
    served = await rig.sup.ensure_ready("b")
    assert served.container_id == b.container_id
    assert served.state is InstanceState.UNREACHABLE  # still honest about its host
    assert rig.remote.calls.count(("start", "b")) == 1  # nothing started again


async def test_a_host_back_is_read_again_and_what_runs_there_adopted(rig: Rig) -> None:
    b = await rig.sup.ensure_ready("b")
    rig.remote.crash(DOWN)
    await settle()
    assert rig.sup.get("b").state is InstanceState.UNREACHABLE
    rig.remote.revive()
    for _ in range(6):  # the follower's backoff: 1 s, 2 s, ...
        await rig.clock.advance(2)
        await settle()
        if rig.sup.host_problems[REMOTE] is None:
            break
    assert rig.sup.host_problems[REMOTE] is None
    await settle()
    back = rig.sup.get("b")
    assert back.state is InstanceState.READY, back
    assert back.container_id == b.container_id and back.adopted
    assert back.host == REMOTE


async def test_a_container_gone_while_its_host_was_away_is_stopped(rig: Rig) -> None:
    b = await rig.sup.ensure_ready("b")
    rig.remote.crash(DOWN)
    await settle()
    assert b.container_id is not None
    del rig.remote.containers[b.container_id]
    rig.remote.revive()
    for _ in range(6):
        await rig.clock.advance(2)
        await settle()
    gone = rig.sup.get("b")
    assert gone.state is InstanceState.STOPPED
    assert gone.container_id is None
    assert f"while host {REMOTE} was unreachable" in gone.note


async def test_a_stopped_model_of_a_host_away_is_unreachable_until_it_answers(rig: Rig) -> None:
    rig.remote.crash(DOWN)
    await settle()
    assert rig.sup.get("b").state is InstanceState.UNREACHABLE
    rig.remote.revive()
    for _ in range(6):
        await rig.clock.advance(2)
        await settle()
    assert rig.sup.get("b").state is InstanceState.STOPPED
    assert rig.sup.get("b").note == f"host {REMOTE} answers again"
    assert (await rig.sup.ensure_ready("b")).state is InstanceState.READY


# ---- host: any -------------------------------------------------------------------------------


def anywhere(share: float = 0.5) -> Config:
    return config(
        c={
            "model": "/models/c",
            "port": 8003,
            "devices": [0],
            "gpu_memory_utilization": share,
            "host": "any",
        }
    )


async def test_any_goes_where_the_measured_free_memory_is() -> None:
    r = await make_rig(anywhere())
    await r.sup.open()
    try:
        assert r.sup.get("c").host == "any"
        r.gpus["local"].free = 4 * GIB  # 0.5 of 24 GiB does not fit here
        r.gpus[REMOTE].free = 20 * GIB
        c = await r.sup.ensure_ready("c")
        assert c.host == REMOTE and r.remote.by_key("c") is not None
        await r.sup.stop("c")
        assert r.sup.get("c").host == "any"  # placed again at its next start

        r.gpus["local"].free = 22 * GIB
        r.gpus[REMOTE].free = 13 * GIB  # both fit: the one with more free memory wins
        assert (await r.sup.ensure_ready("c")).host == "local"
    finally:
        await r.sup.close()
        await r.runtime.close()


async def test_any_without_readings_goes_to_the_least_loaded_host_that_answers() -> None:
    r = await make_rig(anywhere())
    await r.sup.open()
    try:
        r.gpus["local"].free = None
        r.gpus[REMOTE].free = None
        await r.sup.ensure_ready("a")  # one model runs on local, none on gpu2
        assert (await r.sup.ensure_ready("c")).host == REMOTE
        await r.sup.stop("c")
        r.remote.crash(DOWN)
        await settle()
        assert (await r.sup.ensure_ready("c")).host == "local"  # the only host answering
    finally:
        await r.sup.close()
        await r.runtime.close()


async def test_pick_host_ranks_fit_then_free_memory_then_load_then_order() -> None:
    def room(host: str, free: int | None, running: int = 0) -> HostRoom:
        gpus = None if free is None else (GpuStatus(0, "g", None, 24 * GIB, 0, free * GIB),)
        return HostRoom(host, gpus, running)

    one = frozenset({0})
    pick = pick_host([room("a", 8), room("b", 16)], gpu_indices=one, share=0.5)
    assert pick is not None and pick.host == "b"  # only b fits 12 GiB
    pick = pick_host([room("a", 20, running=3), room("b", 14)], gpu_indices=one, share=0.5)
    assert pick is not None and pick.host == "a"  # both fit: more free memory first
    pick = pick_host([room("a", None, 2), room("b", None, 1)], gpu_indices=one, share=0.5)
    assert pick is not None and pick.host == "b"  # unknown memory: the least loaded
    pick = pick_host([room("a", 2), room("b", None)], gpu_indices=one, share=0.5)
    assert pick is not None and pick.host == "a"  # measured (even too small) before unknown
    pick = pick_host([room("a", 1, 1), room("b", 1, 1)], gpu_indices=frozenset(), share=None)
    assert pick is not None and pick.host == "a"  # no GPU: load, then the config's order
    assert pick_host([], gpu_indices=one, share=0.5) is None


# ---- per host: the spec, the config, hosts not driven --------------------------------------


async def test_the_spec_takes_its_hosts_models_folder_and_image() -> None:
    cfg = Config.model_validate(
        {
            "docker": {"models_dir": "/here/models", "image": "vllm/vllm-openai:here"},
            "hosts": {REMOTE: {"url": "ssh://me@box2", "models_dir": "/srv/models",
                               "image": "vllm/vllm-openai:there"}},
            "models": {
                "b": {"model": "/models/b", "port": 8002, "host": REMOTE},
                "c": {"model": "/models/c", "port": 8003, "host": "any"},
                "d": {"model": "/models/d", "port": 8004, "host": REMOTE, "image": "mine:1"},
            },
        }
    )  # fmt: skip
    b = build_spec("b", cfg)
    assert (b.host, b.image, b.mounts[0].source) == (
        REMOTE,
        "vllm/vllm-openai:there",
        "/srv/models",
    )
    assert b.host_model_path == "/srv/models/b"
    c_here, c_there = build_spec("c", cfg), build_spec("c", cfg, host=REMOTE)
    assert (c_here.host, c_here.mounts[0].source) == ("local", "/here/models")
    assert (c_there.host, c_there.mounts[0].source) == (REMOTE, "/srv/models")
    assert c_here.spec_hash != c_there.spec_hash  # another folder is another container
    assert build_spec("d", cfg).image == "mine:1"  # the model's own image comes first


async def test_a_running_model_moved_to_another_host_keeps_running_until_restarted(
    rig: Rig,
) -> None:
    b = await rig.sup.ensure_ready("b")
    moved = config().model_copy(deep=True)
    data = moved.model_dump(mode="json", exclude_unset=True)
    data["models"]["b"]["host"] = "local"
    changed = await rig.sup.reconfigure(Config.model_validate(data))
    assert changed == ["b"]
    now = rig.sup.get("b")
    assert now.host == REMOTE and now.container_id == b.container_id and now.config_changed
    restarted = await rig.sup.restart("b")
    assert restarted.host == "local" and rig.local.by_key("b") is not None
    assert rig.remote.by_key("b") is None


async def test_a_tcp_host_is_not_driven_and_says_so() -> None:
    cfg = Config.model_validate(
        {
            "hosts": {"box": {"url": "tcp://10.0.0.9:2375", "insecure": True}},
            "models": {"t": {"model": "/models/t", "port": 8005, "devices": "none",
                             "host": "box"}},
        }
    )  # fmt: skip
    heard: list[tuple[str, str | None]] = []
    hosts = build_hosts_runtime(
        cfg, FlakyEngine("local"), on_host=lambda h, p: heard.append((h, p)), clock=VirtualClock()
    )
    sup = Supervisor(cfg, hosts.runtime, HostsHealth(FlakyEngine("local")), VirtualClock())
    try:
        listing = await hosts.runtime.list_hosts()
        assert listing.answered == ("local",)
        problem = listing.problems["box"]
        assert "tcp:// url" in problem and "not drive" in problem
        assert ("box", problem) in heard
        for host, why in heard:
            sup.host_changed(host, why)
        assert sup.get("t").state is InstanceState.UNREACHABLE
        with pytest.raises(HostUnreachableError, match="box"):
            await sup.ensure_ready("t")
    finally:
        await sup.close()
        await hosts.close()


async def test_a_host_added_while_running_says_a_restart_connects_it(rig: Rig) -> None:
    data = config().model_dump(mode="json", exclude_unset=True)
    data["hosts"]["gpu3"] = {"url": "ssh://me@box3"}
    data["models"]["e"] = {"model": "/models/e", "port": 8009, "devices": "none", "host": "gpu3"}
    await rig.sup.reconfigure(Config.model_validate(data))
    assert rig.sup.hosts == ("local", REMOTE, "gpu3")
    assert "start it again" in (rig.sup.host_problems["gpu3"] or "")
    with pytest.raises(ConfigError, match="added to the config after"):
        await rig.sup.ensure_ready("e")
