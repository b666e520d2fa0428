"""One ryx-desktop per user and config: a second launch raises the first one's window.

The first instance listens on a local socket (``QLocalServer``); a second launch connects,
sends ``raise`` and exits. The name comes from the caller (see :func:`instance_name`) so two
users, or one user with two config files, never collide.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

RAISE = b"raise\n"

#: How long a second instance waits on the first (it has no window yet, so it may block).
_WAIT_MS = 2000
#: A connect to a Unix socket with no listener fails at once; this only bounds a hung first one.
_PROBE_MS = 500


def instance_name(config_file: Path, environ: Mapping[str, str]) -> str:
    """The local-socket name for this user and config file (short: socket paths are limited)."""
    user = str(os.getuid()) if hasattr(os, "getuid") else environ.get("USERNAME", "")
    where = str(config_file.expanduser().resolve(strict=False))
    digest = hashlib.sha256(f"{user}\0{where}".encode()).hexdigest()[:16]
    return f"ryx-desktop-{digest}"


class SingleInstance(QObject):
    """Claims the name for this process, or tells the process that holds it to raise its window."""

    raiseRequested = Signal()

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._name = name
        self._server: QLocalServer | None = None
        self._clients: set[QLocalSocket] = set()

    @property
    def name(self) -> str:
        return self._name

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.isListening()

    def claim(self) -> bool:
        """True when this is the first instance (it now listens); False when one already runs.

        Runs at startup, before any window exists. A socket file left behind by a crashed
        instance is removed, but only after connecting to it failed: a live one is never taken.
        """
        if self.listening:
            return True
        if self._answers():
            return False
        QLocalServer.removeServer(self._name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self._name):
            server.deleteLater()
            return False  # another instance won the race between our probe and listen
        server.newConnection.connect(self._accept)
        self._server = server
        return True

    def notify_running(self) -> bool:
        """Ask the first instance to raise its window; True once the message was handed over.

        The message waits in the socket until the first instance reads it, so this returns
        without waiting for an answer (and works even from the first instance's own thread).
        """
        socket = QLocalSocket()
        socket.connectToServer(self._name)
        if not socket.waitForConnected(_WAIT_MS):
            socket.abort()
            return False
        socket.write(RAISE)
        delivered = socket.waitForBytesWritten(_WAIT_MS)
        socket.disconnectFromServer()
        if socket.state() is not QLocalSocket.LocalSocketState.UnconnectedState:
            socket.waitForDisconnected(_WAIT_MS)
        return delivered

    def release(self) -> None:
        """Stop listening (the socket file is removed); a later launch becomes the first."""
        for client in list(self._clients):
            client.abort()
        if self._server is not None:
            self._server.close()
            self._server.deleteLater()
            self._server = None

    # ---- the first instance's side: signals only, never a blocking wait ------------------------

    def _answers(self) -> bool:
        probe = QLocalSocket()
        try:
            probe.connectToServer(self._name)
            return probe.waitForConnected(_PROBE_MS)
        finally:
            probe.abort()

    def _accept(self) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            client = self._server.nextPendingConnection()
            self._clients.add(client)
            buffer = bytearray()

            def on_ready(client: QLocalSocket = client, buffer: bytearray = buffer) -> None:
                buffer.extend(bytes(client.readAll().data()))
                if b"\n" not in buffer:
                    if len(buffer) > 64:
                        client.abort()  # not one of ours
                    return
                message, _, _ = bytes(buffer).partition(b"\n")
                buffer.clear()
                if message + b"\n" == RAISE:
                    self.raiseRequested.emit()
                client.disconnectFromServer()

            def on_gone(client: QLocalSocket = client) -> None:
                self._clients.discard(client)
                # Detached from the server first: a socket deleted later while still the
                # server's child crashed PySide6 when this object was garbage-collected first.
                client.setParent(None)
                client.deleteLater()

            client.readyRead.connect(on_ready)
            client.disconnected.connect(on_gone)
            if client.bytesAvailable():
                on_ready()
