"""Making room with sleep mode: GPU and host-RAM budgets, measured or by shares; idle timers."""

from __future__ import annotations

import pytest

from ryx_desktop.core.errors import BudgetExceededError
from ryx_desktop.core.gpu import GpuStatus
from ryx_desktop.core.sleep_planner import (
    ASLEEP_SHARE,
    Due,
    IdleDecision,
    ModelClaim,
    RoomAction,
    RoomPlan,
    RoomRefusedError,
    choose_level,
    idle_due,
    plan_room,
)
from ryx_desktop.core.states import InstanceState

GIB = 1024**3
READY = InstanceState.READY
SLEEPING = InstanceState.SLEEPING
STARTING = InstanceState.STARTING


def claim(key: str, share: float, gpus: set[int] | None = None, **kw: object) -> ModelClaim:
    return ModelClaim(key, frozenset({0} if gpus is None else gpus), share, **kw)  # type: ignore[arg-type]


def gpu(index: int, total_gib: float, free_gib: float) -> GpuStatus:
    return GpuStatus(
        index, "H100", total_bytes=int(total_gib * GIB), free_bytes=int(free_gib * GIB)
    )


def tuples(plan: RoomPlan) -> list[tuple[object, ...]]:
    return [a.as_tuple() for a in plan.actions]


# ---- exclusive --------------------------------------------------------------------------------


def test_exclusive_sleeps_what_can_sleep_and_stops_the_rest_on_shared_gpus_only() -> None:
    target = claim("t", 0.9)
    others = [
        claim("plain", 0.3, state=READY, last_used=5.0),
        claim("sleepy", 0.3, state=READY, last_used=9.0, sleep_mode=True, weights_bytes=8 * GIB),
        claim("elsewhere", 0.3, {1}, state=READY, sleep_mode=True),
        claim("off", 0.3, state=InstanceState.STOPPED, sleep_mode=True),
    ]
    plan = plan_room(
        target, others, policy="exclusive", headroom=0.05, available_ram_bytes=64 * GIB
    )
    assert tuples(plan) == [("stop", "plain"), ("sleep", "sleepy", 1)]
    assert plan.stops == ("plain",)
    assert plan.host_ram_bytes == 8 * GIB
    assert plan.measured_gpus == frozenset()


def test_exclusive_keeps_sleepers_asleep_while_they_fit() -> None:
    target = claim("t", 0.9)
    others = [claim("s1", 0.9, state=SLEEPING, sleep_level=1), claim("s2", 0.9, state=SLEEPING)]
    # 0.9 + 2 x 0.03 asleep <= 1.0: exclusive needs no headroom, nothing to do.
    assert plan_room(target, others, policy="exclusive", headroom=0.05).actions == ()


def test_exclusive_stops_least_recently_used_sleepers_when_their_leftovers_do_not_fit() -> None:
    target = claim("t", 0.9)
    others = [
        claim("s-new", 0.5, state=SLEEPING, last_used=40.0),
        claim("s-old", 0.5, state=SLEEPING, last_used=10.0),
        claim("s-mid", 0.5, state=SLEEPING, last_used=20.0),
        claim("s-newest", 0.5, state=SLEEPING, last_used=50.0),
    ]
    # 4 x 0.03 = 0.12 asleep + 0.9 > 1.0; stopping the oldest leaves 0.09 + 0.9 = 0.99.
    plan = plan_room(target, others, policy="exclusive", headroom=0.05)
    assert tuples(plan) == [("stop", "s-old")]


def test_exclusive_refuses_when_the_awake_model_is_busy() -> None:
    target = claim("t", 0.5, {0, 1})
    others = [
        claim("busy", 0.5, {1}, state=READY, in_flight=2, sleep_mode=True),
        claim("idle", 0.3, {0}, state=READY, sleep_mode=True),
    ]
    with pytest.raises(RoomRefusedError) as caught:
        plan_room(target, others, policy="exclusive", headroom=0.05)
    assert isinstance(caught.value, BudgetExceededError)
    assert caught.value.busy == ("busy",)
    assert caught.value.message == (
        "t cannot run on GPU 0, 1 yet: gpu.policy exclusive keeps one model awake per GPU "
        "and the awake one is busy: busy (2 in flight)."
    )
    assert "fractional" in caught.value.hint


