"""``ryx-desktop hosts`` against a real engine on an ``ssh://`` host, then with the host gone.

The host ``gpu2`` is an ``ExtraDockerd`` reached through a ``TestSshd`` as
``ssh://root@127.0.0.1:<port>`` (its ``DOCKER_HOST`` there names the engine's socket, as a user's
environment on a remote box would), with a fake ``nvidia-smi`` on that session's ``PATH``; the
local engine (``docker.host``) is the same engine reached by its socket. The command runs in
this process (``cli.main``) on a config file, as a user runs it: the host answers with the
engine's version and the fake GPU; with its sshd killed it is unreachable with ssh's reason and
the exit status is 1, while the local engine is still reported; with the sshd back but the engine
dead, the host's GPUs are still read and the engine's absence is the reason.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ryx_desktop.cli import main
from tests.engines.conftest import MakeEngine
from tests.support.extra_dockerd import ExtraDockerd, wait_for_condition
from tests.support.sshd import TestSshd

GIB = 1024**3
#: nvidia-smi's answers on the "remote" host: one H100 with 1 GiB used, no compute process.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) echo "0, GPU-5c1d6f2e, NVIDIA H100 80GB HBM3, 81559, 1024, 80535, 3, 35" ;;
  --query-compute-apps=*) ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def engine(make_engine: MakeEngine) -> ExtraDockerd:
    return make_engine("h")


@pytest.fixture
def sshd(engine: ExtraDockerd) -> Iterator[TestSshd]:
    workdir = tempfile.mkdtemp(prefix="ryx-sshd-")
    server = TestSshd(workdir, env={"DOCKER_HOST": engine.docker_host})
    server.start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def write_config(path: Path, engine: ExtraDockerd, sshd: TestSshd) -> Path:
    data: dict[str, Any] = {
        "docker": {"host": engine.docker_host},
        "hosts": {
            "gpu2": {
                "url": sshd.url,
                "ssh": {
                    "identity_file": str(sshd.identity_file),
                    "options": sshd.client_options(),
                },
                "models_dir": "/srv/vllm-models",
            }
        },
        "models": {
            "here": {"model": "/models/a", "port": 8001, "devices": "none"},
            "there": {"model": "/models/b", "port": 8002, "host": "gpu2"},
            "anywhere": {"model": "/models/c", "port": 8003, "host": "any"},
        },
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def hosts(config: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    """Run ``ryx-desktop hosts FLAGS --config CONFIG`` here; its exit status and output."""
    capsys.readouterr()
    code = main(["hosts", *flags, "--config", str(config)])
    return code, capsys.readouterr().out


def reports_of(output: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(output)
    return {report["name"]: report for report in listed}


def no_session_left(sshd: TestSshd) -> None:
    """The command's ssh connections (the tunnel, nvidia-smi) all ended with it."""
    wait_for_condition(lambda: sshd.connection_pids() == [], 10, "every ssh session ending")


def test_hosts_reports_an_ssh_host_then_why_it_cannot_be_reached(
    engine: ExtraDockerd,
    sshd: TestSshd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sshd.add_command("nvidia-smi", FAKE_NVIDIA_SMI)
    config = write_config(tmp_path / "config.yaml", engine, sshd)
    with contextlib.closing(engine.client()) as client:
        version = str(client.version()["Version"])

    code, output = hosts(config, capsys, "--json")
    reports = reports_of(output)
    assert code == 0, output
    assert list(reports) == ["local", "gpu2"]
    local, gpu2 = reports["local"], reports["gpu2"]
    assert (local["reachable"], local["url"], local["engine_version"]) == (
        True,
        engine.docker_host,
        version,
    )
    assert local["models"] == ["here"]
    assert gpu2["reachable"] is True, gpu2
    assert (gpu2["url"], gpu2["engine_version"], gpu2["containers_running"]) == (
        sshd.url,
        version,
        0,
    )
    assert gpu2["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "used_bytes": 1024 * 1024**2,
            "total_bytes": 81559 * 1024**2,
        }
    ]
    assert (gpu2["models"], gpu2["reason"]) == (["there"], "")
    no_session_left(sshd)

    code, table = hosts(config, capsys)
    assert code == 0, table
    lines = table.splitlines()
    assert lines[0].split() == ["HOST", "ENGINE", "STATE", "DOCKER", "GPUS", "MODELS"]
    assert lines[1].startswith("local ") and lines[2].startswith("gpu2 ")
    assert "1\N{MULTIPLICATION SIGN} NVIDIA H100 80GB HBM3 (1.0/79.6 GiB used)" in lines[2]
    assert lines[2].rstrip().endswith("there")
    assert "placed on any host with room: anywhere" in table

    # The host goes away: it is unreachable, with ssh's own reason; the local engine still answers.
    sshd.kill()
    code, output = hosts(config, capsys, "--json")
    reports = reports_of(output)
    assert code == 1
    gpu2 = reports["gpu2"]
    assert gpu2["reachable"] is False
    name = sshd.url.removeprefix("ssh://")
    assert gpu2["reason"].startswith(f"cannot reach {name} over SSH: "), gpu2
    assert "Connection refused" in gpu2["reason"]
    assert f"ssh -i {sshd.identity_file} -p {sshd.port} root@127.0.0.1 true" in gpu2["hint"]
    assert (gpu2["engine_version"], gpu2["gpus"], gpu2["models"]) == ("", [], ["there"])
    assert reports["local"]["reachable"] is True
    assert reports["local"]["engine_version"] == version

    code, table = hosts(config, capsys)
    assert code == 1
    assert f"gpu2: cannot reach {name} over SSH: " in table
    assert "  hint: Check that" in table

    # The host is back but its engine died: its GPUs are still read over SSH, and the reason
    # names the engine's socket on that host.
    sshd.start()
    engine.kill()
    code, output = hosts(config, capsys, "--json")
    reports = reports_of(output)
    assert code == 1
    gpu2 = reports["gpu2"]
    assert gpu2["reachable"] is False
    assert gpu2["reason"] == f"no Docker engine answers at {engine.docker_host} on {name}", gpu2
    assert gpu2["hint"].startswith("Start Docker on gpu2 ")
    assert [gpu["name"] for gpu in gpu2["gpus"]] == ["NVIDIA H100 80GB HBM3"]
    assert reports["local"]["reachable"] is False
    assert engine.docker_host in reports["local"]["reason"]
    no_session_left(sshd)
