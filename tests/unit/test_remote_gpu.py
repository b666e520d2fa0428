"""The nvidia-smi GPU probe through ``local_runner``: a fake nvidia-smi on PATH, real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from ryx_desktop.adapters.remote_gpu import CommandGpuProbe, local_runner
from ryx_desktop.core.gpu import GpuProbe, GpuProcess, GpuReading
from ryx_desktop.core.nvidia_smi import APP_QUERY, GPU_QUERY, MIB, NO_GPU

UUID_A = "GPU-5f3b8c2e-1a4d-4c1b-9e7a-2b6f0d9c8a11"
UUID_B = "GPU-0d7e41b9-6c2a-4f0e-8b3d-91a5c7e2f604"
TWO_GPUS = (
    f"0, {UUID_A}, NVIDIA RTX A6000, 49140, 30000, 18540, 92, 71\n"
    f"1, {UUID_B}, NVIDIA GeForce RTX 3090, 24576, 20000, 4300, [Not Supported], 60\n"
)
APPS = f"{UUID_A}, 4242, 29000\n{UUID_B}, 5151, 19500\n{UUID_B}, 5152, [N/A]\n"

FAKE_SMI = """#!/bin/sh
# A stand-in for nvidia-smi: answers each query from files beside it and logs its arguments.
here="{here}"
echo "$*" >> "$here/calls"
case "$1" in
  --query-gpu=*) answer="$here/gpus" ;;
  --query-compute-apps=*) answer="$here/apps" ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
if [ -f "$answer.hang" ]; then echo $$ > "$here/pid"; exec sleep 60; fi
[ -f "$answer.err" ] && cat "$answer.err" >&2
[ -f "$answer" ] && cat "$answer"
exit "$(cat "$answer.exit" 2>/dev/null || echo 0)"
"""


class FakeSmi:
    """The fake's folder: what each query prints, how it exits, what it was asked."""

    def __init__(self, here: Path) -> None:
        self.here = here

    def answer(
        self, query: str, stdout: str = "", *, exit: int = 0, stderr: str = "", hang: bool = False
    ) -> None:
        (self.here / query).write_text(stdout)
        (self.here / f"{query}.exit").write_text(str(exit))
        (self.here / f"{query}.err").write_text(stderr)
        if hang:
            (self.here / f"{query}.hang").write_text("")

    def calls(self) -> list[str]:
        path = self.here / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmi:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(FAKE_SMI.format(here=bin_dir))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return FakeSmi(bin_dir)


@pytest.mark.asyncio
async def test_two_gpus_and_their_processes_through_a_real_nvidia_smi_process(
    smi: FakeSmi,
) -> None:
    smi.answer("gpus", TWO_GPUS)
    smi.answer("apps", APPS)
    probe: GpuProbe = CommandGpuProbe(local_runner)
    reading = await probe.read()
    assert reading.message == ""
    a6000, rtx3090 = reading.gpus
    assert (a6000.name, a6000.total_bytes, a6000.utilization_percent) == (
        "NVIDIA RTX A6000",
        49140 * MIB,
        92.0,
    )
    assert a6000.processes == (GpuProcess(4242, 29000 * MIB),)
    assert rtx3090.utilization_percent is None
    assert rtx3090.processes == (GpuProcess(5151, 19500 * MIB), GpuProcess(5152, None))
    # exactly the two queries, GPUs first
    assert smi.calls() == [" ".join(GPU_QUERY[1:]), " ".join(APP_QUERY[1:])]
    await probe.close()


@pytest.mark.asyncio
async def test_the_latest_answer_keeps_temperatures_and_skipped_lines(smi: FakeSmi) -> None:
    smi.answer("gpus", TWO_GPUS + "garbage\n")
    smi.answer("apps", "")
    probe = CommandGpuProbe(local_runner)
    smi_reading = await probe.read_smi()
    assert [gpu.temperature_c for gpu in smi_reading.gpus] == [71.0, 60.0]
    assert [(s.number, s.text) for s in smi_reading.skipped] == [(3, "garbage")]
    assert probe.last == smi_reading