def test_exclusive_stops_an_idle_starting_model_but_fractional_leaves_it() -> None:
    target = claim("t", 0.5)
    starting = claim("s", 0.5, state=STARTING, sleep_mode=True)
    assert tuples(plan_room(target, [starting], policy="exclusive", headroom=0.0)) == [
        ("stop", "s")
    ]
    with pytest.raises(RoomRefusedError) as caught:
        plan_room(target, [starting], policy="fractional", headroom=0.05)
    assert "held by s (starting, 50%)" in caught.value.message
    assert caught.value.busy == ()


def test_exclusive_on_measured_memory_turns_a_sleep_into_a_stop_when_the_leftover_matters() -> None:
    target = claim("t", 0.5)  # 40 of 80 GiB
    a = claim(
        "a", 0.5, state=READY, sleep_mode=True, awake_bytes={0: 40 * GIB}, asleep_bytes={0: 2 * GIB}
    )
    # Another process holds 39 GiB: 1 free; a's sleep frees 38 (39 free < 40), its stop 40 more.
    tight = plan_room(target, [a], policy="exclusive", headroom=0.0, gpus=[gpu(0, 80, 1)])
    assert tuples(tight) == [("stop", "a")]
    assert tight.measured_gpus == {0}
    # With that process gone, the sleep alone makes room.
    roomy = plan_room(
        target, [a], policy="exclusive", headroom=0.0, gpus=[gpu(0, 80, 40)], available_ram_bytes=0
    )
    assert tuples(roomy) == [("sleep", "a", 2)]


# ---- fractional -------------------------------------------------------------------------------


def test_fractional_sleeps_least_recently_used_idle_models_until_it_fits() -> None:
    target = claim("t", 0.5)
    others = [
        claim("new", 0.3, state=READY, last_used=50.0, sleep_mode=True),
        claim("old", 0.3, state=READY, last_used=10.0, sleep_mode=True),
        claim("never", 0.1, state=READY, sleep_mode=True),
    ]
    # 0.7 + 0.5 > 0.95 (short 0.25): "never" frees 0.07, then "old" 0.27.
    plan = plan_room(target, others, policy="fractional", headroom=0.05)
    assert [a.key for a in plan.sleeps] == ["never", "old"]
    assert plan.stops == ()


def test_fractional_sleeps_a_recent_model_before_stopping_an_older_one_without_sleep_mode() -> None:
    target = claim("t", 0.4)
    others = [
        claim("plain-old", 0.3, state=READY, last_used=1.0),
        claim("sleepy-new", 0.3, state=READY, last_used=90.0, sleep_mode=True),
    ]
    plan = plan_room(target, others, policy="fractional", headroom=0.05)
    assert tuples(plan) == [("sleep", "sleepy-new", 2)]


def test_fractional_stops_models_without_sleep_mode_when_sleeping_is_not_enough() -> None:
    target = claim("t", 0.6)
    others = [
        claim("plain", 0.4, state=READY, last_used=1.0),
        claim("sleepy", 0.4, state=READY, last_used=2.0, sleep_mode=True),
    ]
    # 0.8 + 0.6 - 0.95: sleeping frees 0.37 (short 0.08 left), so "plain" is stopped too.
    plan = plan_room(target, others, policy="fractional", headroom=0.05)
    assert tuples(plan) == [("sleep", "sleepy", 2), ("stop", "plain")]


def test_unhealthy_models_are_stopped_not_slept() -> None:
    target = claim("t", 0.6)
    sick = claim("sick", 0.6, state=InstanceState.UNHEALTHY, sleep_mode=True)
    assert tuples(plan_room(target, [sick], policy="fractional", headroom=0.0)) == [
        ("stop", "sick")
    ]


