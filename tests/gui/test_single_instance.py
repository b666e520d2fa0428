"""One ryx-desktop per user and config: a second launch raises the first and exits at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QDir
from PySide6.QtNetwork import QAbstractSocket, QLocalServer
from pytestqt.qtbot import QtBot

from ryx_desktop.desktop import ALREADY_RUNNING
from ryx_desktop.ui.single_instance import SingleInstance, instance_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def name() -> str:
    return f"ryx-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def first(name: str, qtbot: QtBot) -> Iterator[SingleInstance]:
    instance = SingleInstance(name)
    yield instance
    instance.release()


def test_the_first_claims_and_a_second_in_the_same_process_does_not(
    first: SingleInstance, name: str, qtbot: QtBot
) -> None:
    assert first.claim()
    assert first.listening
    second = SingleInstance(name)
    assert not second.claim()
    assert not second.listening
    with qtbot.waitSignal(first.raiseRequested, timeout=5000):
        assert second.notify_running()


def test_after_release_the_next_launch_is_the_first(first: SingleInstance, name: str) -> None:
    assert first.claim()
    first.release()
    later = SingleInstance(name)
    try:
        assert later.claim()
    finally:
        later.release()


def test_nobody_to_notify_when_nothing_runs(name: str) -> None:
    assert not SingleInstance(name).notify_running()


def test_a_stale_socket_left_by_a_crash_is_recovered(first: SingleInstance, name: str) -> None:
    # A crashed instance leaves its socket file behind with nobody listening on it.
    path = os.path.join(QDir.tempPath(), name)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    assert os.path.exists(path)
    blocked = QLocalServer()
    assert not blocked.listen(name), "the stale file should block a plain listen"
    assert blocked.serverError() is QAbstractSocket.SocketError.AddressInUseError

    assert first.claim()
    assert first.listening


def test_garbage_on_the_socket_raises_nothing(
    first: SingleInstance, name: str, qtbot: QtBot
) -> None:
    from PySide6.QtNetwork import QLocalSocket

    assert first.claim()
    raised: list[bool] = []
    first.raiseRequested.connect(lambda: raised.append(True))
    stranger = QLocalSocket()
    stranger.connectToServer(name)
    assert stranger.waitForConnected(2000)
    stranger.write(b"hello\n")
    stranger.flush()
    qtbot.waitUntil(lambda: stranger.state() is QLocalSocket.LocalSocketState.UnconnectedState)
    assert raised == []
    # The real message still works after it.
    with qtbot.waitSignal(first.raiseRequested, timeout=5000):
        assert SingleInstance(name).notify_running()


def test_names_differ_by_config_file_and_are_stable(tmp_path: Path) -> None:
    a = instance_name(tmp_path / "a.yaml", {})
    assert a == instance_name(tmp_path / "a.yaml", {})
    assert a != instance_name(tmp_path / "b.yaml", {})
    assert a == instance_name(tmp_path / "sub" / ".." / "a.yaml", {})
    assert len(os.path.join(QDir.tempPath(), a)) < 100  # Unix socket paths are short


def test_a_second_process_raises_the_first_and_exits_at_once(tmp_path: Path, qtbot: QtBot) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models: {}\n")
    environ = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    first = SingleInstance(instance_name(config, environ))
    assert first.claim()
    try:
        began = time.monotonic()
        with qtbot.waitSignal(first.raiseRequested, timeout=30_000):
            second = subprocess.Popen(
                [sys.executable, "-m", "ryx_desktop", "--config", str(config)],
                cwd=tmp_path,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        out, err = second.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        first.release()
    assert second.returncode == 0, err
    assert out.strip() == ALREADY_RUNNING
    assert "Traceback" not in err
    assert took < 20, f"the second launch took {took:.1f} s"
