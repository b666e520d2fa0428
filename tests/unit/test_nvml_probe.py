"""The NVML GPU probe against a fake ``pynvml`` that speaks NVML's real API, and the real one."""

from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys
import threading

import pynvml
import pytest

from bench.gpu_probe_check import compare, parse_smi
from ryx_desktop.adapters.nvml import NO_GPU, NO_GPU_HINT, NvmlGpuProbe
from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus
from tests.support.fake_pynvml import FakeGpu, FakeProcess, FakePynvml, GiB

NOT_AVAILABLE = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value


def two_gpus() -> FakePynvml:
    return FakePynvml(
        [
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                uuid="GPU-aaaa",
                total=24 * GiB,
                used=10 * GiB,
                reserved=GiB // 2,
                utilization=81,
                compute=[FakeProcess(4242, 7 * GiB), FakeProcess(4300, 2 * GiB)],
                graphics=[FakeProcess(1200, 300 * 1024**2), FakeProcess(4242, 7 * GiB)],
            ),
            FakeGpu(name="NVIDIA RTX A6000", uuid="GPU-bbbb", total=48 * GiB, used=0),
        ]
    )


@pytest.mark.asyncio
async def test_nvml_starts_on_the_first_read_only_and_once() -> None:
    fake = two_gpus()
    probe = NvmlGpuProbe(fake)
    assert sum(fake.calls.values()) == 0  # building the probe touches nothing
    await probe.read()
    await probe.read()
    await probe.read()
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetCount"] == 3
    await probe.close()


@pytest.mark.asyncio
async def test_memory_utilisation_and_processes_are_mapped() -> None:
    fake = two_gpus()
    probe = NvmlGpuProbe(fake)
    reading = await probe.read()
    assert reading.message == ""
    first, second = reading.gpus
    assert first == GpuStatus(
        index=0,
        name="NVIDIA GeForce RTX 4090",
        uuid="GPU-aaaa",
        total_bytes=24 * GiB,
        used_bytes=10 * GiB,  # memory info v2: the driver's reserved half GiB is not "used"
        free_bytes=24 * GiB - 10 * GiB - GiB // 2,
        utilization_percent=81.0,
        # compute and graphics lists merged; a process in both is listed once
        processes=(
            GpuProcess(1200, 300 * 1024**2),
            GpuProcess(4242, 7 * GiB),
            GpuProcess(4300, 2 * GiB),
        ),
    )
    assert (second.index, second.name, second.total_bytes, second.used_bytes) == (
        1,
        "NVIDIA RTX A6000",
        48 * GiB,
        0,
    )
    assert second.processes == ()
    await probe.close()


@pytest.mark.asyncio
async def test_a_driver_without_memory_info_v2_falls_back_to_v1_once() -> None:
    fake = FakePynvml([FakeGpu(total=8 * GiB, used=GiB, reserved=GiB)], old_memory_api=True)
    probe = NvmlGpuProbe(fake)
    (gpu,) = (await probe.read()).gpus
    await probe.read()
    assert gpu.used_bytes == 2 * GiB  # v1 counts reserved memory as used
    assert gpu.free_bytes == 6 * GiB
    # v2 tried on the first read, then v1 only: two reads, three calls.
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 3
    await probe.close()


@pytest.mark.asyncio
async def test_fields_nvml_cannot_give_are_none_not_errors() -> None:
    gpu = FakeGpu(
        compute=[FakeProcess(10, None), FakeProcess(11, NOT_AVAILABLE)],
        fail={
            "nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetName": pynvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetUUID": pynvml.NVML_ERROR_UNKNOWN,
        },
    )
    probe = NvmlGpuProbe(FakePynvml([gpu]))
    (status,) = (await probe.read()).gpus
    assert status.utilization_percent is None
    assert status.name == "GPU 0" and status.uuid is None
    assert status.total_bytes == gpu.total
    assert status.processes == (GpuProcess(10, None), GpuProcess(11, None))
    await probe.close()