def test_measured_memory_of_other_processes_makes_more_models_sleep() -> None:
    target = claim("t", 0.4)  # 32 of 80 GiB, plus 4 GiB headroom
    others = [
        claim("a", 0.3, state=READY, last_used=10.0, sleep_mode=True, awake_bytes={0: 24 * GIB}),
        claim("b", 0.3, state=READY, last_used=20.0, sleep_mode=True, awake_bytes={0: 24 * GIB}),
    ]

    def plan(free_gib: float) -> list[str]:
        done = plan_room(
            target, others, policy="fractional", headroom=0.05, gpus=[gpu(0, 80, free_gib)]
        )
        return [a.key for a in done.sleeps]

    assert plan(32) == ["a"]  # nothing else on the GPU: 32 free, short 4; a's sleep frees 21.6
    assert plan(12) == ["a", "b"]  # another process holds 20 GiB
    assert plan(40) == []  # 40 free covers 32 + 4


def test_measured_memory_wins_over_shares_when_models_use_less() -> None:
    target = claim("t", 0.5)
    others = [claim("a", 0.5, state=READY, sleep_mode=True, awake_bytes={0: 20 * GIB})]
    # Shares say 0.5 + 0.5 > 0.95; NVML says 60 of 80 GiB are free.
    by_shares = plan_room(target, others, policy="fractional", headroom=0.05)
    measured = plan_room(target, others, policy="fractional", headroom=0.05, gpus=[gpu(0, 80, 60)])
    assert [a.key for a in by_shares.sleeps] == ["a"]
    assert measured.actions == ()
    assert measured.measured_gpus == {0}


def test_a_sleeping_target_needs_only_what_it_does_not_already_hold() -> None:
    asleep = claim("t", 0.4, state=SLEEPING, sleep_level=1, asleep_bytes={0: 2 * GIB})
    stopped = claim("t", 0.4)
    other = claim("a", 0.6, state=READY, sleep_mode=True, awake_bytes={0: 47 * GIB})
    reading = [gpu(0, 80, 31)]  # 32 GiB needed; a sleeping t already holds 2
    assert plan_room(asleep, [other], policy="fractional", headroom=0.0, gpus=reading).actions == ()
    assert [
        a.key
        for a in plan_room(stopped, [other], policy="fractional", headroom=0.0, gpus=reading).sleeps
    ] == ["a"]


def test_no_nvml_reading_plans_on_shares_and_measured_sleep_leftovers_scale_by_total() -> None:
    target = claim("t", 0.9)
    # total known, free unknown: shares; the sleeper's 12 of 80 GiB = 0.15 counts, 0.9 + 0.15 > 1.
    sleeper = claim("s", 0.5, state=SLEEPING, asleep_bytes={0: 12 * GIB})
    no_free = GpuStatus(0, "H100", total_bytes=80 * GIB, free_bytes=None)
    plan = plan_room(target, [sleeper], policy="exclusive", headroom=0.0, gpus=[no_free])
    assert tuples(plan) == [("stop", "s")]
    assert plan.measured_gpus == frozenset()
    # No reading at all: the leftover is the ASLEEP_SHARE estimate, which fits.
    assert ASLEEP_SHARE + 0.9 <= 1.0
    assert plan_room(target, [sleeper], policy="exclusive", headroom=0.0).actions == ()


def test_a_model_starting_on_measured_memory_is_counted_at_its_full_share() -> None:
    target = claim("t", 0.3)  # 24 of 80 GiB
    loading = claim("l", 0.5, state=STARTING, awake_bytes={0: 10 * GIB})  # will grow to 40
    sleepy = claim("a", 0.2, state=READY, sleep_mode=True, awake_bytes={0: 16 * GIB})
    # NVML sees 54 free now, but l takes 30 more: 24 left for t's 24 plus 4 headroom.
    plan = plan_room(
        target, [loading, sleepy], policy="fractional", headroom=0.05, gpus=[gpu(0, 80, 54)]
    )
    assert [a.key for a in plan.sleeps] == ["a"]


def test_stopping_models_count_as_gone() -> None:
    target = claim("t", 0.5)
    leaving = claim("x", 0.6, state=InstanceState.STOPPING, awake_bytes={0: 48 * GIB})
    assert plan_room(target, [leaving], policy="fractional", headroom=0.05).actions == ()
    measured = plan_room(
        target, [leaving], policy="fractional", headroom=0.05, gpus=[gpu(0, 80, 30)]
    )
    assert measured.actions == ()  # 30 free + 48 on their way out >= 40 + 4


