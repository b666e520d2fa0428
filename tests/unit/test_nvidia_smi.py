"""nvidia-smi's CSV turned into the readings the NVML probe gives: values, N/A, garbage, no GPU."""

from __future__ import annotations

from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus
from ryx_desktop.core.gpu_monitor import build_vram_report
from ryx_desktop.core.nvidia_smi import (
    APP_QUERY,
    GPU_QUERY,
    MIB,
    NO_GPU,
    NO_GPU_HINT,
    CommandOutput,
    SkippedLine,
    build_reading,
    parse_apps,
    parse_gpus,
)
from ryx_desktop.core.states import Instance, InstanceState

UUID_A = "GPU-5f3b8c2e-1a4d-4c1b-9e7a-2b6f0d9c8a11"
UUID_B = "GPU-0d7e41b9-6c2a-4f0e-8b3d-91a5c7e2f604"

ONE_GPU = f"0, {UUID_A}, NVIDIA GeForce RTX 4090, 24564, 18234, 5895, 87, 64\n"
TWO_GPUS = (
    f"0, {UUID_A}, NVIDIA H100 80GB HBM3, 81559, 70012, 10979, 100, 55\n"
    f"1, {UUID_B}, NVIDIA H100 80GB HBM3, 81559, 1, 81015, 0, 31\n"
)
APPS_ON_BOTH = (
    f"{UUID_A}, 4300, 2048\n"
    f"{UUID_A}, 4242, 65536\n"
    f"{UUID_B}, 5151, [N/A]\n"  # no permission to see its memory
)


def ok(stdout: str) -> CommandOutput:
    return CommandOutput(0, stdout, "")


def test_the_commands_are_the_csv_queries_in_mib_without_units() -> None:
    assert GPU_QUERY == (
        "nvidia-smi",
        "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,"
        "temperature.gpu",
        "--format=csv,noheader,nounits",
    )
    assert APP_QUERY == (
        "nvidia-smi",
        "--query-compute-apps=gpu_uuid,pid,used_memory",
        "--format=csv,noheader,nounits",
    )


def test_one_gpu_reads_as_the_nvml_probe_reports_it() -> None:
    smi = build_reading(ok(ONE_GPU), ok(""))
    assert smi.reading == GpuReading(
        gpus=(
            GpuStatus(
                index=0,
                name="NVIDIA GeForce RTX 4090",
                uuid=UUID_A,
                total_bytes=24564 * MIB,
                used_bytes=18234 * MIB,
                free_bytes=5895 * MIB,
                utilization_percent=87.0,
                processes=(),  # no process: an empty answer, not an unknown one
            ),
        )
    )
    assert smi.reading.message == "" and smi.skipped == () and smi.processes_unknown == ""
    assert [gpu.temperature_c for gpu in smi.gpus] == [64.0]


def test_processes_on_two_gpus_go_to_their_gpu_by_uuid_in_pid_order() -> None:
    smi = build_reading(ok(TWO_GPUS), ok(APPS_ON_BOTH))
    first, second = smi.reading.gpus
    assert (first.index, second.index) == (0, 1)
    assert first.processes == (GpuProcess(4242, 65536 * MIB), GpuProcess(4300, 2048 * MIB))
    assert second.processes == (GpuProcess(5151, None),)
    assert (second.used_bytes, second.utilization_percent) == (1 * MIB, 0.0)


def test_a_process_listed_twice_keeps_its_known_memory() -> None:
    apps = f"{UUID_A}, 4242, [N/A]\n{UUID_A}, 4242, 1000\n{UUID_A}, 4242, [N/A]\n"
    [gpu] = build_reading(ok(ONE_GPU), ok(apps)).reading.gpus
    assert gpu.processes == (GpuProcess(4242, 1000 * MIB),)


