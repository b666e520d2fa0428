"""Sleeping as a state of its own in the UI: its words, its colour, the table and the gauge.

The table tests run the real supervisor over the fake runtime with a recording ``SleepControl``
(see ``sleep_fixtures``); the gauge's layout is checked on fixed reports.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from ryx_desktop.core.gpu import GpuVram, ModelVram, VramReport
from ryx_desktop.core.states import Instance, InstanceState, Progress, ProgressPhase
from ryx_desktop.ui.gauge import VramPanel, layout_budgets, layout_segments, model_colours
from ryx_desktop.ui.icons import AMBER, GREEN, GREY, INDIGO, RED, state_colour
from ryx_desktop.ui.instances_model import (
    PROGRESS_ROLE,
    PROGRESS_TEXT_ROLE,
    Column,
    InstancesTableModel,
)
from ryx_desktop.ui.state_text import sleep_detail, state_text, state_word
from tests.gui.fixtures_engine import engine_rig, run_on_qt
from tests.gui.sleep_fixtures import SLEEP_MODELS, RecordingSleep
from tests.support.fakes import settle
from tests.support.waiting import wait_for

GIB = 1 << 30


def cell(model: InstancesTableModel, key: str, column: Column, role: int | None = None) -> Any:
    row = model.row_of(key)
    assert row is not None, f"no row for {key}"
    return model.index(row, column).data(role if role is not None else Qt.ItemDataRole.DisplayRole)


def dot_colour(model: InstancesTableModel, key: str) -> str:
    dot = cell(model, key, Column.STATE, Qt.ItemDataRole.DecorationRole).toImage()
    return str(dot.pixelColor(dot.width() // 2, dot.height() // 2).name())


def one_gpu(*models: ModelVram, used_gib: float) -> GpuVram:
    return GpuVram(
        index=0,
        name="Test GPU",
        total_bytes=80 * GIB,
        used_bytes=int(used_gib * GIB),
        free_bytes=int((80 - used_gib) * GIB),
        models=models,
    )


def test_state_words_for_sleep_going_to_sleep_and_waking() -> None:
    base = Instance(key="s", name="S", served_name="s")
    asleep = Instance(
        key="s",
        name="S",
        served_name="s",
        state=InstanceState.SLEEPING,
        sleep_level=2,
        note="asleep at level 2 (took 0.4 s)",
    )
    going = Instance(
        key="s",
        name="S",
        served_name="s",
        state=InstanceState.SLEEPING,
        note="going to sleep (level 1)",
    )
    waking = Instance(
        key="s",
        name="S",
        served_name="s",
        state=InstanceState.STARTING,
        progress=Progress(ProgressPhase.WAKE, None, "waking from sleep level 1"),
    )
    loading = Instance(
        key="s",
        name="S",
        served_name="s",
        state=InstanceState.STARTING,
        progress=Progress(ProgressPhase.LOAD, 44.6),
    )
    assert state_word(base) == "stopped"
    assert state_word(asleep) == state_text(asleep) == "sleeping (level 2)"
    assert state_word(going) == "going to sleep (level 1)"
    assert state_word(waking) == state_text(waking) == "waking"
    assert state_word(loading) == "starting"
    assert state_text(loading) == "starting 45 %"
    assert "host RAM" in sleep_detail(1)
    assert sleep_detail(1, 15 * 2**30).endswith("; holds 15.0 GiB of host RAM")
    assert "holds" not in sleep_detail(2, 15 * 2**30)  # level 2 keeps no weights
    assert "dropped" in sleep_detail(2)
    assert sleep_detail(None) == ""


def test_sleeping_has_a_colour_of_its_own() -> None:
    sleeping = state_colour(InstanceState.SLEEPING)
    assert sleeping == INDIGO
    assert sleeping.name() not in {c.name() for c in (AMBER, GREEN, GREY, RED)}
    assert state_colour(InstanceState.STARTING) == AMBER  # a wake shows as loading


def test_the_table_shows_sleeping_with_its_level_colour_and_what_it_keeps(
    qapp: QApplication,
) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        async with engine_rig(SLEEP_MODELS, sleep_control=control) as rig:
            model = InstancesTableModel(rig.bridge, clock=rig.clock.now)
            await rig.bridge.start("s")
            assert cell(model, "s", Column.STATE) == "ready"

            # On its way to sleep (its requests drain first): the note, in the sleep colour.
            gate = control.hold("sleep")
            task = rig.bridge.spawn(rig.bridge.sleep("s", 1))
            await wait_for(lambda: control.verbs() == [("sleep", 1)], "the sleep call")
            assert cell(model, "s", Column.STATE) == "going to sleep (level 1)"
            assert dot_colour(model, "s") == INDIGO.name()
            gate.set()
            await task

            inst = rig.bridge.instance("s")
            assert inst.state is InstanceState.SLEEPING and inst.sleep_level == 1
            assert cell(model, "s", Column.STATE) == "sleeping (level 1)"
            assert dot_colour(model, "s") == INDIGO.name()
            assert cell(model, "s", Column.STATE, Qt.ItemDataRole.ForegroundRole) == INDIGO
            assert cell(model, "s", Column.STATE, PROGRESS_ROLE) is None  # no bar while asleep
            tip = cell(model, "s", Column.STATE, Qt.ItemDataRole.ToolTipRole)
            assert tip.startswith("sleeping (level 1): weights kept in host RAM")
            assert "asleep at level 1" in tip  # the note, with how long it took
            # What it still holds on the GPU is what the VRAM column shows.
            rig.vram.push(
                VramReport(gpus=(one_gpu(ModelVram("s", "Sleepy 7B", int(1.4 * GIB)), used_gib=2),))
            )
            assert cell(model, "s", Column.VRAM) == "1.4 GiB"
            # A plain model stays as it was.
            assert cell(model, "p", Column.STATE) == "stopped"
            assert cell(model, "p", Column.STATE, Qt.ItemDataRole.ForegroundRole) is None

            # A wake shows as "waking" with a busy bar, in the loading colour.
            gate = control.hold("wake")
            task = rig.bridge.spawn(rig.bridge.wake("s"))
            await wait_for(lambda: ("wake", 1) in control.verbs(), "the wake call")
            await settle()
            assert cell(model, "s", Column.STATE) == "waking"
            assert cell(model, "s", Column.STATE, PROGRESS_TEXT_ROLE) == "waking"
            assert cell(model, "s", Column.STATE, PROGRESS_ROLE) == -1
            assert dot_colour(model, "s") == AMBER.name()
            progress = rig.bridge.instance("s").progress
            assert progress is not None and progress.phase is ProgressPhase.WAKE
            tip = cell(model, "s", Column.STATE, Qt.ItemDataRole.ToolTipRole)
            assert tip == f"waking: {progress.detail}"  # "waking" once, then the core's detail
            gate.set()
            await task
            assert cell(model, "s", Column.STATE) == "ready"
            assert dot_colour(model, "s") == GREEN.name()
            assert "woken from level 1" in cell(
                model, "s", Column.STATE, Qt.ItemDataRole.ToolTipRole
            )

    run_on_qt(qapp, scenario())


def test_a_sleeping_models_budget_is_a_plan_not_a_holding() -> None:
    awake = ModelVram("a", "Awake", used_bytes=30 * GIB, budget_fraction=0.4, running=True)
    asleep = ModelVram("s", "Sleepy", used_bytes=2 * GIB, budget_fraction=0.5, running=True)
    gpu = one_gpu(asleep, awake, used_gib=33)
    colours = model_colours(["a", "s"])

    # Taken for awake, the sleeper's budget sits first, over its small segment.
    marks = {m.key: m for m in layout_budgets(gpu, colours)}
    assert marks["s"].running and marks["s"].x_start == 0.0 and marks["s"].sleep_level is None

    marks = {m.key: m for m in layout_budgets(gpu, colours, {"s": 1})}
    assert marks["a"].running and marks["a"].x_start == 0.0 and marks["a"].row == 0
    sleeping = marks["s"]
    assert not sleeping.running  # drawn dashed, like a stopped model's plan
    assert sleeping.sleep_level == 1
    assert (sleeping.x_start, sleeping.row) == (0.4, 0)  # after what is held, not over it
    assert sleeping.label == "Sleepy: planned 50% (40.0 GiB), asleep (level 1)"

    # Its segment is what it still holds, and says it sleeps.
    segments = {s.key: s for s in layout_segments(gpu, colours, {"s": 1}) if s.kind == "model"}
    assert segments["s"].label == "Sleepy 2.0 GiB asleep (level 1)"
    assert segments["s"].x_end - segments["s"].x_start == 2 / 80
    assert segments["a"].label == "Awake 30.0 GiB"


def test_the_vram_panel_follows_models_falling_asleep_and_waking(qapp: QApplication) -> None:
    async def scenario() -> None:
        control = RecordingSleep()
        async with engine_rig(SLEEP_MODELS, sleep_control=control) as rig:
            await rig.bridge.start("s")
            panel = VramPanel(rig.bridge)
            try:
                model = ModelVram("s", "Sleepy 7B", 30 * GIB, budget_fraction=0.4, running=True)
                rig.vram.push(VramReport(gpus=(one_gpu(model, used_gib=30),)))
                [gauge] = panel.gauges()
                [mark] = gauge.budget_marks()
                assert mark.running and mark.sleep_level is None

                await rig.bridge.sleep("s", 2)
                [mark] = gauge.budget_marks()
                assert not mark.running and mark.sleep_level == 2
                assert "asleep (level 2)" in gauge.tooltip_at(0.01)

                await rig.bridge.wake("s")
                [mark] = gauge.budget_marks()
                assert mark.running and mark.sleep_level is None
            finally:
                panel.deleteLater()

    run_on_qt(qapp, scenario())