def test_a_victim_on_several_gpus_frees_each_of_them() -> None:
    target = claim("t", 0.5, {0, 1})
    wide = claim("wide", 0.6, {0, 1}, state=READY, sleep_mode=True, last_used=5.0)
    narrow = claim("narrow", 0.3, {1}, state=READY, sleep_mode=True, last_used=1.0)
    plan = plan_room(target, [wide, narrow], policy="fractional", headroom=0.05)
    # GPU 0 needs wide asleep; that also makes room on GPU 1, so narrow stays awake.
    assert [a.key for a in plan.sleeps] == ["wide"]


# ---- busy models and refusals -----------------------------------------------------------------


def test_busy_models_are_never_touched_and_the_refusal_names_them() -> None:
    target = claim("t", 0.5)
    others = [
        claim("chat", 0.5, state=READY, in_flight=1, sleep_mode=True, last_used=1.0),
        claim("idle", 0.1, state=READY, sleep_mode=True, last_used=9.0),
    ]
    with pytest.raises(RoomRefusedError) as caught:
        plan_room(target, others, policy="fractional", headroom=0.05)
    assert caught.value.busy == ("chat",)
    assert caught.value.message == (
        "t needs 50% of GPU 0 but only 45% can be made free there "
        "(held by chat (busy, 50%); 5% headroom kept)."
    )
    assert caught.value.hint.startswith("Wait for busy models")


def test_a_busy_sleeper_waiting_for_its_wake_is_not_stopped() -> None:
    target = claim("t", 0.98)
    waking = claim("w", 0.5, state=SLEEPING, in_flight=3)
    with pytest.raises(RoomRefusedError) as caught:
        plan_room(target, [waking], policy="exclusive", headroom=0.0)
    assert caught.value.busy == ("w",)


def test_measured_refusal_reports_gib_and_other_processes() -> None:
    target = claim("t", 0.5)  # 40 of 80 GiB
    busy = claim("busy", 0.3, state=READY, in_flight=1, awake_bytes={0: 24 * GIB})
    # 16 of 80 GiB free: the busy model holds 24, other processes the other 40.
    with pytest.raises(RoomRefusedError) as caught:
        plan_room(target, [busy], policy="fractional", headroom=0.05, gpus=[gpu(0, 80, 16)])
    assert caught.value.message == (
        "t needs 40.0 GiB of GPU 0 but only 12.0 GiB can be made free there "
        "(held by busy (busy, 24.0 GiB); other processes hold 40.0 GiB; 5% headroom kept)."
    )
    # Without the busy model in the way, only other processes are named.
    with pytest.raises(RoomRefusedError) as alone:
        plan_room(target, [], policy="exclusive", headroom=0.05, gpus=[gpu(0, 80, 16)])
    assert alone.value.busy == ()
    assert "(other processes hold 64.0 GiB)" in alone.value.message


# ---- host RAM and levels ----------------------------------------------------------------------


def two_sleepers(
    weights_a: int | None, weights_b: int | None
) -> tuple[ModelClaim, list[ModelClaim]]:
    target = claim("t", 0.9)
    return target, [
        claim("a", 0.4, state=READY, sleep_mode=True, last_used=1.0, weights_bytes=weights_a),
        claim("b", 0.4, state=READY, sleep_mode=True, last_used=2.0, weights_bytes=weights_b),
    ]


def test_level_1_while_the_summed_weights_fit_in_host_ram_then_level_2() -> None:
    target, others = two_sleepers(14 * GIB, 14 * GIB)
    tight = plan_room(
        target, others, policy="exclusive", headroom=0.0, available_ram_bytes=20 * GIB
    )
    assert tuples(tight) == [("sleep", "a", 1), ("sleep", "b", 2)]
    assert tight.host_ram_bytes == 14 * GIB
    roomy = plan_room(
        target, others, policy="exclusive", headroom=0.0, available_ram_bytes=28 * GIB
    )
    assert tuples(roomy) == [("sleep", "a", 1), ("sleep", "b", 1)]
    assert roomy.host_ram_bytes == 28 * GIB


def test_a_smaller_model_still_gets_level_1_after_a_bigger_one_did_not_fit() -> None:
    target, others = two_sleepers(40 * GIB, 6 * GIB)
    plan = plan_room(target, others, policy="exclusive", headroom=0.0, available_ram_bytes=20 * GIB)
    assert tuples(plan) == [("sleep", "a", 2), ("sleep", "b", 1)]
    assert plan.host_ram_bytes == 6 * GIB


