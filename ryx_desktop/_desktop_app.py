"""The running desktop app: what the startup built, its windows, and its orderly shutdown.

Part of the desktop's composition root (see ``desktop.py``, which builds a ``Desktop`` and runs
it): the user-facing dialogs of a startup failure, the quit request, and ``Desktop`` itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from ryx_desktop.config import ConfigWatcher, FileChange, WatchEvent
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.gpu_monitor import GpuMonitor
from ryx_desktop.proxy import ProxyServer
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.chat_tab import ChatTab
from ryx_desktop.ui.setup_page import SetupPage
from ryx_desktop.ui.tray import TrayIcon
from ryx_desktop.ui.window import ManagerWindow

if TYPE_CHECKING:
    from ryx_desktop.app import Chat, Engine

log = logging.getLogger("ryx_desktop.desktop")

APP_NAME = "ryx-desktop"
#: Added to the hint of a hand edit of the config file that was not loaded.
KEPT_SETTINGS = "Until then ryx-desktop keeps running on the settings it read before."


class Dialogs(Protocol):
    """Tells the user about a startup failure (tests record instead of opening a box)."""

    async def error(self, title: str, message: str, hint: str) -> None:
        """Show ``message`` and ``hint``; return once the user dismissed it."""
        ...


class MessageBoxes:
    """``Dialogs`` as non-blocking ``QMessageBox``es: awaiting one never nests an event loop."""

    def __init__(self) -> None:
        self._open: set[QMessageBox] = set()

    async def error(self, title: str, message: str, hint: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, sentence(message))
        if hint:
            box.setInformativeText(hint)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finished(_result: int) -> None:
            self._open.discard(box)
            if not done.done():
                done.set_result(None)

        box.finished.connect(finished)
        self._open.add(box)
        box.show()
        try:
            await done
        finally:
            if box in self._open:  # cancelled: the app is quitting
                self._open.discard(box)
                box.close()


class QuitRequest:
    """Set once by whatever asks the app to quit; ``stop_all`` when models should stop too."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.stop_all = False

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def set(self, stop_all: bool = False) -> None:
        if not self._event.is_set():
            self.stop_all = stop_all
            self._event.set()

    async def wait(self) -> bool:
        """Wait for the request; returns ``stop_all``."""
        await self._event.wait()
        return self.stop_all


@dataclass(eq=False)
class Desktop:
    """The running desktop app: what ``start_desktop`` built, and its orderly shutdown."""

    config_path: Path
    engine: Engine
    gpu_probe: GpuProbe
    gpu_monitor: GpuMonitor
    proxy: ProxyServer | None
    bridge: EngineBridge
    window: ManagerWindow
    tray: TrayIcon | None
    quit_request: QuitRequest
    #: The config file: hand edits are loaded from it, and the app's saves go through it.
    config_watcher: ConfigWatcher
    #: Why the proxy is off ("" while it runs): the status bar shows "Proxy off: <note>".
    proxy_note: str = ""
    #: The chat page's and the sessions API's conversations (closed after the proxy).
    chat: Chat | None = None
    #: The window's pages with work of their own, ended before the window closes.
    chat_page: ChatTab | None = None
    setup_page: SetupPage | None = None
    #: What shutdown closed, in order (for people reading logs, and for tests).
    closed: list[str] = field(default_factory=list)
    _shut_down: bool = field(default=False, init=False)

    @property
    def has_tray(self) -> bool:
        return self.tray is not None

    def quit(self, stop_all: bool = False) -> None:
        """Ask the app to quit; with ``stop_all`` every model is stopped first."""
        self.quit_request.set(stop_all)

    def show_window(self) -> None:
        """Bring the manager window to the front (tray click, a second launch)."""
        window = self.window
        window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
        window.show()
        window.raise_()
        window.activateWindow()

    def show_logs(self, key: str) -> None:
        """Open the window on model ``key``'s live log (the tray's "Show logs")."""
        self.show_window()
        self.window.show_logs(key)

    def show_settings(self) -> None:
        """Open the window and its settings dialog (the tray's "Settings")."""
        self.show_window()
        self.window.open_settings()

    def on_config_file(self, event: WatchEvent) -> None:
        """Say what became of a change of the config file: loaded, or why not (banner, tray)."""
        problem = event.problem
        if problem is None:
            self.window.set_config_problem(None)
            if event.change is FileChange.RELOADED:
                self.window.statusBar().showMessage(f"Reloaded {self.config_path}", 10_000)
            return
        if event.change is FileChange.REMOVED:
            title, message, hint = f"{APP_NAME}: config file deleted", problem.message, problem.hint
        else:
            title = f"{APP_NAME}: config not reloaded"
            message = f"Config not reloaded: {problem.message}"
            hint = f"{problem.hint} {KEPT_SETTINGS}" if problem.hint else KEPT_SETTINGS
        self.window.set_config_problem(message, hint)
        if self.tray is not None:
            self.tray.notify(title, f"{message}\n{hint}", warning=True)

    async def shutdown(self, *, stop_all: bool = False) -> None:
        """Stop the models if asked, then close the proxy, the GPU monitor and the engine.

        Each step runs even when an earlier one failed (that is logged): a quit always
        releases the port and Docker's threads.
        """
        if self._shut_down:
            return
        self._shut_down = True
        await self.config_watcher.close()  # no reload while the engine goes away
        if stop_all:
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.window.show_notice("Stopping every model…")
                await self._step("models", self.engine.supervisor.stop_all)
            finally:
                QApplication.restoreOverrideCursor()
        if self.setup_page is not None:
            self.setup_page.cancel()
        if self.chat_page is not None:
            try:  # an answer streaming now is kept, marked as cut
                await self.chat_page.aclose()
            except Exception:
                log.exception("closing the chat page failed")
        if self.tray is not None:
            self.tray.hide()
        self.window.hide_on_close = False
        self.window.close()  # stops its timers and the log it follows
        if self.proxy is not None:
            await self._step("proxy", self.proxy.close)
        if self.chat is not None:
            await self._step("chat", self.chat.close)
        await self._step("gpu", self.gpu_monitor.close, self.gpu_probe.close)
        await self._step("engine", self.engine.close)
        self.bridge.close()
        # Deleted here, on the Qt thread: left to Python's garbage collector, which may run in
        # any thread, PySide6 would defer their deletion and can crash doing it.
        if self.tray is not None:
            self.tray.menu.deleteLater()  # the tray icon does not own its menu
            self.tray.deleteLater()
        self.window.deleteLater()
        self.bridge.deleteLater()

    async def _step(self, name: str, *closers: Callable[[], Awaitable[None]]) -> None:
        try:
            for close in closers:
                await close()
        except RyxError as exc:
            log.warning("%s: %s", name, exc.message)
        except Exception:
            log.exception("closing the %s failed", name)
        else:
            self.closed.append(name)


def sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] if text else text
