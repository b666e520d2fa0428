"""What ``ryx-desktop hosts`` prints from reports: the table, the GPU and Docker cells, the JSON."""

from __future__ import annotations

import json

from ryx_desktop.cli._output import hosts_table
from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuReading, GpuStatus
from ryx_desktop.core.host_report import (
    ANY,
    HostGpu,
    HostReport,
    docker_summary,
    gpu_summary,
    gpus_of,
    has_gpu_runtime,
    host_names,
    host_report_json,
    models_on,
)

GIB = 1024**3
TIMES = "\N{MULTIPLICATION SIGN}"

LOCAL = HostReport(
    "local",
    "unix:///var/run/docker.sock",
    True,
    engine_version="27.5.1",
    runtimes=("nvidia", "runc"),
    gpu_runtime=True,
    gpus=(
        HostGpu(0, "NVIDIA GeForce RTX 4090", 2 * GIB, 24 * GIB),
        HostGpu(1, "NVIDIA GeForce RTX 4090", GIB + GIB // 10, 24 * GIB),
    ),
    models=("coder", "chat"),
    containers_running=1,
)
GONE = HostReport(
    "gpu2",
    "ssh://me@box2",
    False,
    reason="cannot reach me@box2 over SSH: connect to host box2 port 22: Connection refused",
    hint="Check that me@box2 is up.",
    models=("big",),
)
CPU_ONLY = HostReport(
    "cpu",
    "tcp://box3:2375",
    True,
    engine_version="26.1.0",
    runtimes=("runc",),
    gpus_note="GPUs are read over SSH; this host is reached over tcp://",
)


def test_gpu_cell_counts_each_kind_and_sums_their_memory() -> None:
    assert gpu_summary(LOCAL) == f"2{TIMES} NVIDIA GeForce RTX 4090 (3.1/48.0 GiB used)"
    mixed = HostReport(
        "m",
        "unix:///s",
        True,
        gpus=(HostGpu(0, "A100", GIB, 40 * GIB), HostGpu(1, "L4", None, 24 * GIB)),
    )
    assert gpu_summary(mixed) == f"1{TIMES} A100, 1{TIMES} L4"  # a memory unknown: no sum


def test_gpu_cell_says_why_there_are_none_or_that_they_were_not_read() -> None:
    assert gpu_summary(CPU_ONLY) == (
        "none: GPUs are read over SSH; this host is reached over tcp://"
    )
    assert gpu_summary(GONE) == "-"


def test_docker_cell_is_the_version_with_the_gpu_runtime() -> None:
    assert docker_summary(LOCAL) == "27.5.1 (nvidia)"
    assert docker_summary(CPU_ONLY) == "26.1.0"
    assert docker_summary(GONE) == "-"


def test_table_has_a_row_per_host_and_the_reasons_below() -> None:
    table = hosts_table([LOCAL, GONE, CPU_ONLY], anywhere=["small"])
    lines = table.splitlines()
    assert lines[0].split() == ["HOST", "ENGINE", "STATE", "DOCKER", "GPUS", "MODELS"]
    header = lines[0]
    for column in ("ENGINE", "STATE", "DOCKER", "GPUS", "MODELS"):  # every row aligned
        at = header.index(column)
        assert all(line[at - 2 : at] == "  " for line in lines[1:4]), column
    local, gone, cpu = lines[1:4]
    assert local.split()[:5] == ["local", "unix:///var/run/docker.sock", "●", "reachable", "27.5.1"]
    assert local.endswith("coder, chat (1 running)")
    assert gone.split()[:4] == ["gpu2", "ssh://me@box2", "✖", "unreachable"]
    assert gone.endswith("big")
    assert cpu.endswith("-")  # no model configured there
    assert lines[4:] == [
        "placed on any host with room: small",
        "gpu2: cannot reach me@box2 over SSH: connect to host box2 port 22: Connection refused",
        "  hint: Check that me@box2 is up.",
    ]


def test_table_of_reachable_hosts_has_nothing_below() -> None:
    assert len(hosts_table([LOCAL]).splitlines()) == 2


def test_json_holds_every_field_as_plain_types() -> None:
    data = json.loads(json.dumps([host_report_json(r) for r in (LOCAL, GONE)]))
    assert data[0] == {
        "name": "local",
        "url": "unix:///var/run/docker.sock",
        "reachable": True,
        "reason": "",
        "hint": "",
        "engine_version": "27.5.1",
        "runtimes": ["nvidia", "runc"],
        "gpu_runtime": True,
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA GeForce RTX 4090",
                "used_bytes": 2 * GIB,
                "total_bytes": 24 * GIB,
            },
            {
                "index": 1,
                "name": "NVIDIA GeForce RTX 4090",
                "used_bytes": GIB + GIB // 10,
                "total_bytes": 24 * GIB,
            },
        ],
        "gpus_note": "",
        "models": ["coder", "chat"],
        "containers_running": 1,
    }
    assert (data[1]["reachable"], data[1]["reason"], data[1]["containers_running"]) == (
        False,
        GONE.reason,
        None,
    )


def test_a_reading_becomes_gpus_or_the_reason_there_are_none() -> None:
    reading = GpuReading(gpus=(GpuStatus(0, "L4", used_bytes=GIB, total_bytes=24 * GIB),))
    assert gpus_of(reading) == ((HostGpu(0, "L4", GIB, 24 * GIB),), "")
    assert gpus_of(GpuReading(message="No NVIDIA GPU found")) == ((), "No NVIDIA GPU found")


def test_gpu_runtime_is_the_nvidia_runtime_or_nvidia_cdi_devices() -> None:
    assert has_gpu_runtime(("nvidia", "runc"), ())
    assert has_gpu_runtime(("runc",), ("nvidia.com/gpu=0",))
    assert not has_gpu_runtime(("runc",), ("vendor.com/fpga=0",))


def test_models_are_listed_by_host_and_local_comes_first() -> None:
    config = Config.model_validate(
        {
            "hosts": {"box2": {"url": "ssh://me@box2"}, "box1": {"url": "ssh://me@box1"}},
            "models": {
                "a": {"model": "/models/a", "port": 8001},
                "b": {"model": "/models/b", "port": 8002, "host": "box2"},
                "c": {"model": "/models/c", "port": 8003, "host": "any"},
                "ext": {"url": "http://127.0.0.1:9000/v1", "served_name": "ext"},
            },
        }
    )
    assert host_names(config) == ("local", "box2", "box1")
    assert models_on(config, "local") == ("a",)
    assert models_on(config, "box2") == ("b",)
    assert models_on(config, "box1") == ()
    assert models_on(config, ANY) == ("c",)
