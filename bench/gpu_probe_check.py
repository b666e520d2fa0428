"""Check the NVML GPU probe against ``nvidia-smi`` on a machine with an NVIDIA GPU.

``python -m bench.gpu_probe_check [--tolerance 0.03] [--util-tolerance 15]``

Reads the GPUs once with ``NvmlGpuProbe`` and once with
``nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,utilization.gpu``,
prints both side by side, and exits 1 when they disagree: another GPU count or name, a total
that differs by more than 1 %, used or free memory apart by more than ``--tolerance`` of the
total (memory moves between the two reads), or utilisation apart by more than
``--util-tolerance`` points. Exit 2 when there is nothing to compare (no driver, no
``nvidia-smi``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.core.gpu import GpuReading, GpuStatus

MIB = 1024**2
QUERY = "index,name,memory.total,memory.used,memory.free,utilization.gpu"


@dataclass(frozen=True, slots=True)
class SmiGpu:
    """One row of nvidia-smi's answer; None where it printed ``[N/A]``."""

    index: int
    name: str
    total_mib: float | None
    used_mib: float | None
    free_mib: float | None
    utilization: float | None


def parse_smi(text: str) -> list[SmiGpu]:
    """Rows of ``--format=csv,noheader,nounits`` output."""
    rows: list[SmiGpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        index, name, total, used, free, util = (cell.strip() for cell in line.split(","))
        rows.append(
            SmiGpu(int(index), name, _number(total), _number(used), _number(free), _number(util))
        )
    return rows


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def compare(
    reading: GpuReading, smi: Sequence[SmiGpu], tolerance: float, util_tolerance: float
) -> list[str]:
    """Every disagreement between the probe and nvidia-smi, as one line each."""
    problems: list[str] = []
    if len(reading.gpus) != len(smi):
        return [f"the probe saw {len(reading.gpus)} GPU(s), nvidia-smi {len(smi)}"]
    for gpu, row in zip(reading.gpus, smi, strict=True):
        where = f"GPU {row.index}"
        if gpu.index != row.index or gpu.name != row.name:
            problems.append(f"{where}: probe {gpu.index} {gpu.name!r}, nvidia-smi {row.name!r}")
        total = _mib(gpu.total_bytes)
        if total is None or row.total_mib is None:
            if total != row.total_mib:
                problems.append(f"{where}: total {total} MiB vs {row.total_mib} MiB")
            continue
        if abs(total - row.total_mib) > 0.01 * row.total_mib:
            problems.append(f"{where}: total {total:.0f} MiB vs {row.total_mib:.0f} MiB")
        allowed = tolerance * row.total_mib
        for label, ours, theirs in (
            ("used", _mib(gpu.used_bytes), row.used_mib),
            ("free", _mib(gpu.free_bytes), row.free_mib),
        ):
            if (ours is None) != (theirs is None):
                problems.append(f"{where}: {label} {ours} vs {theirs} (N/A on one side only)")
            elif ours is not None and theirs is not None and abs(ours - theirs) > allowed:
                problems.append(
                    f"{where}: {label} {ours:.0f} MiB vs {theirs:.0f} MiB "
                    f"(more than {allowed:.0f} MiB apart)"
                )
        util, theirs_util = gpu.utilization_percent, row.utilization
        if (util is None) != (theirs_util is None):
            problems.append(f"{where}: utilisation {util} vs {theirs_util}")
        elif (
            util is not None
            and theirs_util is not None
            and abs(util - theirs_util) > util_tolerance
        ):
            problems.append(f"{where}: utilisation {util:.0f} % vs {theirs_util:.0f} %")
    return problems


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None


def _row(gpu: GpuStatus) -> str:
    def show(value: float | None, unit: str) -> str:
        return "N/A" if value is None else f"{value:.0f}{unit}"

    return (
        f"{gpu.index}, {gpu.name}, {show(_mib(gpu.total_bytes), '')}, "
        f"{show(_mib(gpu.used_bytes), '')}, {show(_mib(gpu.free_bytes), '')}, "
        f"{show(gpu.utilization_percent, '')}  ({len(gpu.processes)} process(es))"
    )


async def _read() -> GpuReading:
    probe = NvmlGpuProbe(retry_every=None)
    try:
        return await probe.read()
    finally:
        await probe.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tolerance", type=float, default=0.03, help="share of total memory")
    parser.add_argument("--util-tolerance", type=float, default=15.0, help="percentage points")
    args = parser.parse_args(argv)

    reading = asyncio.run(_read())
    print("probe (MiB):")
    if reading.message:
        print(f"  {reading.message}. {reading.hint}")
    for gpu in reading.gpus:
        print(f"  {_row(gpu)}")

    smi_path = shutil.which("nvidia-smi")
    if smi_path is None:
        print("nvidia-smi: not found")
        return 2
    done = subprocess.run(
        [smi_path, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    print("nvidia-smi (MiB):")
    for line in (done.stdout or done.stderr).splitlines():
        print(f"  {line}")
    if done.returncode != 0 or not reading.gpus:
        print("nothing to compare")
        return 2

    problems = compare(reading, parse_smi(done.stdout), args.tolerance, args.util_tolerance)
    for problem in problems:
        print(f"DISAGREE {problem}")
    print("FAIL" if problems else "PASS: the probe agrees with nvidia-smi")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
