"""A model's state in words, the same in the tray, the table and the details pane.

Most states read as their name (``ready``, ``stopped``); sleep mode adds words of its own: a
model asleep reads ``sleeping (level 1)``, one on its way there reads as its note (``going to
sleep (level 1)``), and a wake in progress reads ``waking`` rather than ``starting``.
"""

from __future__ import annotations

from ryx_desktop.core.states import Instance, InstanceState, ProgressPhase

GOING_TO_SLEEP = "going to sleep"

#: What each sleep level leaves where (vLLM's sleep mode).
_SLEEP_DETAILS = {
    1: "weights kept in host RAM, KV cache dropped; wakes in about a second",
    2: "weights and KV cache dropped; a wake reloads the weights",
}


def asleep_level(inst: Instance) -> int | None:
    """The level ``inst`` sleeps at; None when it is awake or still on its way to sleep."""
    return inst.sleep_level if inst.state is InstanceState.SLEEPING else None


def is_waking(inst: Instance) -> bool:
    """True while a sleeping model is being woken (it shows as starting, phase ``wake``)."""
    return (
        inst.state is InstanceState.STARTING
        and inst.progress is not None
        and inst.progress.phase is ProgressPhase.WAKE
    )


def load_percent(inst: Instance) -> int | None:
    """The rounded load (or pull) percentage of a starting model; None when nothing tells."""
    if inst.state is not InstanceState.STARTING or inst.progress is None:
        return None
    percent = inst.progress.percent
    return None if percent is None else round(max(0.0, min(100.0, percent)))


def state_word(inst: Instance) -> str:
    """The state in words, without figures: ``ready``, ``waking``, ``sleeping (level 1)``.

    A model going to sleep has no level yet: its note says what is under way
    (``going to sleep (level 1)``).
    """
    if inst.state is InstanceState.SLEEPING:
        if inst.sleep_level is not None:
            return f"sleeping (level {inst.sleep_level})"
        return inst.note if inst.note.startswith(GOING_TO_SLEEP) else GOING_TO_SLEEP
    if is_waking(inst):
        return "waking"
    return inst.state.value


def state_text(inst: Instance) -> str:
    """The state in words with the load % while starting: ``starting 45 %``."""
    percent = load_percent(inst)
    word = state_word(inst)
    return f"{word} {percent} %" if percent is not None else word


def sleep_detail(level: int | None, host_ram_bytes: int | None = None) -> str:
    """What a sleep at ``level`` keeps and drops ("" for no or an unknown level), with the
    host RAM a level-1 sleep holds when it is known."""
    detail = _SLEEP_DETAILS.get(level, "") if level is not None else ""
    if detail and level == 1 and host_ram_bytes is not None:
        detail += f"; holds {host_ram_bytes / 2**30:.1f} GiB of host RAM"
    return detail