@pytest.mark.asyncio
async def test_a_failing_nvidia_smi_is_a_reading_with_its_reason(smi: FakeSmi) -> None:
    smi.answer(
        "gpus",
        exit=9,
        stderr="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
    )
    smi.answer("apps", APPS)
    reading = await CommandGpuProbe(local_runner).read()
    assert reading.gpus == ()
    assert reading.message == (
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver."
    )
    assert reading.hint
    assert len(smi.calls()) == 1  # no process query without GPUs


@pytest.mark.asyncio
async def test_no_devices_says_no_gpu(smi: FakeSmi) -> None:
    smi.answer("gpus", "No devices were found\n", exit=6)
    reading = await CommandGpuProbe(local_runner).read()
    assert reading.gpus == () and reading.message.startswith(NO_GPU)
    assert "No devices were found" in reading.message


@pytest.mark.asyncio
async def test_a_machine_without_nvidia_smi_says_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert await local_runner(["nvidia-smi", "-L"]) == (127, "", "nvidia-smi: command not found")
    reading = await CommandGpuProbe(local_runner).read()
    assert reading == GpuReading(
        message=f"{NO_GPU} (nvidia-smi is not installed)",
        hint="Install the NVIDIA driver and check that `nvidia-smi` lists your GPU.",
    )


@pytest.mark.asyncio
async def test_a_failed_process_query_keeps_the_gpus(smi: FakeSmi) -> None:
    smi.answer("gpus", TWO_GPUS)
    smi.answer("apps", exit=15, stderr="Failed to query compute apps: Insufficient Permissions\n")
    smi_reading = await CommandGpuProbe(local_runner).read_smi()
    assert [gpu.index for gpu in smi_reading.reading.gpus] == [0, 1]
    assert all(gpu.processes == () for gpu in smi_reading.reading.gpus)
    assert smi_reading.processes_unknown.endswith("Insufficient Permissions")


@pytest.mark.asyncio
async def test_a_runner_that_never_answers_times_out() -> None:
    async def hung(argv: list[str]) -> tuple[int, str, str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reading = await CommandGpuProbe(hung, timeout=0.05).read()
    assert reading.gpus == ()
    assert reading.message == "nvidia-smi did not answer within 0.05 s"


@pytest.mark.asyncio
async def test_a_cancelled_local_run_kills_its_process(smi: FakeSmi) -> None:
    smi.answer("gpus", TWO_GPUS, hang=True)
    task = asyncio.create_task(local_runner(list(GPU_QUERY)))
    pid_file = smi.here / "pid"
    for _ in range(1000):  # until the fake has started (and says its pid)
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left behind


@pytest.mark.asyncio
async def test_a_runner_that_raises_gives_a_reading() -> None:
    async def broken(argv: list[str]) -> tuple[int, str, str]:
        raise ConnectionError("the SSH connection to box2 closed")

    reading = await CommandGpuProbe(broken).read()
    assert reading.message == "nvidia-smi could not be run: the SSH connection to box2 closed"


@pytest.mark.asyncio
async def test_a_closed_probe_runs_nothing() -> None:
    ran: list[list[str]] = []

    async def runner(argv: list[str]) -> tuple[int, str, str]:
        ran.append(argv)
        return 0, TWO_GPUS, ""

    probe = CommandGpuProbe(runner)
    assert len((await probe.read()).gpus) == 2
    await probe.close()
    assert (await probe.read()).message == "The GPU probe is closed."
    assert ran == [list(GPU_QUERY), list(APP_QUERY)]


@pytest.mark.asyncio
async def test_skipped_lines_are_logged_once_until_they_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = {"gpus": TWO_GPUS + "garbage\n"}

    async def runner(argv: list[str]) -> tuple[int, str, str]:
        return 0, answers["gpus"] if argv == list(GPU_QUERY) else "", ""

    probe = CommandGpuProbe(runner)
    with caplog.at_level(logging.WARNING, logger="ryx_desktop.adapters.remote_gpu"):
        await probe.read()
        await probe.read()
        answers["gpus"] = TWO_GPUS + "other garbage, here\n"
        await probe.read()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "gpus line 3: expected 8 comma-separated values, got 1" in warnings[0]
    assert "got 2" in warnings[1]


@pytest.mark.asyncio
async def test_local_runner_returns_status_and_both_streams() -> None:
    code, out, err = await local_runner(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (code, out, err) == (4, "out\n", "err\n")