@pytest.mark.asyncio
async def test_memory_and_processes_not_supported() -> None:
    gpu = FakeGpu(
        compute=[FakeProcess(10, GiB)],
        fail={
            "nvmlDeviceGetMemoryInfo": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
        },
    )
    probe = NvmlGpuProbe(FakePynvml([gpu]))
    (status,) = (await probe.read()).gpus
    assert (status.total_bytes, status.used_bytes, status.free_bytes) == (None, None, None)
    assert status.processes == ()
    assert status.utilization_percent == 37.0
    await probe.close()


@pytest.mark.asyncio
async def test_an_old_driver_lists_processes_through_the_v2_call() -> None:
    gpu = FakeGpu(
        compute=[FakeProcess(77, GiB)],
        fail={"nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND},
    )
    fake = FakePynvml([gpu])
    probe = NvmlGpuProbe(fake)
    (status,) = (await probe.read()).gpus
    assert status.processes == (GpuProcess(77, GiB),)
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1
    await probe.close()


@pytest.mark.asyncio
async def test_a_lost_gpu_is_listed_by_index_and_the_others_still_read() -> None:
    fake = two_gpus()
    fake.gpus[0].fail["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_GPU_IS_LOST
    probe = NvmlGpuProbe(fake)
    lost, fine = (await probe.read()).gpus
    assert lost == GpuStatus(index=0, name="GPU 0")
    assert fine.name == "NVIDIA RTX A6000"
    await probe.close()


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED]
)
@pytest.mark.asyncio
async def test_no_driver_says_no_nvidia_gpu_found(code: int) -> None:
    fake = FakePynvml([FakeGpu()])
    fake.fail["nvmlInit"] = code
    probe = NvmlGpuProbe(fake)
    reading = await probe.read()
    assert reading.gpus == ()
    assert reading.message == NO_GPU == "No NVIDIA GPU found"
    assert reading.hint == NO_GPU_HINT and "nvidia-smi" in reading.hint
    await probe.close()
    assert fake.calls["nvmlShutdown"] == 0  # never started, so nothing to shut down


@pytest.mark.asyncio
async def test_zero_devices_is_no_gpu_and_nvml_is_shut_down() -> None:
    fake = FakePynvml([])
    probe = NvmlGpuProbe(fake)
    reading = await probe.read()
    assert (reading.gpus, reading.message) == ((), NO_GPU)
    assert fake.calls["nvmlShutdown"] == 1 and not fake.initialised
    await probe.close()
    assert fake.calls["nvmlShutdown"] == 1


@pytest.mark.asyncio
async def test_other_init_failures_carry_nvml_s_error_string() -> None:
    fake = FakePynvml([FakeGpu()])
    fake.fail["nvmlInit"] = pynvml.NVML_ERROR_NO_PERMISSION
    reading = await NvmlGpuProbe(fake).read()
    assert reading.message == "NVML could not start: Insufficient Permissions"
    assert reading.hint


@pytest.mark.asyncio
async def test_a_failed_count_after_init_reports_the_error_and_shuts_down() -> None:
    fake = two_gpus()
    probe = NvmlGpuProbe(fake)
    assert len((await probe.read()).gpus) == 2
    fake.fail["nvmlDeviceGetCount"] = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = await probe.read()
    assert reading.message == "NVML could not count the GPUs: GPU is lost"
    assert not fake.initialised
    await probe.close()