def test_not_available_values_are_none_never_errors() -> None:
    text = (
        f"0, {UUID_A}, NVIDIA GeForce GTX 1080, 8192, 812, 7380, [Not Supported], [N/A]\n"
        f"1, [N/A], [N/A], [N/A], [N/A], [N/A], [N/A], N/A\n"
        f"2, {UUID_B}, Orin, [Insufficient Permissions], [Unknown Error], [N/A], 12, 40\n"
    )
    rows = parse_gpus(text)
    assert rows.skipped == ()
    zero, one, two = rows.rows
    assert (zero.total_bytes, zero.utilization_percent, zero.temperature_c) == (
        8192 * MIB,
        None,
        None,
    )
    assert (one.uuid, one.name, one.total_bytes, one.used_bytes, one.free_bytes) == (
        None,
        "GPU 1",
        None,
        None,
        None,
    )
    assert (two.total_bytes, two.used_bytes, two.utilization_percent) == (None, None, 12.0)


def test_not_supported_utilisation_on_some_gpus_only() -> None:
    text = (
        f"0, {UUID_A}, NVIDIA RTX A6000, 49140, 100, 48540, 35, 40\n"
        f"1, {UUID_B}, NVIDIA GeForce RTX 3060, 12288, 10, 12000, [Not Supported], 38\n"
    )
    a6000, rtx3060 = build_reading(ok(text), ok("")).reading.gpus
    assert a6000.utilization_percent == 35.0
    assert rtx3060.utilization_percent is None
    assert rtx3060.total_bytes == 12288 * MIB  # the rest of its line still counts


def test_no_process_at_all_in_any_form_is_an_empty_list() -> None:
    for apps in ("", "\n", "No running processes found\n"):
        assert parse_apps(apps).rows == ()
        assert parse_apps(apps).skipped == ()
        [gpu] = build_reading(ok(ONE_GPU), ok(apps)).reading.gpus
        assert gpu.processes == ()


def test_garbage_lines_are_skipped_with_their_reason_and_the_rest_is_read() -> None:
    gpus = (
        "index, uuid, name, memory.total [MiB]\n"  # 1: a header
        f"0, {UUID_A}, NVIDIA L4, 23034, 0, 22563, 0, 33\n"  # 2
        "Unable to determine the device handle for GPU 0000:41:00.0: Unknown Error\n"  # 3
        f"1, {UUID_B}, NVIDIA L4, lots, 0, 22563, 0, 33\n"  # 4
        f"0, {UUID_B}, NVIDIA L4, 23034, 0, 22563, 0, 33\n"  # 5: index 0 again
        "\n"
        f"-1, {UUID_B}, NVIDIA L4, 23034, 0, 22563, 0, 33\n"  # 7
    )
    apps = f"{UUID_A}, 77, 300\n{UUID_A}, abc, 10\nGPU-gone, 88, 5\n{UUID_A}, 99\n"
    smi = build_reading(ok(gpus), ok(apps))
    [gpu] = smi.reading.gpus
    assert (gpu.index, gpu.name, gpu.processes) == (0, "NVIDIA L4", (GpuProcess(77, 300 * MIB),))
    assert smi.reading.message == ""  # what could be read is a full reading
    assert [(s.query, s.number, s.reason) for s in smi.skipped] == [
        ("gpus", 1, "expected 8 comma-separated values, got 4"),
        ("gpus", 3, "expected 8 comma-separated values, got 1"),
        ("gpus", 4, "memory.total 'lots' is not a number"),
        ("gpus", 5, "GPU 0 is listed twice"),
        ("gpus", 7, "index '-1' is negative"),
        ("processes", 2, "pid 'abc' is not a whole number"),
        ("processes", 3, "no GPU listed has the UUID GPU-gone"),
        ("processes", 4, "expected 3 comma-separated values, got 2"),
    ]
    assert smi.skipped[2] == SkippedLine(
        "gpus",
        4,
        f"1, {UUID_B}, NVIDIA L4, lots, 0, 22563, 0, 33",
        "memory.total 'lots' is not a number",
    )


