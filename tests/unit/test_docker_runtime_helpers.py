"""What ``DockerRuntime`` does without an engine: log lines, pull progress, events, inspect data.

Pulls cannot be exercised for real (no registry is reachable in CI), so the progress sums are
checked here against the entries Docker streams during a pull.
"""

from __future__ import annotations

from typing import Any

import pytest

from ryx_desktop.adapters.docker_runtime import (
    _device_requests,
    _info_from_attrs,
    _LineSplitter,
    _PullTally,
    _runtime_event,
    split_lines,
)
from ryx_desktop.core.ports import ContainerStatus, RuntimeEvent, RuntimeEventKind


def test_lines_across_chunks_with_cr_progress_and_split_utf8() -> None:
    splitter = _LineSplitter()
    out: list[str] = []
    euro = "€".encode()
    for chunk in (
        b"INFO one\nINFO tw",
        b"o\r",
        b"\nLoading:  50%\rLoading: 100%\r",
        b"\n" + euro[:1],
        euro[1:] + b" price\n\n",
        b"tail without newline",
    ):
        out += splitter.feed(chunk)
    out += splitter.flush()
    assert out == [
        "INFO one",
        "INFO two",
        "Loading:  50%",
        "Loading: 100%",
        "€ price",
        "tail without newline",
    ]


def test_split_lines_of_a_whole_log() -> None:
    assert split_lines(b"a\r\nb\n\nc") == ["a", "b", "c"]
    assert split_lines(b"") == []
    assert split_lines(b"bad \xff byte\n") == ["bad \ufffd byte"]


def test_pull_progress_sums_layers() -> None:
    tally = _PullTally("vllm/vllm-openai:latest")
    entries: list[dict[str, Any]] = [
        {"status": "Pulling from vllm/vllm-openai", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "bbb"},
        {"status": "Already exists", "progressDetail": {}, "id": "ccc"},
        {"status": "Downloading", "progressDetail": {"current": 50, "total": 100}, "id": "aaa"},
        {"status": "Downloading", "progressDetail": {"current": 100, "total": 300}, "id": "bbb"},
    ]
    progress = [tally.add(e) for e in entries]
    last = progress[-1]
    assert last is not None
    assert (last.done_bytes, last.total_bytes) == (150, 400)
    assert (last.layers_done, last.layers_total) == (1, 3)
    assert last.percent == pytest.approx(37.5)
    assert last.image == "vllm/vllm-openai:latest"
    assert last.status == "Downloading"
    first = progress[0]
    assert first is not None
    assert first.layers_total == 0
    assert first.percent is None

    for entry in (
        {"status": "Download complete", "progressDetail": {}, "id": "aaa"},
        {"status": "Extracting", "progressDetail": {"current": 10, "total": 100}, "id": "aaa"},
        {"status": "Pull complete", "progressDetail": {}, "id": "aaa"},
        {"status": "Downloading", "progressDetail": {"current": 300, "total": 300}, "id": "bbb"},
        {"status": "Pull complete", "progressDetail": {}, "id": "bbb"},
    ):
        done = tally.add(entry)
    assert done is not None
    assert (done.done_bytes, done.total_bytes) == (400, 400)
    assert (done.layers_done, done.layers_total) == (3, 3)
    assert done.percent == 100.0
    digest = tally.add({"status": "Digest: sha256:abc"})
    assert digest is not None
    assert digest.status == "Digest: sha256:abc"
    assert digest.layers_total == 3
    assert tally.add({}) is None


def test_device_requests() -> None:
    assert _device_requests("none") == []
    (everything,) = _device_requests("all")
    assert everything["Count"] == -1
    assert everything["Capabilities"] == [["gpu"]]
    (some,) = _device_requests((0, 2))
    assert some["DeviceIDs"] == ["0", "2"]
    assert some["Capabilities"] == [["gpu"]]


def event(action: str, name: str, **attributes: str) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": action,
        "status": action,
        "id": "c1",
        "Actor": {"ID": "c1", "Attributes": {"name": name, "image": "img", **attributes}},
    }


def test_events_of_our_containers_only() -> None:
    assert _runtime_event(event("die", "ryx-vllm-small", exitCode="137")) == RuntimeEvent(
        RuntimeEventKind.DIE, "c1", "small", 137
    )
    labelled = event("oom", "whatever", **{"io.ryx.model": "big"})
    assert _runtime_event(labelled) == RuntimeEvent(RuntimeEventKind.OOM, "c1", "big")
    assert _runtime_event(event("start", "ryx-vllm-a")) == RuntimeEvent(
        RuntimeEventKind.START, "c1", "a"
    )
    assert _runtime_event(event("die", "postgres", exitCode="0")) is None
    assert _runtime_event(event("exec_start: sh", "ryx-vllm-a")) is None
    assert _runtime_event({**event("start", "ryx-vllm-a"), "Type": "network"}) is None
    assert _runtime_event("garbage") is None


def inspect_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "Id": "abc",
        "Name": "/ryx-vllm-medium-general",
        "State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True},
        "Config": {"Labels": {}},
        "HostConfig": {"PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8001"}]}},
        "NetworkSettings": {"Ports": {}},
    }
    data.update(overrides)
    return data


def test_info_from_inspect_data() -> None:
    info = _info_from_attrs(inspect_data())
    assert info is not None
    assert info.name == "ryx-vllm-medium-general"
    assert info.model_key == "medium-general"
    assert info.status == ContainerStatus.EXITED
    assert info.exit_code == 137
    assert info.oom_killed
    assert info.host_port == 8001
    assert not info.managed
    assert info.spec_hash is None

    running = _info_from_attrs(
        inspect_data(
            Name="/custom",
            State={"Status": "running", "ExitCode": 0},
            Config={
                "Labels": {
                    "io.ryx.managed": "true",
                    "io.ryx.model": "coder",
                    "io.ryx.spec-hash": "h1",
                }
            },
            HostConfig={},
            NetworkSettings={"Ports": {"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9100"}]}},
        )
    )
    assert running is not None
    assert running.model_key == "coder"
    assert running.managed
    assert running.spec_hash == "h1"
    assert running.exit_code is None
    assert running.host_port == 9100
    assert _info_from_attrs(inspect_data(Name="/postgres")) is None
