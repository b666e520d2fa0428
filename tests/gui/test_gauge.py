"""The VRAM gauge renders fixed reports: segment and budget geometry, labels, and a saved image."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from PySide6.QtGui import QColor
from pytestqt.qtbot import QtBot

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuVram, ModelVram, VramReport
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.gauge import (
    PALETTE,
    READING_TEXT,
    GpuGauge,
    VramPanel,
    format_gib,
    model_colours,
)
from tests.support.artifacts import artifact_path
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock

GIB = 1 << 30

CODER = ModelVram("coder", "Qwen Coder 14B", used_bytes=20 * GIB, budget_fraction=0.3, running=True)
GENERAL = ModelVram(
    "general", "Qwen 2.5 7B", used_bytes=30 * GIB, budget_fraction=0.45, running=True
)
SMALL = ModelVram("small", "Phi 3 mini", used_bytes=None, budget_fraction=0.5, running=False)

H100 = GpuVram(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    total_bytes=80 * GIB,
    used_bytes=55 * GIB,  # 20 + 30 for the models, 5 for other processes
    free_bytes=25 * GIB,
    utilization_percent=37.0,
    models=(CODER, GENERAL),
)


def gauge_for(qtbot: QtBot, gpu: GpuVram) -> GpuGauge:
    gauge = GpuGauge(gpu)
    qtbot.addWidget(gauge)
    gauge.resize(gauge.sizeHint())
    return gauge


def pixel_in(gauge: GpuGauge, x_fraction: float) -> QColor:
    """The colour painted near the top of the bar at ``x_fraction`` (clear of any text)."""
    image = gauge.grab().toImage()
    bar = gauge.bar_rect()
    ratio = image.devicePixelRatio()
    x = bar.left() + x_fraction * bar.width()
    return image.pixelColor(int(x * ratio), int((bar.top() + 2) * ratio))


def test_format_gib_and_not_available() -> None:
    assert format_gib(12 * GIB + GIB // 3) == "12.3 GiB"
    assert format_gib(0) == "0.0 GiB"
    assert format_gib(None) == "N/A"


def test_model_colours_are_distinct_and_stable() -> None:
    keys = [f"model-{i}" for i in range(len(PALETTE))]
    colours = model_colours(keys)
    assert len(set(colours.values())) == len(PALETTE)  # no clash while colours last
    assert model_colours(reversed(keys)) == colours  # order does not matter
    assert model_colours(["model-3"])["model-3"] in PALETTE
    assert model_colours(["model-3"]) == model_colours(["model-3"])


def test_segments_split_the_bar_into_models_other_and_free(qtbot: QtBot) -> None:
    gauge = gauge_for(qtbot, H100)
    segments = gauge.segments()

    assert [(s.kind, s.key) for s in segments] == [
        ("model", "coder"),
        ("model", "general"),
        ("other", None),
        ("free", None),
    ]
    assert [s.bytes for s in segments] == [20 * GIB, 30 * GIB, 5 * GIB, 25 * GIB]
    assert [s.x_start for s in segments] == pytest.approx([0.0, 0.25, 0.625, 0.6875])
    assert [s.x_end for s in segments] == pytest.approx([0.25, 0.625, 0.6875, 1.0])
    assert [s.label for s in segments] == [
        "Qwen Coder 14B 20.0 GiB",
        "Qwen 2.5 7B 30.0 GiB",
        "other processes 5.0 GiB",
        "free 25.0 GiB",
    ]
    assert segments[0].colour == gauge.colour_of("coder")
    assert segments[0].colour != segments[1].colour
    assert gauge.title() == "GPU 0: NVIDIA H100 80GB HBM3"
    assert gauge.summary() == "55.0 GiB / 80.0 GiB used, utilisation 37%"


def test_budgets_are_bracketed_side_by_side_over_their_models(qtbot: QtBot) -> None:
    gauge = gauge_for(qtbot, H100)
    marks = gauge.budget_marks()

    assert [m.key for m in marks] == ["coder", "general"]
    assert [m.x_start for m in marks] == pytest.approx([0.0, 0.3])
    assert [m.x_end for m in marks] == pytest.approx([0.3, 0.75])
    assert [m.row for m in marks] == [0, 0]
    assert [m.bytes for m in marks] == [round(0.3 * 80 * GIB), round(0.45 * 80 * GIB)]
    assert marks[0].label == "Qwen Coder 14B: planned 30% (24.0 GiB)"
    assert marks[1].colour == gauge.colour_of("general")
    assert gauge.tooltip_at(0.1).splitlines() == [
        "Qwen Coder 14B 20.0 GiB",
        "Qwen Coder 14B: planned 30% (24.0 GiB)",
    ]


def test_a_budget_that_does_not_fit_beside_the_others_starts_a_new_lane(qtbot: QtBot) -> None:
    gpu = GpuVram(
        index=1,
        name="NVIDIA A10",
        total_bytes=24 * GIB,
        used_bytes=8 * GIB,
        free_bytes=16 * GIB,
        models=(SMALL, ModelVram("coder", "Coder", 8 * GIB, 0.6, running=True)),
    )
    gauge = gauge_for(qtbot, gpu)

    marks = gauge.budget_marks()
    # The measured model comes first, as on the bar; the stopped one does not fit beside it.
    assert [(m.key, m.row, m.running) for m in marks] == [
        ("coder", 0, True),
        ("small", 1, False),
    ]
    assert marks[1].x_start == 0.0 and marks[1].x_end == pytest.approx(0.5)
    assert [s.kind for s in gauge.segments()] == ["model", "free"]  # 8 GiB are all the model's
    assert gauge.sizeHint().height() > gauge_for(qtbot, H100).sizeHint().height()


def test_unknown_values_read_not_available(qtbot: QtBot) -> None:
    gpu = GpuVram(
        index=0,
        name="Tesla T4",
        total_bytes=16 * GIB,
        used_bytes=None,
        free_bytes=None,
        utilization_percent=None,
        models=(ModelVram("coder", "Coder", used_bytes=4 * GIB, budget_fraction=0.5),),
    )
    gauge = gauge_for(qtbot, gpu)

    assert gauge.summary() == "N/A / 16.0 GiB used, utilisation N/A"
    segments = gauge.segments()
    assert [(s.kind, s.label) for s in segments] == [
        ("model", "Coder 4.0 GiB"),
        ("free", "free N/A"),
    ]
    assert segments[1].bytes is None


def test_gauge_image_shows_each_model_in_its_colour(qtbot: QtBot) -> None:
    gauge = gauge_for(qtbot, H100)
    path = artifact_path("vram-gauge.png")
    path.unlink(missing_ok=True)

    assert gauge.grab().save(str(path))

    assert path.is_file() and path.stat().st_size > 0
    for seg in gauge.segments():
        middle = (seg.x_start + seg.x_end) / 2
        assert pixel_in(gauge, middle) == QColor(seg.colour), seg.label


def test_budget_only_gauge_has_no_measured_segments_but_draws_the_budgets(
    qtbot: QtBot,
) -> None:
    stopped = ModelVram("general", "Qwen 2.5 7B", budget_fraction=0.45)
    gpu = GpuVram(index=0, name="GPU 0", models=(SMALL, stopped))
    gauge = gauge_for(qtbot, gpu)

    assert gauge.segments() == []
    marks = gauge.budget_marks()
    assert [(m.key, m.bytes) for m in marks] == [("small", None), ("general", None)]
    # 0.5 + 0.45 fit side by side in one lane
    assert [m.x_start for m in marks] == pytest.approx([0.0, 0.5])
    assert [m.x_end for m in marks] == pytest.approx([0.5, 0.95])
    assert [m.row for m in marks] == [0, 0]
    assert marks[0].label == "Phi 3 mini: planned 50%"
    assert gauge.title() == "GPU 0"
    assert gauge.summary() == "N/A / N/A used, utilisation N/A"
    # The budget is hatched into the bar in the model's colour.
    image = gauge.grab().toImage()
    bar = gauge.bar_rect()
    ratio = image.devicePixelRatio()
    row = int((bar.top() + bar.height() // 2) * ratio)
    xs = range(int(bar.left() * ratio), int((bar.left() + bar.width() * 0.4) * ratio))
    seen = {image.pixelColor(x, row).name() for x in xs}
    assert gauge.colour_of("small") in seen


# ---- the panel, fed through the real bridge ------------------------------------------------


class VramFeed:
    """A ``vram_source`` for the bridge whose reports the test pushes by hand."""

    def __init__(self) -> None:
        self.observer: Callable[[VramReport], None] | None = None

    def __call__(self, observer: Callable[[VramReport], None]) -> Callable[[], None]:
        self.observer = observer
        return self._unsubscribe

    def _unsubscribe(self) -> None:
        self.observer = None

    def push(self, report: VramReport) -> None:
        assert self.observer is not None, "the bridge did not subscribe"
        self.observer(report)


@pytest.fixture
def feed() -> VramFeed:
    return VramFeed()


@pytest.fixture
def bridge(feed: VramFeed) -> Iterator[EngineBridge]:
    config = Config.model_validate(
        {"models": {"coder": {"model": "/models/coder", "port": 8001, "devices": "all"}}}
    )
    runtime = FakeRuntime()
    supervisor = Supervisor(config, runtime, FakeHealth(runtime), VirtualClock())
    bridge = EngineBridge(supervisor, runtime, vram_source=feed)
    yield bridge
    bridge.close()
    assert feed.observer is None


def test_panel_says_it_is_reading_before_the_first_report(
    qtbot: QtBot, bridge: EngineBridge
) -> None:
    panel = VramPanel(bridge)
    qtbot.addWidget(panel)

    assert panel.message_text() == READING_TEXT
    assert panel.gauges() == []


def test_panel_keeps_one_gauge_per_gpu(qtbot: QtBot, bridge: EngineBridge, feed: VramFeed) -> None:
    panel = VramPanel(bridge)
    qtbot.addWidget(panel)
    second = GpuVram(index=1, name="NVIDIA H100 80GB HBM3", total_bytes=80 * GIB)

    with qtbot.waitSignal(bridge.vramChanged):
        feed.push(VramReport(gpus=(H100, second)))

    assert panel.message_text() == ""
    assert [g.gpu for g in panel.gauges()] == [H100, second]
    first_gauge = panel.gauges()[0]

    feed.push(VramReport(gpus=(H100,)))
    assert [g.gpu for g in panel.gauges()] == [H100]
    assert panel.gauges()[0] is first_gauge  # updated in place, not rebuilt

    panel.resize(460, panel.sizeHint().height())
    assert panel.grab().save(str(artifact_path("vram-panel.png")))


def test_panel_without_a_gpu_shows_the_message_and_the_planned_budgets(
    qtbot: QtBot, bridge: EngineBridge, feed: VramFeed
) -> None:
    panel = VramPanel(bridge)
    qtbot.addWidget(panel)
    report = VramReport(
        gpus=(GpuVram(index=0, name="GPU 0", models=(ModelVram("coder", "Coder", None, 0.3),)),),
        message="No NVIDIA GPU found",
        hint="Install the NVIDIA driver to see VRAM use; the planned budgets are shown.",
    )

    feed.push(report)

    assert panel.message_text().splitlines() == [report.message, report.hint]
    (gauge,) = panel.gauges()
    assert gauge.segments() == []
    assert [(m.key, m.fraction) for m in gauge.budget_marks()] == [("coder", 0.3)]
    panel.resize(460, panel.sizeHint().height())
    path = artifact_path("vram-panel-no-gpu.png")
    assert panel.grab().save(str(path))
    assert path.is_file()

    feed.push(VramReport(gpus=(H100,)))
    assert panel.message_text() == ""


def test_panel_shows_the_report_the_bridge_already_has(
    qtbot: QtBot, bridge: EngineBridge, feed: VramFeed
) -> None:
    feed.push(VramReport(gpus=(H100,)))

    panel = VramPanel(bridge)
    qtbot.addWidget(panel)

    assert [g.gpu for g in panel.gauges()] == [H100]
