"""``SshTunnel`` through a real ``sshd`` of the test's own (``TestSshd``), to a local server.

The "remote" port is an aiohttp server on this machine's ``127.0.0.1`` (as a model's container
publishes on its host's loopback); the tunnel's ssh logs in to the test sshd and forwards to it.
What the multi-host work relies on: requests pass; a killed ssh is reopened on the same local
port; a host that goes away and comes back is reconnected; ``close()`` and the death of the
process that opened it leave no ssh behind; a host that cannot be reached says why and how to
check it; ``TunnelSet`` shares one ssh per forward; commands run through the sshd see its
``PATH`` (a fake ``nvidia-smi``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel, TunnelSet
from ryx_desktop.core.errors import HostUnreachableError
from tests.support.sshd import TestSshd
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
#: Fast reopening, so that the tests do not wait out production backoff.
BACKOFF = (0.05, 0.5)


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def ssh_processes_naming(text: str) -> list[int]:
    """Running ``ssh`` processes whose command line holds ``text``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = argv and Path(os.fsdecode(argv[0])).name == "ssh"
        if ours and text.encode() in b" ".join(argv) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def sshd() -> Iterator[TestSshd]:
    workdir = tempfile.mkdtemp(prefix="ryx-sshd-")
    server = TestSshd(workdir)
    server.start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def target_of(
    sshd: TestSshd, *, identity_file: Path | None = None, options: Sequence[str] = ()
) -> SshTarget:
    """The ``ssh://root@127.0.0.1:<port>`` target of ``sshd``, trusting its host key;
    ``options`` come before (and so win over) the sshd's client options."""
    return SshTarget.from_url(
        sshd.url,
        identity_file=identity_file or sshd.identity_file,
        options=[*options, *sshd.client_options()],
    )


@pytest_asyncio.fixture
async def remote_port() -> AsyncIterator[int]:
    """An HTTP server on 127.0.0.1 answering ``GET /ping`` with ``pong``: the remote port."""
    app = web.Application()

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield port
    finally:
        await runner.cleanup()


async def ping(url: str) -> str:
    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.get(f"{url}/ping")
    answer.raise_for_status()
    return answer.text


def refused(port: int) -> Callable[[], bool]:
    def check() -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex(("127.0.0.1", port)) != 0

    return check


@pytest.mark.asyncio
async def test_a_tunnel_forwards_and_is_reopened_when_its_ssh_dies(
    sshd: TestSshd, remote_port: int
) -> None:
    tunnel = SshTunnel(target_of(sshd), remote_port, backoff=BACKOFF)
    heard: list[tuple[bool, str | None]] = []
    tunnel.add_listener(
        lambda t: heard.append((t.up, t.last_error.message if t.last_error else None))
    )
    assert tunnel.local_port is not None and tunnel.local_port != remote_port
    assert tunnel.url == f"http://127.0.0.1:{tunnel.local_port}"
    try:
        await tunnel.open()
        assert tunnel.up and tunnel.opens == 1 and heard == [(True, None)]
        assert await ping(tunnel.url) == "pong"
        first = tunnel.pid
        assert first is not None and alive(first)

        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: tunnel.opens == 2 and tunnel.up, "the tunnel reopened", 15)
        assert tunnel.pid not in (None, first)
        assert tunnel.url == f"http://127.0.0.1:{tunnel.local_port}"  # the same local end
        assert await ping(tunnel.url) == "pong"
        down = [message for up, message in heard if not up]
        assert down and "dropped" in (down[0] or "") and sshd.url[6:] in (down[0] or ""), heard
        assert heard[-1] == (True, None)
    finally:
        await tunnel.close()
    assert tunnel.pid is None and not tunnel.up and tunnel.closed
    assert ssh_processes_naming(f"127.0.0.1:{tunnel.local_port}:") == []
    await wait_for(refused(tunnel.local_port), "the local port closed", 5)
    # The sshd side of the connection ends with it.
    await wait_for(lambda: sshd.connection_pids() == [], "the sshd's session ended", 10)