@pytest.mark.asyncio
async def test_init_is_retried_only_every_n_reads() -> None:
    fake = FakePynvml([FakeGpu()])
    fake.fail["nvmlInit"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    probe = NvmlGpuProbe(fake, retry_every=3)
    for _ in range(4):  # one try, then three answers from memory
        assert (await probe.read()).message == NO_GPU
    assert fake.calls["nvmlInit"] == 1
    del fake.fail["nvmlInit"]  # the driver got loaded meanwhile
    reading = await probe.read()
    assert fake.calls["nvmlInit"] == 2
    assert reading.message == "" and len(reading.gpus) == 1
    await probe.close()
    assert fake.calls["nvmlShutdown"] == 1


@pytest.mark.asyncio
async def test_retry_none_never_touches_the_driver_again() -> None:
    fake = FakePynvml([FakeGpu()])
    fake.fail["nvmlInit"] = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    probe = NvmlGpuProbe(fake, retry_every=None)
    for _ in range(50):
        await probe.read()
    assert fake.calls["nvmlInit"] == 1
    await probe.close()


@pytest.mark.asyncio
async def test_close_shuts_nvml_down_and_later_reads_do_nothing() -> None:
    fake = two_gpus()
    probe = NvmlGpuProbe(fake)
    await probe.read()
    assert fake.initialised
    await probe.close()
    await probe.close()
    assert fake.calls["nvmlShutdown"] == 1 and not fake.initialised
    calls = sum(fake.calls.values())
    assert (await probe.read()).message
    assert sum(fake.calls.values()) == calls


@pytest.mark.asyncio
async def test_close_without_a_read_never_starts_nvml() -> None:
    fake = two_gpus()
    await NvmlGpuProbe(fake).close()
    assert fake.calls["nvmlInit"] == 0 and fake.calls["nvmlShutdown"] == 0


@pytest.mark.asyncio
async def test_every_nvml_call_runs_on_one_worker_thread_not_the_loop() -> None:
    fake = two_gpus()
    probe = NvmlGpuProbe(fake)
    await probe.read()
    await probe.read()
    await probe.close()
    assert threading.get_ident() not in fake.threads
    assert len(fake.threads) == 1


@pytest.mark.asyncio
async def test_a_slow_driver_does_not_block_the_event_loop() -> None:
    fake = two_gpus()
    release = threading.Event()
    count = fake.nvmlDeviceGetCount

    def slow_count() -> int:
        release.wait(10)
        return count()

    fake.nvmlDeviceGetCount = slow_count  # type: ignore[method-assign]
    probe = NvmlGpuProbe(fake)
    reading = asyncio.ensure_future(probe.read())
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not reading.done()  # the loop ran on while NVML was busy
    release.set()
    assert len((await reading).gpus) == 2
    await probe.close()


@pytest.mark.asyncio
async def test_the_real_nvml_on_this_machine() -> None:
    # No fake: the installed nvidia-ml-py against whatever driver this machine has.
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        has_driver = True
    except OSError:
        has_driver = False
    probe = NvmlGpuProbe()
    reading = await probe.read()
    await probe.close()
    if has_driver:
        assert reading.gpus and reading.message == "", reading.message
        assert all(g.total_bytes for g in reading.gpus)
    else:
        assert reading == type(reading)(message=NO_GPU, hint=NO_GPU_HINT)


def test_importing_the_probe_loads_no_nvml() -> None:
    code = (
        "import sys\n"
        "import ryx_desktop.adapters.nvml\n"
        "from ryx_desktop.adapters.nvml import NvmlGpuProbe\n"
        "NvmlGpuProbe()\n"
        "print('pynvml' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_nvidia_smi_check_parses_and_compares() -> None:
    smi = parse_smi(
        "0, NVIDIA H200, 143771, 1000, 142200, 3\n1, NVIDIA H200, 143771, [N/A], 142200, 0\n"
    )
    assert smi[1].used_mib is None and smi[0].total_mib == 143771
    mib = 1024**2

    def status(index: int, used: int | None, util: float) -> GpuStatus:
        return GpuStatus(
            index=index,
            name="NVIDIA H200",
            total_bytes=143771 * mib,
            used_bytes=used,
            free_bytes=142200 * mib,
            utilization_percent=util,
        )

    agreeing = GpuReading(gpus=(status(0, 1200 * mib, 5.0), status(1, None, 0.0)))
    assert compare(agreeing, smi, tolerance=0.03, util_tolerance=15) == []
    apart = GpuReading(gpus=(status(0, 9000 * mib, 50.0), status(1, 5 * mib, 0.0)))
    problems = compare(apart, smi, tolerance=0.03, util_tolerance=15)
    assert [p.split(":")[0] for p in problems] == ["GPU 0", "GPU 0", "GPU 1"]
    assert compare(GpuReading(gpus=(status(0, 0, 0.0),)), smi, 0.03, 15) == [
        "the probe saw 1 GPU(s), nvidia-smi 2"
    ]