def test_a_name_with_a_comma_stays_whole_and_crlf_is_fine() -> None:
    text = f"0, {UUID_A}, Tesla T4, rev A, 15360, 3, 14930, 0, 41\r\n"
    [gpu] = parse_gpus(text).rows
    assert (gpu.name, gpu.total_bytes, gpu.temperature_c) == ("Tesla T4,rev A", 15360 * MIB, 41.0)


def test_nothing_readable_says_why_instead_of_a_gpu() -> None:
    smi = build_reading(ok("this is not csv\n"), None)
    assert smi.reading.gpus == ()
    assert smi.reading.message == (
        "nvidia-smi's GPU list could not be read (line 1: expected 8 comma-separated values, got 1)"
    )
    assert "nvidia-smi --query-gpu" in smi.reading.hint
    assert [s.text for s in smi.skipped] == ["this is not csv"]


def test_no_devices_is_a_reading_that_says_no_gpu() -> None:
    smi = build_reading(CommandOutput(6, "No devices were found\n", ""), None)
    assert smi.reading == GpuReading(
        message=f"{NO_GPU} (nvidia-smi: No devices were found)", hint=NO_GPU_HINT
    )
    assert parse_gpus("No devices were found\n").no_devices


def test_a_missing_nvidia_smi_is_a_reading_that_says_no_gpu() -> None:
    missing = CommandOutput(127, "", "bash: line 1: nvidia-smi: command not found\n")
    reading = build_reading(missing, None).reading
    assert reading == GpuReading(
        message=f"{NO_GPU} (nvidia-smi is not installed)", hint=NO_GPU_HINT
    )


def test_empty_output_is_no_gpu() -> None:
    reading = build_reading(ok(""), ok("")).reading
    assert reading.gpus == ()
    assert reading.message == f"{NO_GPU} (nvidia-smi listed none)"


def test_a_failing_nvidia_smi_gives_its_last_words() -> None:
    failed = CommandOutput(
        9,
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n",
        "",
    )
    reading = build_reading(failed, None).reading
    assert reading.gpus == ()
    assert reading.message.startswith(
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate"
    )
    assert reading.hint == "Check that `nvidia-smi` works for this user on that machine."
    # stderr wins over stdout, and its last line over ssh's warnings before it
    noisy = CommandOutput(255, "", "Warning: Permanently added 'box2'\nssh: connect refused\n")
    assert (
        build_reading(noisy, None).reading.message
        == "nvidia-smi failed (exit 255): ssh: connect refused"
    )
    assert build_reading(CommandOutput(3, "", ""), None).reading.message == (
        "nvidia-smi failed (exit 3): it printed nothing"
    )


def test_a_failed_process_query_leaves_the_gpus_without_processes_and_says_why() -> None:
    smi = build_reading(ok(TWO_GPUS), CommandOutput(2, "", "Failed to query compute apps\n"))
    assert [gpu.processes for gpu in smi.reading.gpus] == [(), ()]
    assert smi.reading.message == ""
    assert smi.processes_unknown == (
        "nvidia-smi's process query failed (exit 2): Failed to query compute apps"
    )
    assert build_reading(ok(TWO_GPUS), None).processes_unknown != ""


def test_a_models_vram_is_found_from_its_containers_host_pids() -> None:
    # the monitor's join works on this reading as on NVML's: pids of the container on that host
    config = Config.model_validate(
        {"models": {"a": {"model": "/models/a", "port": 8001, "gpu_memory_utilization": 0.8}}}
    )
    reading = build_reading(ok(TWO_GPUS), ok(APPS_ON_BOTH)).reading
    instance = Instance(key="a", name="A", served_name="a", state=InstanceState.READY)
    report = build_vram_report(reading, [instance], {"a": (4242, 4300)}, config, (0, 1))
    assert report.found
    assert report.used_by("a") == (65536 + 2048) * MIB
    assert report.gpus[0].other_bytes == (70012 - 65536 - 2048) * MIB
