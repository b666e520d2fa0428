"""``check_host`` without an engine: what each way of reaching one reports when it cannot.

The command runner (``ssh``, ``docker context``) is faked; the docker SDK is reached only at a
socket path that does not exist. Every failure is a report with one sentence and a hint, never
an exception, and a host that hangs is given up at its deadline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ryx_desktop.adapters.host_check import check_host, check_hosts
from ryx_desktop.config import Config
from ryx_desktop.config._hosts import HostConfig
from ryx_desktop.core.gpu import GpuReading, GpuStatus

GIB = 1024**3


class FakeRunner:
    """Answers each command by its first words; records what it ran."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.ran.append(argv)
        for start, answer in self.answers.items():
            if " ".join(argv).startswith(start) or argv[-1].startswith(start):
                return answer
        raise AssertionError(f"unexpected command {argv}")


async def one_gpu() -> GpuReading:
    return GpuReading(gpus=(GpuStatus(0, "L4", used_bytes=GIB, total_bytes=24 * GIB),))


def host(**fields: Any) -> HostConfig:
    return HostConfig.model_validate(fields)


@pytest.mark.asyncio
async def test_an_ssh_host_that_refuses_is_unreachable_with_ssh_s_reason() -> None:
    runner = FakeRunner(
        {"printenv": (255, "", "ssh: connect to host box2 port 22: Connection refused\r\n")}
    )
    report = await check_host(
        "gpu2", host(url="ssh://me@box2"), environ={}, models=("big",), runner=runner
    )
    assert not report.reachable
    assert report.reason == "cannot reach me@box2 over SSH: connect to host box2 port 22: " + (
        "Connection refused"
    )
    assert "`ssh me@box2 true`" in report.hint
    assert (report.models, report.gpus, report.containers_running) == (("big",), (), None)
    assert len(runner.ran) == 1  # nothing more is tried on a host that does not answer
    argv = runner.ran[0]
    assert argv[0] == "ssh" and "BatchMode=yes" in argv and "ConnectTimeout=10" in argv


@pytest.mark.asyncio
async def test_a_remote_docker_host_that_is_not_a_socket_is_refused_with_a_hint() -> None:
    runner = FakeRunner({"printenv": (0, "tcp://127.0.0.1:2375\n", "")})
    report = await check_host("gpu2", host(url="ssh://me@box2"), environ={}, runner=runner)
    assert not report.reachable
    assert report.reason == (
        "DOCKER_HOST on me@box2 is tcp://127.0.0.1:2375: `hosts` reaches an engine over SSH "
        "through its unix socket only"
    )
    assert report.hint.startswith("Unset DOCKER_HOST for that user on me@box2")


@pytest.mark.asyncio
async def test_a_missing_ssh_client_is_named() -> None:
    runner = FakeRunner({"ssh": (127, "", "ssh: command not found")})
    report = await check_host("gpu2", host(url="ssh://box2:2222"), environ={}, runner=runner)
    assert report.reason == "cannot reach box2:2222: the ssh client 'ssh' is not installed"
    assert "openssh-client" in report.hint


@pytest.mark.asyncio
async def test_a_tls_engine_is_not_checked_and_says_so(tmp_path: Path) -> None:
    tls = {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}
    report = await check_host(
        "box3", host(url="tcp://box3:2376", tls=tls), environ={}, runner=FakeRunner({})
    )
    assert not report.reachable
    assert report.reason == "checking a tcp:// engine with TLS is not supported by `hosts` yet"
    assert "ssh://" in report.hint and "docker --tlsverify -H tcp://box3:2376 info" in report.hint
    assert report.gpus_note == "GPUs are read over SSH; this host is reached over tcp://"


@pytest.mark.asyncio
async def test_an_unknown_context_is_named_with_where_to_look() -> None:
    runner = FakeRunner(
        {
            "docker context inspect": (
                1,
                "[]\n",
                'context "box4": context not found: open /root/.docker/contexts/meta/x: no such '
                "file or directory\n",
            )
        }
    )
    report = await check_host("box4", host(context="box4"), environ={}, runner=runner)
    assert (report.reachable, report.url) == (False, "context box4")
    assert report.reason == "Docker has no context 'box4'"
    assert report.hint.startswith("`docker context ls` lists the contexts")


