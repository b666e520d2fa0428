"""The VRAM panel with several hosts: titles name each GPU's host, and a host whose GPUs could
not be read says why above the gauges."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuVram, HostGpuProblem, ModelVram, VramReport
from ryx_desktop.ui.gauge import VramPanel, gpu_title, report_text
from ryx_desktop.ui.tray import vram_text
from tests.gui.hosts_fixtures import HOSTS_CONFIG, hosts_bridge
from tests.support.hosts_supervisor import HostsSupervisor

GIB = 1 << 30

LOCAL_GPU = GpuVram(
    index=0,
    name="NVIDIA RTX 6000",
    total_bytes=48 * GIB,
    used_bytes=8 * GIB,
    free_bytes=40 * GIB,
    models=(ModelVram("a", "a", used_bytes=8 * GIB, budget_fraction=0.3, running=True),),
)
REMOTE_GPU = GpuVram(
    index=0,
    name="NVIDIA H200",
    total_bytes=141 * GIB,
    used_bytes=70 * GIB,
    free_bytes=71 * GIB,
    models=(ModelVram("big", "big", used_bytes=70 * GIB, budget_fraction=0.5, running=True),),
    host="gpu2",
)
DOWN = HostGpuProblem("gpu3", "nvidia-smi could not be run: no route to host", "Check SSH.")


def test_titles_name_the_host_only_when_there_are_several() -> None:
    assert gpu_title(LOCAL_GPU) == "GPU 0: NVIDIA RTX 6000"
    assert gpu_title(REMOTE_GPU, with_host=True) == "gpu2 \u00b7 GPU 0: NVIDIA H200"
    assert gpu_title(GpuVram(index=1, name="GPU 1", host="gpu3"), True) == "gpu3 \u00b7 GPU 1"


def test_the_panel_shows_every_hosts_gpus_and_why_one_could_not_be_read(qtbot: QtBot) -> None:
    supervisor = HostsSupervisor(Config.model_validate(HOSTS_CONFIG))
    with hosts_bridge(supervisor) as (bridge, vram):
        panel = VramPanel(bridge)
        qtbot.addWidget(panel)
        budgets_only = GpuVram(index=0, name="GPU 0", host="gpu3")
        vram.push(
            VramReport(
                gpus=(LOCAL_GPU, REMOTE_GPU, budgets_only),
                hosts=("local", "gpu2", "gpu3"),
                host_problems=(DOWN,),
            )
        )
        assert [g.title() for g in panel.gauges()] == [
            "local \u00b7 GPU 0: NVIDIA RTX 6000",
            "gpu2 \u00b7 GPU 0: NVIDIA H200",
            "gpu3 \u00b7 GPU 0",
        ]
        assert panel.gauges()[1].accessibleName() == "gpu2 \u00b7 GPU 0: NVIDIA H200"
        assert [s.key for s in panel.gauges()[1].segments() if s.kind == "model"] == ["big"]
        assert panel.message_text() == (
            "gpu3: nvidia-smi could not be run: no route to host (Check SSH.)"
        )

        # gpu3 answers again and is read: no line, same gauges.
        vram.push(VramReport(gpus=(LOCAL_GPU, REMOTE_GPU), hosts=("local", "gpu2")))
        assert panel.message_text() == ""
        assert [g.title() for g in panel.gauges()] == [
            "local \u00b7 GPU 0: NVIDIA RTX 6000",
            "gpu2 \u00b7 GPU 0: NVIDIA H200",
        ]

        # Back to this machine alone: the titles are as they always were.
        vram.push(VramReport(gpus=(LOCAL_GPU,), hosts=("local",)))
        assert [g.title() for g in panel.gauges()] == ["GPU 0: NVIDIA RTX 6000"]


def test_no_gpu_on_any_host_shows_the_message_then_each_host() -> None:
    report = VramReport(
        message="No host's GPUs could be read",
        hint="Install the driver.",
        hosts=("local", "gpu3"),
        host_problems=(HostGpuProblem("local", "No NVIDIA GPU found"), DOWN),
    )
    assert report_text(report) == (
        "No host's GPUs could be read\nInstall the driver.\n"
        "local: No NVIDIA GPU found\n"
        "gpu3: nvidia-smi could not be run: no route to host (Check SSH.)"
    )


def test_the_tray_tooltip_sums_vram_per_host() -> None:
    def gpu(host: str, index: int, used: float, total: float) -> GpuVram:
        return GpuVram(
            index=index,
            name="g",
            total_bytes=int(total * GIB),
            used_bytes=int(used * GIB),
            host=host,
        )

    one_host = VramReport(gpus=(gpu("local", 0, 6, 24), gpu("local", 1, 2, 24)))
    assert vram_text(one_host) == "VRAM 8.0 / 48.0 GiB"
    two_hosts = VramReport(
        gpus=(gpu("local", 0, 6, 24), gpu("gpu2", 0, 30, 80), gpu("gpu2", 1, 10, 80))
    )
    assert vram_text(two_hosts) == "VRAM local 6.0 / 24.0 GiB · gpu2 40.0 / 160.0 GiB"