@pytest.mark.asyncio
async def test_a_host_that_goes_away_is_reconnected_when_it_is_back(
    sshd: TestSshd, remote_port: int
) -> None:
    tunnel = SshTunnel(target_of(sshd), remote_port, backoff=BACKOFF)
    try:
        await tunnel.open()
        assert await ping(tunnel.url) == "pong"
        await asyncio.to_thread(sshd.stop)  # every connection dropped, nothing listens
        await wait_for(lambda: not tunnel.up, "the tunnel noticed the host went", 15)
        with pytest.raises(HostUnreachableError) as caught:
            await tunnel.wait_up(0.3)
        assert sshd.url[6:] in caught.value.message and caught.value.hint
        await wait_for(
            lambda: "Connection refused" in str(tunnel.last_error), "a failed reopen", 10
        )

        await asyncio.to_thread(sshd.start)
        await tunnel.wait_up(15)
        assert tunnel.last_error is None
        assert await ping(tunnel.url) == "pong"
    finally:
        await tunnel.close()
    assert ssh_processes_naming(f"127.0.0.1:{tunnel.local_port}:") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("nothing listens", "Connection refused"),
        ("key not authorized", "Permission denied (publickey"),
        ("host key unknown", "Host key verification failed"),
    ],
)
async def test_a_host_that_cannot_be_reached_says_why_and_how_to_check_it(
    sshd: TestSshd, remote_port: int, free_port: Callable[[], int], case: str, reason: str
) -> None:
    if case == "nothing listens":
        target = SshTarget.from_url(
            f"ssh://root@127.0.0.1:{free_port()}",
            identity_file=sshd.identity_file,
            options=sshd.client_options(),
        )
    elif case == "key not authorized":
        target = target_of(sshd, identity_file=sshd.host_key)  # a key, but not an authorized one
    else:
        strange = sshd.workdir / "empty_known_hosts"
        strange.write_text("")
        target = target_of(sshd, options=[f"UserKnownHostsFile={strange}"])
    tunnel = SshTunnel(target, remote_port, open_timeout=10)
    with pytest.raises(HostUnreachableError) as caught:
        await tunnel.open()  # BatchMode: fails at once rather than prompting
    error = caught.value
    assert error.message.startswith(f"cannot reach {target.name} over SSH: "), error.message
    assert reason in error.message, error.message
    assert "\n" not in error.message
    assert error.host == target.name
    assert target.name in error.hint and target.manual_command() in error.hint, error.hint
    assert tunnel.pid is None and not tunnel.up and tunnel.last_error is not None
    assert tunnel.local_port is not None
    assert ssh_processes_naming(f"127.0.0.1:{tunnel.local_port}:") == []
    await tunnel.close()


@pytest.mark.asyncio
async def test_a_missing_ssh_client_is_named() -> None:
    target = SshTarget("127.0.0.1", program="/nonexistent/ssh")
    with pytest.raises(HostUnreachableError) as caught:
        await SshTunnel(target, 8000).open()
    assert "not installed" in caught.value.message
    assert "openssh-client" in caught.value.hint


@pytest.mark.asyncio
async def test_a_tunnel_set_shares_one_ssh_per_forward(sshd: TestSshd, remote_port: int) -> None:
    tunnels = TunnelSet(lambda target, remote: SshTunnel(target, remote, backoff=BACKOFF))
    target = target_of(sshd)
    try:
        first, again = await asyncio.gather(
            tunnels.acquire(target, remote_port), tunnels.acquire(target, remote_port)
        )
        assert first is again and first.opens == 1 and first.up
        assert tunnels.find(target, remote_port) is first
        assert len(ssh_processes_naming(f"127.0.0.1:{first.local_port}:")) == 1
        # Another remote port on the same host is another forward.
        other = await tunnels.acquire(target, remote_port + 1 if remote_port < 65535 else 1)
        assert other is not first and other.local_port != first.local_port

        await tunnels.release(first)
        assert first.up and not first.closed  # still used once
        assert await ping(first.url) == "pong"
        await tunnels.release(first)
        assert first.closed and tunnels.find(target, remote_port) is None
        assert tunnels.tunnels() == [other]
    finally:
        await tunnels.close()
    assert other.closed and tunnels.tunnels() == []


_OPENER = """
import asyncio, sys
from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel

async def main() -> None:
    target = SshTarget.from_url(sys.argv[1], identity_file=sys.argv[2], options=sys.argv[4:])
    tunnel = SshTunnel(target, int(sys.argv[3]))
    await tunnel.open()
    print(tunnel.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_the_ssh_of_a_tunnel_ends_when_the_process_that_opened_it_is_killed(
    sshd: TestSshd, remote_port: int
) -> None:
    opener = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OPENER,
        sshd.url,
        str(sshd.identity_file),
        str(remote_port),
        *sshd.client_options(),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert opener.stdout is not None
        line = await asyncio.wait_for(opener.stdout.readline(), 20)
        ssh_pid = int(line)
        assert alive(ssh_pid)
    finally:
        opener.kill()  # SIGKILL: no close(), no cleanup of its own
        await opener.wait()
    await wait_for(lambda: not alive(ssh_pid), "the orphaned ssh ending", 10)


@pytest.mark.asyncio
async def test_commands_through_the_sshd_find_a_fake_nvidia_smi(sshd: TestSshd) -> None:
    sshd.add_command(
        "nvidia-smi",
        '#!/bin/sh\necho "0, NVIDIA H100, 81559, 1024, args: $*"\n',
    )
    target = target_of(sshd)
    process = await asyncio.create_subprocess_exec(
        *target.command_argv("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err
    assert out.decode().strip() == (
        "0, NVIDIA H100, 81559, 1024, args: --query-gpu=index,name --format=csv,noheader"
    )
    # The client's ssh_config alias reaches it too, and the script may change between runs.
    sshd.add_command("nvidia-smi", "#!/bin/sh\necho second\n")
    done = await asyncio.to_thread(sshd.run, "nvidia-smi")
    assert (done.returncode, done.stdout.strip()) == (0, "second"), done.stderr
