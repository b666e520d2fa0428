"""``SshTarget``: ``ssh://`` urls and host settings turned into ``ssh`` command lines."""

from __future__ import annotations

import shlex

import pytest

from ryx_desktop.adapters.ssh_target import SshTarget
from ryx_desktop.adapters.ssh_tunnel import SshTunnel


def test_a_url_with_user_and_port_and_the_host_settings() -> None:
    target = SshTarget.from_url(
        "ssh://ops@gpu-2.lan:2222",
        identity_file="/keys/id_ed25519",
        config_file="/etc/ryx/ssh_config",
        options=["ServerAliveInterval=15"],
    )
    assert (target.host, target.user, target.port) == ("gpu-2.lan", "ops", 2222)
    assert target.url == "ssh://ops@gpu-2.lan:2222" and target.name == "ops@gpu-2.lan:2222"
    assert target.base_argv("ConnectTimeout=5") == [
        "ssh",
        "-F",
        "/etc/ryx/ssh_config",
        "-i",
        "/keys/id_ed25519",
        "-p",
        "2222",
        "-l",
        "ops",
        "-o",
        "BatchMode=yes",  # first: a host's options cannot turn prompts back on
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ConnectTimeout=5",
    ]
    assert target.manual_command() == (
        "ssh -F /etc/ryx/ssh_config -i /keys/id_ed25519 -p 2222 ops@gpu-2.lan true"
    )


def test_a_bare_host_leaves_user_and_port_to_the_ssh_config() -> None:
    target = SshTarget.from_url("ssh://box2")
    assert (target.user, target.port) == (None, None)
    assert target.url == "ssh://box2" and target.base_argv() == ["ssh", "-o", "BatchMode=yes"]
    assert SshTarget.from_url("ssh://[fe80::1]:22").url == "ssh://[fe80::1]:22"


def test_a_remote_command_is_quoted_for_the_remote_shell() -> None:
    argv = SshTarget("box2").command_argv("nvidia-smi", "--format=csv,noheader", "a b;rm")
    assert argv[-3:] == ["--", "box2", "nvidia-smi --format=csv,noheader 'a b;rm'"]
    assert shlex.split(argv[-1]) == ["nvidia-smi", "--format=csv,noheader", "a b;rm"]
    assert "-T" in argv
    with pytest.raises(ValueError, match="no remote command"):
        SshTarget("box2").command_argv()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("tcp://box2:2376", "is not an ssh:// url"),
        ("ssh://", "names no host"),
        ("ssh://box2:99999", "must be a number from 1 to 65535"),
        ("ssh://box2:port", "must be a number from 1 to 65535"),
        ("ssh://box2/path", "nothing more"),
        ("ssh://user:secret@box2", "nothing more"),
    ],
)
def test_what_is_not_an_ssh_url_is_refused(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SshTarget.from_url(url)


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "two words", ""])
def test_a_host_that_ssh_would_read_as_an_option_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="is not a host name for ssh"):
        SshTarget(host)


def test_a_tunnel_command_line_forwards_a_port_or_a_socket() -> None:
    target = SshTarget.from_url("ssh://ops@box2")
    to_port = SshTunnel(target, 8001, local_port=40001)
    argv = to_port.argv()
    assert argv[-5:] == ["-N", "-L", "127.0.0.1:40001:127.0.0.1:8001", "--", "box2"]
    assert "ExitOnForwardFailure=yes" in argv and "BatchMode=yes" in argv
    assert to_port.url == "http://127.0.0.1:40001" and to_port.local_socket is None

    to_socket = SshTunnel(target, "/var/run/docker.sock", local_socket="/tmp/x/engine.sock")
    assert to_socket.argv()[-3:] == ["/tmp/x/engine.sock:/var/run/docker.sock", "--", "box2"]
    assert to_socket.url == "unix:///tmp/x/engine.sock" and to_socket.local_port is None
    with pytest.raises(ValueError, match="must be an absolute path"):
        SshTunnel(target, "relative.sock")
    with pytest.raises(ValueError, match="must be from 1 to 65535"):
        SshTunnel(target, 0)
