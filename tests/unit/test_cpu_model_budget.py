"""A model without a GPU (``devices: none``) has no GPU budget, wherever a budget is shown.

The CLI's status table said "no GPU" while the window showed its ``gpu_memory_utilization`` as a
budget: both ask ``gpu_budget`` now, and so do the snapshots and the gauge's report.
"""

from __future__ import annotations

from dataclasses import replace

from ryx_desktop.cli._output import status_table
from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.gpu import NO_GPU, GpuProcess, GpuReading, GpuStatus, gpu_budget
from ryx_desktop.core.gpu_monitor import build_vram_report
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import configured_instance

GiB = 1024**3

CONFIG = Config.model_validate(
    {
        "models": {
            "cpu": {"model": "/m/cpu", "port": 8001, "devices": "none"},
            "empty": {"model": "/m/e", "port": 8002, "devices": []},
            "gpu": {"model": "/m/g", "port": 8003, "gpu_memory_utilization": 0.3},
        }
    }
)


def model(key: str) -> ModelConfig:
    found = CONFIG.models[key]
    assert isinstance(found, ModelConfig)
    return found


def test_only_a_model_on_a_gpu_has_a_budget() -> None:
    assert gpu_budget(model("cpu")) is None
    assert gpu_budget(model("empty")) is None
    assert gpu_budget(model("gpu")) == 0.3


def test_snapshots_carry_no_budget_for_a_cpu_model() -> None:
    assert configured_instance(CONFIG, "cpu").gpu_memory_utilization is None
    assert configured_instance(CONFIG, "gpu").gpu_memory_utilization == 0.3


def test_the_cli_says_no_gpu_for_it() -> None:
    table = status_table([configured_instance(CONFIG, k) for k in CONFIG.models], CONFIG)
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert NO_GPU in rows["cpu"] and NO_GPU in rows["empty"]
    assert "30% of all GPUs" in rows["gpu"]


def test_the_gauge_draws_no_budget_for_a_cpu_model_found_on_a_gpu() -> None:
    # A CPU model's process that shows on a GPU (a CUDA context, say) is measured, not budgeted.
    reading = GpuReading(
        gpus=(
            GpuStatus(
                index=0,
                name="GPU 0",
                total_bytes=24 * GiB,
                used_bytes=GiB,
                free_bytes=23 * GiB,
                processes=(GpuProcess(pid=100, used_bytes=GiB),),
            ),
        )
    )
    running = replace(configured_instance(CONFIG, "cpu"), state=InstanceState.READY)
    report = build_vram_report(reading, [running], {"cpu": (100,)}, CONFIG, (0,))
    found = {m.key: m for m in report.gpus[0].models}
    assert found["cpu"].used_bytes == GiB
    assert found["cpu"].budget_fraction is None
    assert found["gpu"].budget_fraction == 0.3