@pytest.mark.asyncio
async def test_a_context_is_followed_to_its_endpoint(tmp_path: Path) -> None:
    inspected = (
        '[{"Name": "box5", "Endpoints": {"docker": {"Host": "tcp://box5:2376"}}, '
        '"TLSMaterial": {"docker": ["ca.pem", "cert.pem", "key.pem"]}}]'
    )
    socket = tmp_path / "gone.sock"
    unix = f'[{{"Name": "here", "Endpoints": {{"docker": {{"Host": "unix://{socket}"}}}}}}]'
    runner = FakeRunner(
        {
            "docker context inspect box5": (0, inspected, ""),
            "docker context inspect here": (0, unix, ""),
        }
    )
    tls = await check_host("box5", host(context="box5"), environ={}, runner=runner)
    assert tls.url == "context box5 (tcp://box5:2376)"
    assert tls.reason == "checking a tcp:// engine with TLS is not supported by `hosts` yet"
    here = await check_host(
        "here", host(context="here"), environ={}, runner=runner, local_gpus=one_gpu
    )
    assert here.url == f"context here (unix://{socket})"
    assert not here.reachable
    assert here.reason == f"no Docker engine answers at unix://{socket} (socket file not found)"
    assert [gpu.name for gpu in here.gpus] == ["L4"]  # a socket here: this machine's GPUs


@pytest.mark.asyncio
async def test_a_host_that_hangs_is_given_up_at_its_deadline() -> None:
    async def hang(argv: list[str]) -> tuple[int, str, str]:
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    report = await check_host(
        "slow", host(url="ssh://me@slow"), environ={}, runner=hang, timeout=0.2
    )
    assert not report.reachable
    assert report.reason == "slow did not answer within 0.2 s"
    assert report.hint == "Check that ssh://me@slow is up and reachable from this machine."


@pytest.mark.asyncio
async def test_every_host_is_checked_at_once_and_local_comes_first(tmp_path: Path) -> None:
    socket = tmp_path / "none.sock"
    config = Config.model_validate(
        {
            "docker": {"host": f"unix://{socket}"},
            "hosts": {
                "slow1": {"url": "ssh://me@slow1"},
                "slow2": {"url": "ssh://me@slow2"},
                "refusing": {"url": "ssh://me@refusing"},
            },
            "models": {"a": {"model": "/models/a", "port": 8001, "host": "refusing"}},
        }
    )
    hanging: set[str] = set()
    both_hang = asyncio.Event()

    async def runner(argv: list[str]) -> tuple[int, str, str]:
        where = argv[-2]  # ssh ... -- HOST COMMAND
        if where.startswith("slow"):
            hanging.add(where)
            if len(hanging) == 2:
                both_hang.set()
            try:
                await asyncio.Event().wait()  # never answers: only its deadline ends it
            finally:
                hanging.discard(where)
        return 255, "", "ssh: Could not resolve hostname refusing: Name or service not known"

    reports = await check_hosts(config, {}, runner=runner, local_gpus=one_gpu, timeout=0.5)
    assert both_hang.is_set()  # the second slow host was asked while the first still hung
    assert [r.name for r in reports] == ["local", "slow1", "slow2", "refusing"]
    local, slow1, slow2, refusing = reports
    assert local.reason == f"no Docker engine answers at unix://{socket} (socket file not found)"
    assert [gpu.name for gpu in local.gpus] == ["L4"]
    assert (slow1.reason, slow2.reason) == (
        "slow1 did not answer within 0.5 s",
        "slow2 did not answer within 0.5 s",
    )
    assert refusing.reason == (
        "cannot reach me@refusing over SSH: Could not resolve hostname refusing: "
        "Name or service not known"
    )
    assert refusing.models == ("a",)


@pytest.mark.asyncio
async def test_a_failure_of_the_check_itself_is_a_report_too() -> None:
    async def broken(argv: list[str]) -> tuple[int, str, str]:
        raise RuntimeError("the runner broke")

    report = await check_host("box4", host(context="box4"), environ={}, runner=broken)
    assert (report.reachable, report.reason) == (False, "checking box4 failed: the runner broke")
    assert report.hint.startswith("This is a bug in ryx-desktop")