def test_unknown_weights_or_unknown_ram_mean_level_2() -> None:
    target, others = two_sleepers(None, 4 * GIB)
    plan = plan_room(target, others, policy="exclusive", headroom=0.0, available_ram_bytes=64 * GIB)
    assert tuples(plan) == [("sleep", "a", 2), ("sleep", "b", 1)]
    no_ram = plan_room(target, others, policy="exclusive", headroom=0.0)
    assert [a.level for a in no_ram.sleeps] == [2, 2]
    assert no_ram.host_ram_bytes == 0


def test_choose_level() -> None:
    assert choose_level(8 * GIB, 8 * GIB) == 1
    assert choose_level(8 * GIB + 1, 8 * GIB) == 2
    assert choose_level(None, 8 * GIB) == 2
    assert choose_level(8 * GIB, None) == 2


# ---- odds and ends ----------------------------------------------------------------------------


def test_nothing_to_plan_for_an_awake_or_gpu_less_target() -> None:
    others = [claim("a", 0.9, state=READY)]
    assert (
        plan_room(claim("t", 0.5, state=READY), others, policy="exclusive", headroom=0).actions
        == ()
    )
    assert plan_room(claim("t", 0.5, set()), others, policy="exclusive", headroom=0).actions == ()
    with pytest.raises(ValueError, match="unknown gpu policy"):
        plan_room(claim("t", 0.5), others, policy="greedy", headroom=0.0)


def test_never_used_models_go_first_and_ties_break_by_key() -> None:
    target = claim("t", 0.9)
    others = [
        claim("used", 0.3, state=READY, sleep_mode=True, last_used=1.0),
        claim("zeta", 0.3, state=READY, sleep_mode=True),
        claim("alpha", 0.3, state=READY, sleep_mode=True),
    ]
    plan = plan_room(target, others, policy="exclusive", headroom=0.0)
    assert [a.key for a in plan.actions] == ["alpha", "zeta", "used"]


def test_action_tuples() -> None:
    assert RoomAction("sleep", "a", 1).as_tuple() == ("sleep", "a", 1)
    assert RoomAction("stop", "a").as_tuple() == ("stop", "a")


# ---- idle timers ------------------------------------------------------------------------------


def due(**kw: object) -> IdleDecision:
    base: dict[str, object] = {
        "state": READY,
        "in_flight": 0,
        "sleep_mode": True,
        "last_used": 100.0,
        "asleep_since": None,
        "now": 700.0,
        "idle_ttl": 600.0,
        "sleep_ttl": 3600.0,
    }
    base.update(kw)
    return idle_due(**base)  # type: ignore[arg-type]


def test_idle_ttl_sleeps_a_sleep_mode_model_and_stops_one_without() -> None:
    assert due() == IdleDecision(Due.SLEEP, 0.0)
    assert due(sleep_mode=False) == IdleDecision(Due.STOP, 0.0)
    assert due(now=400.0) == IdleDecision(Due.NOTHING, 300.0)
    assert due(in_flight=1) == IdleDecision(Due.NOTHING)
    assert due(idle_ttl=None) == IdleDecision(Due.NOTHING)
    assert due(last_used=None) == IdleDecision(Due.NOTHING)


def test_sleep_ttl_counts_from_falling_asleep_not_from_last_use() -> None:
    asleep = {"state": SLEEPING, "last_used": 0.0, "asleep_since": 3000.0}
    assert due(**asleep, now=4000.0) == IdleDecision(Due.NOTHING, 2600.0)
    assert due(**asleep, now=6600.0) == IdleDecision(Due.STOP, 0.0)
    assert due(**asleep, now=6600.0, sleep_ttl=None) == IdleDecision(Due.NOTHING)
    assert due(**asleep, now=6600.0, in_flight=1) == IdleDecision(Due.NOTHING)


def test_other_states_are_never_due() -> None:
    for state in (STARTING, InstanceState.STOPPED, InstanceState.UNHEALTHY, InstanceState.FAILED):
        assert due(state=state, now=1e9).due is Due.NOTHING
