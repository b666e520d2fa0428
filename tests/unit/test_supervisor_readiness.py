"""The supervisor's readiness against in-memory fakes: fast probing, waking on the log line or a
container's death, the first answer, the model's API key, GPU start turns, external names."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ContainerExitedError, StartTimeoutError
from ryx_desktop.core.ports import AnswerResult
from ryx_desktop.core.readiness import FirstAnswerError, parse_startup_complete
from ryx_desktop.core.states import InstanceState, instance_json
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock, settle

FAST = 0.05


def model(port: int, **kw: Any) -> dict[str, Any]:
    return {"model": f"/models/m{port}", "port": port, "devices": "all", **kw}


class Rig:
    def __init__(self, models: dict[str, Any], *, poll: float = FAST, **top: Any) -> None:
        self.config = Config.model_validate({"models": models, **top})
        self.runtime = FakeRuntime()
        self.health = FakeHealth(self.runtime)
        self.clock = VirtualClock()
        self.sup = Supervisor(
            self.config,
            self.runtime,
            self.health,
            self.clock,
            probe_interval=2.0,
            ready_poll_interval=poll,
            exit_check_interval=1.0,
        )

    def starts(self) -> list[str]:
        return [k for verb, k in self.runtime.calls if verb == "start"]

    def serve(self, key: str) -> None:
        container = self.runtime.by_key(key)
        assert container is not None
        container.serving = True


@pytest.mark.asyncio
async def test_fast_probing_sees_ready_within_one_fast_interval() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(3.0)
    assert rig.sup.get("a").state is InstanceState.STARTING
    rig.serve("a")
    since = rig.clock.now()
    await rig.clock.advance(FAST)
    inst = await task
    assert inst.state is InstanceState.READY
    assert inst.started_at is not None and inst.started_at - since <= FAST + 1e-9
    await rig.sup.close()


@pytest.mark.asyncio
async def test_the_container_is_inspected_on_a_slower_cadence_than_the_probes() -> None:
    rig = Rig({"a": model(8001)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await settle()
    probes, inspects = rig.health.probes, rig.runtime.inspects
    await rig.clock.advance(10.0)
    assert rig.health.probes - probes >= 190  # every 50 ms
    assert rig.runtime.inspects - inspects <= 11  # every second
    task.cancel()
    await rig.sup.close()


@pytest.mark.asyncio
async def test_the_startup_line_in_the_log_wakes_the_wait_at_once() -> None:
    rig = Rig({"a": model(8001)}, poll=60.0)  # the poll alone would take a minute
    rig.runtime.behaviour["a"] = "slow"
    rig.runtime.live_logs = True
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(1.0)
    assert rig.sup.get("a").state is InstanceState.STARTING
    rig.serve("a")
    container = rig.runtime.by_key("a")
    assert container is not None
    before = rig.clock.now()
    rig.runtime.write_log(
        container.info.id, "(APIServer pid=1) INFO:     Application startup complete."
    )
    await settle()
    assert task.done()
    inst = task.result()
    assert inst.state is InstanceState.READY and inst.started_at == before
    await rig.sup.close()


def test_startup_lines_of_vllm_old_and_new() -> None:
    assert parse_startup_complete(
        "(APIServer pid=7) INFO 12-01 10:21:22 [api_server.py:1] Starting vLLM server on http://0.0.0.0:8000"
    )
    assert parse_startup_complete("INFO:     Application startup complete.")
    assert parse_startup_complete("INFO:     Uvicorn running on http://0.0.0.0:8000")
    assert not parse_startup_complete("Route: /v1/models, Methods: GET")


@pytest.mark.asyncio
async def test_a_docker_die_event_wakes_the_wait_before_the_next_inspect() -> None:
    rig = Rig({"a": model(8001)}, poll=60.0)
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(1.5)
    container = rig.runtime.by_key("a")
    assert container is not None
    rig.runtime.exit(container.info.id, 1)
    await settle()
    assert task.done()
    with pytest.raises(ContainerExitedError):
        task.result()
    assert rig.sup.get("a").state is InstanceState.FAILED
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_start_that_never_gets_ready_names_the_last_probe_error() -> None:
    rig = Rig({"a": model(8001, start_timeout=2)})
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(3.0)
    with pytest.raises(StartTimeoutError, match=r"not ready after 2 s \(last probe: connection"):
        await task
    await rig.sup.close()


# ---- the first answer -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ready_only_after_a_first_answer() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    inst = await rig.sup.ensure_ready("a")
    assert inst.state is InstanceState.READY
    assert rig.health.first_answers == ["/models/m8001"]
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_failed_first_answer_is_failed_with_vllms_reason_and_the_log() -> None:
    rig = Rig({"a": model(8001)})
    rig.health.answers["/models/m8001"] = AnswerResult(
        ok=False, status=500, error="HTTP 500: EngineCore encountered an issue."
    )
    await rig.sup.open()
    task = asyncio.create_task(rig.sup.ensure_ready("a"))
    await rig.clock.advance(6.0)  # the server stays up: the grace for its exit runs out
    with pytest.raises(FirstAnswerError, match="could not answer its first request: HTTP 500"):
        await task
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.FAILED and inst.failure is not None
    assert "EngineCore encountered an issue" in inst.failure.message
    assert inst.failure.log_tail and "first_answer_check" in inst.failure.hint
    assert inst.failure.hint.startswith("`ryx-desktop logs a` shows the engine's error")
    assert rig.runtime.containers == {}  # stopped: it must not hold its GPU
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_first_answer_that_kills_the_engine_is_that_exit() -> None:
    rig = Rig({"a": model(8001)})
    rig.health.answers["/models/m8001"] = AnswerResult(ok=False, error="server disconnected")

    def die(served: str) -> None:
        container = rig.runtime.by_key("a")
        assert container is not None
        rig.runtime.write_log(
            container.info.id,
            "(EngineCore pid=9) ERROR Unsupported CPU attention configuration: head_dim=16 isa=2",
        )
        rig.runtime.exit(container.info.id, 1)

    rig.health.on_first_answer = die
    await rig.sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await rig.sup.ensure_ready("a")
    assert caught.value.exit_code == 1
    inst = rig.sup.get("a")
    assert inst.state is InstanceState.FAILED and inst.failure is not None
    assert any("head_dim=16" in line for line in inst.failure.log_tail)
    await rig.sup.close()


@pytest.mark.asyncio
async def test_first_answer_check_off_at_the_top_on_for_one_model() -> None:
    rig = Rig(
        {"a": model(8001), "b": model(8002, first_answer_check=True)},
        first_answer_check=False,
        gpu={"policy": "fractional"},
    )
    for key in ("a", "b"):
        rig.config.models[key]  # both configured
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    assert rig.health.first_answers == []
    await rig.sup.ensure_ready("b")
    assert rig.health.first_answers == ["/models/m8002"]
    await rig.sup.close()


def test_first_answer_check_is_not_for_external_models() -> None:
    with pytest.raises(ValueError, match="first_answer_check"):
        Config.model_validate(
            {"models": {"r": {"url": "http://127.0.0.1:9000", "first_answer_check": False}}}
        )


# ---- the model's API key -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"extra_args": ["--api-key", "s3cret", "--enforce-eager"]},
        {"extra_args": ["--api-key=s3cret"]},
        {"env": {"VLLM_API_KEY": "s3cret"}},
    ],
)
@pytest.mark.asyncio
async def test_probes_send_the_models_api_key_and_snapshots_never_show_it(
    settings: dict[str, Any],
) -> None:
    rig = Rig({"a": model(8001, **settings)})
    await rig.sup.open()
    inst = await rig.sup.ensure_ready("a")  # the fake hides its models from keyless probes
    assert inst.state is InstanceState.READY
    await rig.clock.advance(2.5)  # the monitor probes and reads metrics too
    kinds = {what for what, _ in rig.health.keys_sent}
    assert kinds == {"probe", "first_answer", "metrics"}
    assert {key for _, key in rig.health.keys_sent} == {"s3cret"}
    assert rig.sup.upstream_api_key("a") == "s3cret"
    assert "s3cret" not in repr(rig.sup.get("a")) + repr(instance_json(rig.sup.get("a")))
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_model_without_a_key_sends_none() -> None:
    rig = Rig({"a": model(8001)})
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    assert {key for _, key in rig.health.keys_sent} == {None}
    assert rig.sup.upstream_api_key("a") is None
    await rig.sup.close()


# ---- one start per GPU at a time ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_starts_on_one_gpu_take_turns_until_ready() -> None:
    rig = Rig(
        {
            "a": model(8001, devices=[0], gpu_memory_utilization=0.4),
            "b": model(8002, devices=[0], gpu_memory_utilization=0.4),
        },
        gpu={"policy": "fractional"},
    )
    for key in ("a", "b"):
        rig.runtime.behaviour[key] = "slow"
    await rig.sup.open()
    first = asyncio.create_task(rig.sup.ensure_ready("a"))
    await settle()
    second = asyncio.create_task(rig.sup.ensure_ready("b"))
    await rig.clock.advance(2.0)
    assert rig.starts() == ["a"]
    progress = rig.sup.get("b").progress
    assert progress is not None and progress.detail == "waiting for GPU 0: a is starting on it"
    rig.serve("a")
    await rig.clock.advance(FAST)
    assert (await first).state is InstanceState.READY
    await settle()
    assert rig.starts() == ["a", "b"]
    rig.serve("b")
    await rig.clock.advance(FAST)
    assert (await second).state is InstanceState.READY
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_failed_start_lets_the_next_one_on_its_gpu_go() -> None:
    rig = Rig(
        {
            "a": model(8001, devices=[0], gpu_memory_utilization=0.4),
            "b": model(8002, devices=[0], gpu_memory_utilization=0.4),
        },
        gpu={"policy": "fractional"},
    )
    rig.runtime.behaviour["a"] = "slow"
    await rig.sup.open()
    first = asyncio.create_task(rig.sup.ensure_ready("a"))
    await settle()
    second = asyncio.create_task(rig.sup.ensure_ready("b"))
    await rig.clock.advance(0.5)
    container = rig.runtime.by_key("a")
    assert container is not None
    rig.runtime.exit(container.info.id, 1)
    await rig.clock.advance(FAST)
    with pytest.raises(ContainerExitedError):
        await first
    assert (await second).state is InstanceState.READY
    await rig.sup.close()


@pytest.mark.asyncio
async def test_models_without_a_gpu_start_side_by_side() -> None:
    rig = Rig(
        {"a": model(8001, devices="none"), "b": model(8002, devices="none")},
        gpu={"policy": "fractional"},
    )
    for key in ("a", "b"):
        rig.runtime.behaviour[key] = "slow"
    await rig.sup.open()
    tasks = [asyncio.create_task(rig.sup.ensure_ready(k)) for k in ("a", "b")]
    await rig.clock.advance(1.0)
    assert sorted(rig.starts()) == ["a", "b"]
    for task in tasks:
        task.cancel()
    await rig.sup.close()


# ---- external (url:) models ---------------------------------------------------------------------

URL = "http://127.0.0.1:9000"


async def external_rig(listed: tuple[str, ...], **settings: Any) -> Rig:
    rig = Rig({"remote": {"url": URL, **settings}})
    rig.health.external[URL] = listed
    await rig.sup.open()
    await settle()
    return rig


@pytest.mark.asyncio
async def test_an_external_server_with_one_model_teaches_its_served_name() -> None:
    rig = await external_rig(("tiny",))
    inst = rig.sup.get("remote")
    assert inst.state is InstanceState.READY and inst.served_name == "tiny"
    assert inst.metrics is not None and inst.metrics.kv_cache_usage == 0.1
    await rig.sup.close()


@pytest.mark.asyncio
async def test_an_external_server_with_several_models_asks_the_user_to_choose() -> None:
    rig = await external_rig(("a", "b"))
    inst = rig.sup.get("remote")
    assert inst.state is InstanceState.UNREACHABLE and inst.metrics is None
    assert inst.note == (
        "the server serves several models: choose one with `served_name:` (one of: a, b)"
    )
    await rig.sup.close()


@pytest.mark.asyncio
async def test_an_external_server_listing_the_key_among_others_is_ready() -> None:
    rig = await external_rig(("other", "remote"))
    inst = rig.sup.get("remote")
    assert inst.state is InstanceState.READY and inst.served_name == "remote"
    await rig.sup.close()


@pytest.mark.asyncio
async def test_an_external_served_name_it_does_not_list_is_not_ready() -> None:
    rig = await external_rig(("tiny",), served_name="big")
    inst = rig.sup.get("remote")
    assert inst.state is InstanceState.UNREACHABLE and inst.served_name == "big"
    assert "does not serve 'big' (it serves: tiny)" in inst.note
    rig.health.external[URL] = ("tiny", "big")
    await rig.clock.advance(2.0)
    assert rig.sup.get("remote").state is InstanceState.READY
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_learned_external_name_survives_a_config_change() -> None:
    rig = await external_rig(("tiny",))
    new = Config.model_validate({"models": {"remote": {"url": URL, "aliases": ["r"]}}})
    await rig.sup.reconfigure(new)
    inst = rig.sup.get("remote")
    assert inst.served_name == "tiny" and inst.aliases == ("r",)
    await rig.sup.close()
