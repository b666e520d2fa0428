"""The supervisor against in-memory fakes: lifecycle, shared starts, policy, drain, TTL, events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core._supervisor_base import USAGE_INTERVAL
from ryx_desktop.core.errors import (
    BudgetExceededError,
    ContainerExitedError,
    ImageMissingError,
    OutOfMemoryError,
    PortInUseError,
    StartCancelledError,
    StartTimeoutError,
    UnknownModelError,
    UnreachableError,
)
from ryx_desktop.core.ports import RuntimeEvent, RuntimeEventKind
from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import Instance, InstanceState, ProgressPhase
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock, settle

pytestmark = pytest.mark.asyncio


def model(port: int, **kw: Any) -> dict[str, Any]:
    return {"model": f"/models/m{port}", "port": port, "devices": "all", **kw}


class Rig:
    def __init__(self, models: dict[str, Any], **top: Any) -> None:
        self.config = Config.model_validate({"models": models, **top})
        self.runtime = FakeRuntime()
        self.health = FakeHealth(self.runtime)
        self.clock = VirtualClock()
        self.sup = Supervisor(
            self.config,
            self.runtime,
            self.health,
            self.clock,
            probe_interval=1.0,
            unhealthy_after=3,
            drain_timeout=30.0,
        )
        self.seen: list[Instance] = []
        self.sup.subscribe(self.seen.append)

    def states(self, key: str) -> list[InstanceState]:
        out: list[InstanceState] = []
        for inst in self.seen:
            if inst.key == key and (not out or out[-1] is not inst.state):
                out.append(inst.state)
        return out

    def starts(self) -> list[str]:
        return [k for verb, k in self.runtime.calls if verb == "start"]

    def stops(self) -> list[str]:
        return [k for verb, k in self.runtime.calls if verb == "stop"]


async def test_start_reports_progress_then_ready_and_stop_removes() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(1)
    container = rig.runtime.by_key("a")
    assert container is not None
    container.serving = True
    serving_since = rig.clock.now()
    await rig.clock.advance(1)
    inst = await task
    assert inst.state is InstanceState.READY
    assert inst.container_id is not None and inst.started_at is not None
    assert serving_since < inst.started_at <= serving_since + 0.05 + 1e-9
    assert rig.states("a") == [InstanceState.STARTING, InstanceState.READY]
    load = [i.progress for i in rig.seen if i.progress and i.progress.phase is ProgressPhase.LOAD]
    percents = [p.percent for p in load if p.percent is not None]
    assert percents[0] == 0.0 and percents[-1] == 100.0 and percents == sorted(percents)
    assert load[-1].detail == "answering a first request"
    stopped = await rig.sup.stop("a")
    assert stopped.state is InstanceState.STOPPED and stopped.container_id is None
    assert rig.runtime.containers == {}
    await rig.sup.close()


async def test_start_waits_for_health_and_probes_on_the_clock() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "slow"  # running but not serving yet
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(5)
    assert rig.sup.get("a").state is InstanceState.STARTING
    container = rig.runtime.by_key("a")
    assert container is not None
    container.serving = True
    await rig.clock.advance(1)
    assert (await task).state is InstanceState.READY
    await rig.sup.close()


async def test_five_concurrent_ensure_ready_share_one_start() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    waiters = [
        asyncio.create_task(rig.sup.ensure_ready(name)) for name in ["a"] * 4 + ["/models/m8001"]
    ]
    await rig.clock.advance(2)
    container = rig.runtime.by_key("a")
    assert container is not None
    container.serving = True
    await rig.clock.advance(1)
    results = await asyncio.gather(*waiters)
    assert {r.state for r in results} == {InstanceState.READY}
    assert rig.starts() == ["a"]
    await rig.sup.close()


async def test_crash_during_load_fails_with_exit_code_and_log_tail() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "crash"
    await rig.sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await rig.sup.ensure_ready("a")
    assert not isinstance(caught.value, OutOfMemoryError)
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.FAILED
    assert inst.failure is not None and inst.failure.exit_code == 1
    assert "exited with code 1" in inst.failure.message
    assert inst.failure.log_tail[-1].startswith("RuntimeError: CUDA error")
    assert inst.failure.hint
    await rig.sup.close()


async def test_exit_137_is_reported_as_out_of_memory() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "oom"
    await rig.sup.open()
    with pytest.raises(OutOfMemoryError):
        await rig.sup.ensure_ready("a")
    failure = rig.sup.get("a").failure
    assert failure is not None and failure.exit_code == 137
    assert "out of memory" in failure.message and "gpu_memory_utilization" in failure.hint
    await rig.sup.close()


async def test_start_timeout_fails_with_log_tail_and_removes_container() -> None:
    rig = Rig({"a": model(8001, start_timeout=60)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(59)
    assert not task.done()
    await rig.clock.advance(2)
    with pytest.raises(StartTimeoutError):
        await task
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.FAILED and inst.failure is not None
    assert "not ready after 60 s" in inst.failure.message
    assert inst.failure.log_tail and rig.runtime.containers == {}
    await rig.sup.close()


async def test_errors_before_the_container_exists_fail_the_instance() -> None:
    rig = Rig({"a": model(8001), "b": model(8002)})
    rig.runtime.behaviour["a"] = "port"
    rig.runtime.missing_images.add("vllm/vllm-openai:latest")
    await rig.sup.open()
    with pytest.raises(ImageMissingError):
        await rig.sup.ensure_ready("b")
    rig.runtime.missing_images.clear()
    with pytest.raises(PortInUseError):
        await rig.sup.ensure_ready("a")
    failure = rig.sup.get("a").failure
    assert failure is not None and "8001" in failure.message and failure.hint
    await rig.sup.close()


async def test_exclusive_policy_stops_models_sharing_the_gpu_first() -> None:
    rig = Rig(
        {"a": model(8001), "b": model(8002), "cpu": model(8003, devices="none")},
        gpu={"policy": "exclusive"},
    )
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("cpu")
    await rig.sup.ensure_ready("b")
    assert rig.runtime.calls.index(("stop", "a")) < len(rig.runtime.calls) - 1
    assert rig.stops() == ["a"]
    assert rig.starts() == ["a", "cpu", "b"]
    assert rig.sup.get("a").state is InstanceState.STOPPED
    assert "make room for b" in rig.sup.get("a").note
    assert rig.sup.get("cpu").state is InstanceState.READY
    await rig.sup.close()


async def test_exclusive_policy_only_evicts_models_on_the_same_gpus() -> None:
    rig = Rig({"a": model(8001, devices=[0]), "b": model(8002, devices=[1])}, gpu={})
    rig.sup = Supervisor(rig.config, rig.runtime, rig.health, rig.clock, gpu_indices=(0, 1))
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("b")
    assert rig.stops() == []
    await rig.sup.close()


async def test_fractional_evicts_least_recently_used_idle_model() -> None:
    rig = Rig(
        {
            "a": model(8001, gpu_memory_utilization=0.4),
            "b": model(8002, gpu_memory_utilization=0.4),
            "c": model(8003, gpu_memory_utilization=0.4),
        },
        gpu={"policy": "fractional", "headroom": 0.05},
    )
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("b")
    assert rig.stops() == []  # 0.8 + 0.05 fits
    await rig.clock.advance(10)
    async with rig.sup.track_request("a"):
        pass  # a used now: b is the least recently used
    await rig.sup.ensure_ready("c")
    assert rig.stops() == ["b"]
    assert {i.key for i in rig.sup.instances() if i.state is InstanceState.READY} == {"a", "c"}
    await rig.sup.close()


async def test_fractional_refuses_when_every_model_in_the_way_is_busy() -> None:
    rig = Rig(
        {
            "a": model(8001, gpu_memory_utilization=0.5),
            "b": model(8002, gpu_memory_utilization=0.5),
        },
        gpu={"policy": "fractional"},
    )
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    rig.sup.request_started("a")
    with pytest.raises(BudgetExceededError) as caught:
        await rig.sup.ensure_ready("b")
    assert "needs 50% of GPU 0" in caught.value.message and "a (50%)" in caught.value.message
    assert rig.stops() == [] and rig.sup.get("a").state is InstanceState.READY
    assert rig.sup.get("b").state is InstanceState.FAILED
    rig.sup.request_finished("a")
    await rig.sup.close()


async def test_stop_waits_for_requests_to_drain() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    rig.sup.request_started("a")
    stopping = asyncio.create_task(rig.sup.stop("a"))
    await rig.clock.advance(5)
    assert rig.sup.get("a").state is InstanceState.STOPPING and rig.stops() == []
    rig.sup.request_finished("a")
    await settle()
    assert (await stopping).state is InstanceState.STOPPED
    assert rig.stops() == ["a"]
    await rig.sup.close()


async def test_stop_gives_up_draining_after_the_bound() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    rig.sup.request_started("a")
    stopping = asyncio.create_task(rig.sup.stop("a"))
    await rig.clock.advance(29)
    assert not stopping.done()
    await rig.clock.advance(2)
    assert (await stopping).state is InstanceState.STOPPED
    await rig.sup.close()


async def test_idle_ttl_stops_an_idle_model_but_not_a_busy_one() -> None:
    rig = Rig({"a": model(8001, idle_ttl=300), "b": model(8002, devices="none")}, idle_ttl=100)
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    await rig.sup.ensure_ready("b")
    rig.sup.request_started("b")
    await rig.clock.advance(150)
    assert rig.sup.get("a").state is InstanceState.READY  # its own TTL is 300 s
    assert rig.sup.get("b").state is InstanceState.READY  # busy
    rig.sup.request_finished("b")
    await rig.clock.advance(101)
    assert rig.sup.get("b").state is InstanceState.STOPPED
    assert rig.sup.get("b").note == "stopped after 100 s idle"
    await rig.clock.advance(100)
    assert rig.sup.get("a").state is InstanceState.STOPPED
    await rig.sup.close()


async def test_open_adopts_running_containers_without_restarting_them() -> None:
    rig = Rig({"a": model(8001), "b": model(8002, devices="none"), "c": model(8003)})
    good_hash = build_spec("a", rig.config).spec_hash
    rig.runtime.add_running("a", 8001, "/models/m8001", spec_hash=good_hash)
    rig.runtime.add_running("b", 8002, "/models/m8002", spec_hash="0000")
    rig.runtime.add_running("c", 8003, "/models/m8003", spec_hash=None, managed=False)
    await rig.sup.open()
    await rig.clock.advance(1)
    for key in "abc":
        inst = rig.sup.get(key)
        assert inst.state is InstanceState.READY and inst.adopted, key
    assert not rig.sup.get("a").config_changed and not rig.sup.get("c").config_changed
    assert rig.sup.get("b").config_changed
    assert rig.sup.get("b").note == "config changed, restart to apply"
    assert rig.starts() == []
    assert (await rig.sup.ensure_ready("a")).state is InstanceState.READY
    assert rig.starts() == []
    await rig.sup.close()


async def test_events_report_crash_outside_stop_and_outside_start() -> None:
    rig = Rig({"a": model(8001), "b": model(8002, devices="none"), "c": model(8003, devices=[])})
    await rig.sup.open()
    a = await rig.sup.ensure_ready("a")
    b = await rig.sup.ensure_ready("b")
    assert a.container_id and b.container_id
    rig.runtime.exit(a.container_id, 1)
    rig.runtime.exit(b.container_id, 0)
    cid = rig.runtime.add_running("c", 8003, "/models/m8003", spec_hash=None)
    rig.runtime.emit(RuntimeEvent(RuntimeEventKind.START, cid, "c"))
    await rig.clock.advance(1)
    assert rig.sup.get("a").state is InstanceState.FAILED
    assert rig.sup.get("b").state is InstanceState.STOPPED
    assert rig.sup.get("b").note == "stopped outside ryx-desktop"
    assert rig.sup.get("c").state is InstanceState.READY and rig.sup.get("c").adopted
    await rig.sup.close()


async def test_unhealthy_after_consecutive_failed_probes_and_recovers() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    container = rig.runtime.by_key("a")
    assert container is not None
    container.serving = False
    await rig.clock.advance(2)
    assert rig.sup.get("a").state is InstanceState.READY
    await rig.clock.advance(1)
    assert rig.sup.get("a").state is InstanceState.UNHEALTHY
    container.serving = True
    await rig.clock.advance(1)
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.READY and inst.metrics is not None
    await rig.sup.close()


async def test_external_models_are_ready_or_unreachable() -> None:
    rig = Rig({"remote": {"url": "http://127.0.0.1:9000", "aliases": ["far"]}})
    await rig.sup.open()
    await rig.clock.advance(1)
    assert rig.sup.get("remote").state is InstanceState.UNREACHABLE
    with pytest.raises(UnreachableError):
        await rig.sup.ensure_ready("far")
    rig.health.external_up.add("http://127.0.0.1:9000")
    assert (await rig.sup.ensure_ready("far")).state is InstanceState.READY
    assert rig.starts() == []
    await rig.sup.close()


async def test_models_resolve_by_key_served_name_and_alias() -> None:
    rig = Rig({"a": model(8001, served_name="qwen", aliases=["general"])})
    assert rig.sup.resolve("a") == rig.sup.resolve("qwen") == rig.sup.resolve("general") == "a"
    with pytest.raises(UnknownModelError) as caught:
        rig.sup.resolve("nope")
    assert "configured: a" in caught.value.message


async def test_request_counts_reach_snapshots_at_most_every_usage_interval() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    seen: list[int] = []
    rig.sup.subscribe(lambda inst: seen.append(inst.in_flight))
    for _ in range(5):
        rig.sup.request_started("a")
    rig.sup.request_finished("a")
    assert 4 not in seen  # nothing published yet: the proxy's hot path stays cheap
    await settle()  # the first change after a quiet spell: on the next loop iteration
    assert rig.sup.get("a").in_flight == 4
    assert rig.sup.get("a").last_used == rig.clock.now()
    assert 4 in seen and not {1, 2, 3, 5} & set(seen)  # one snapshot for six changes
    loop = asyncio.get_running_loop()
    first = loop.time()
    for _ in range(4):
        rig.sup.request_finished("a")
    await settle()
    assert rig.sup.get("a").in_flight == 4  # within USAGE_INTERVAL of the last: held back
    done = asyncio.Event()
    rig.sup.subscribe(lambda inst: done.set() if inst.in_flight == 0 else None)
    await asyncio.wait_for(done.wait(), 5)
    assert loop.time() - first >= USAGE_INTERVAL * 0.9
    assert seen[-1] == 0 and seen.count(0) == 1  # four changes, one snapshot
    await rig.sup.close()


async def test_a_start_evicted_by_another_start_fails_with_a_reason_not_a_cancellation() -> None:
    rig = Rig({"b": model(8002), "c": model(8003), "d": model(8004)}, gpu={"policy": "exclusive"})
    await rig.sup.open()
    await rig.sup.ensure_ready("b")
    # Exclusive: two starts at once on one GPU; the later one stops the other mid-start.
    results = await asyncio.gather(
        rig.sup.ensure_ready("c"), rig.sup.ensure_ready("d"), return_exceptions=True
    )
    ready = [r for r in results if isinstance(r, Instance)]
    called_off = [r for r in results if isinstance(r, BaseException)]
    assert len(ready) == 1 and ready[0].state is InstanceState.READY
    assert len(called_off) == 1 and isinstance(called_off[0], StartCancelledError)
    loser = "c" if ready[0].key == "d" else "d"
    assert f"start of {loser}" in called_off[0].message
    assert f"make room for {ready[0].key}" in called_off[0].message
    assert called_off[0].hint
    assert rig.sup.get(loser).state is InstanceState.STOPPED
    await rig.sup.close()
