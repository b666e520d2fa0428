"""The tray application: QApplication, the qasync loop, and the engine, proxy, tray and window.

This is the desktop half of the composition root (``app.py`` is the other half): like
``app.py`` it may import every layer, and nothing imports it but the command line, lazily, so
``ryx-desktop status`` never loads Qt.

``main`` checks that no other instance runs for this user and config (a second launch raises the
first one's window and exits), then runs one coroutine on a qasync loop: ``start_desktop`` builds
everything (engine and proxy share the GUI's loop), the app runs until a quit is requested (the
tray's Quit, the window's close when there is no tray, ``aboutToQuit``, SIGINT/SIGTERM), and
``Desktop.shutdown`` closes the proxy, the GPU monitor and the engine in that order. Models keep
running unless the user chose "Stop all and quit". The VRAM gauge reads every host's GPUs: this
machine's through NVML, the other hosts' through the engine's probes (``Engine.gpu_probes``),
and the window follows each host's state through the bridge.

The config file stays the single source of truth while the app runs: a ``ConfigWatcher`` polls
it, applies a valid hand edit to the engine (as a save from Settings would), and refuses an
invalid one, which the window's banner and a tray message show (the app runs on the settings it
read before). Every save from the app goes through the watcher, which refuses to overwrite a
change made since the app read the file.

Startup failures the user can meet are shown as a dialog with one sentence and a hint:
an invalid config exits with 2; an engine that cannot start (Docker not running, no permission
on its socket) exits with 1, since without Docker there is nothing to show or manage; a proxy
that cannot listen (port in use) is not fatal: the app runs on without it and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from ryx_desktop._desktop_app import (
    APP_NAME,
    KEPT_SETTINGS,
    Desktop,
    Dialogs,
    MessageBoxes,
    QuitRequest,
)
from ryx_desktop.adapters.conversation_db import default_store_path
from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.adapters.setup_probe import SetupProbe
from ryx_desktop.app import Chat, Engine, build_chat, build_engine, build_proxy
from ryx_desktop.config import (
    MISSING,
    Config,
    ConfigWatcher,
    config_path,
    read_config,
)
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import ConfigError, PortInUseError, RyxError
from ryx_desktop.core.gpu import GpuProbe
from ryx_desktop.core.gpu_monitor import GpuMonitor
from ryx_desktop.core.ports import Clock
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.desktop_entry import DEFAULT_COMMAND, Autostart, exec_line, launch_command
from ryx_desktop.proxy import ProxyServer
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.chat_tab import ChatTab
from ryx_desktop.ui.event_loop import QtAsyncioLoop, use_qt_event_dispatcher
from ryx_desktop.ui.icons import state_icon
from ryx_desktop.ui.main_thread_gc import MainThreadGarbageCollector
from ryx_desktop.ui.setup_page import SetupPage
from ryx_desktop.ui.single_instance import SingleInstance, instance_name
from ryx_desktop.ui.tray import TrayIcon
from ryx_desktop.ui.window import ManagerWindow

log = logging.getLogger("ryx_desktop.desktop")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
__all__ = ["KEPT_SETTINGS", "Desktop", "DesktopDeps", "QuitRequest", "main", "start_desktop"]

ALREADY_RUNNING = "ryx-desktop is already running; its window was raised."
NO_TRAY_NOTICE = "No system tray found: ryx-desktop runs in this window; closing it quits."


class EngineFactory(Protocol):
    def __call__(
        self, config: Config, environ: Mapping[str, str], *, clock: Clock, gpu_probe: GpuProbe
    ) -> Engine: ...


class ProxyFactory(Protocol):
    def __call__(
        self, engine: Engine, environ: Mapping[str, str], chat: ChatService | None
    ) -> ProxyServer: ...


class ChatFactory(Protocol):
    def __call__(
        self, engine: Engine, environ: Mapping[str, str], proxy_root: Callable[[], str]
    ) -> Chat: ...


class SetupProbeFactory(Protocol):
    def __call__(
        self, engine: Engine, gpu_probe: GpuProbe, environ: Mapping[str, str]
    ) -> SetupProbe: ...


def _real_engine(
    config: Config, environ: Mapping[str, str], *, clock: Clock, gpu_probe: GpuProbe
) -> Engine:
    return build_engine(config, environ, clock=clock, gpu_probe=gpu_probe)


def _real_proxy(
    engine: Engine, environ: Mapping[str, str], chat: ChatService | None
) -> ProxyServer:
    return build_proxy(engine, environ, chat=chat)


def _real_chat(engine: Engine, environ: Mapping[str, str], proxy_root: Callable[[], str]) -> Chat:
    return build_chat(engine, environ, default_store_path(environ), proxy_root)


def _real_setup_probe(
    engine: Engine, gpu_probe: GpuProbe, environ: Mapping[str, str]
) -> SetupProbe:
    return SetupProbe(engine.local_runtime, gpu_probe, environ=environ)


@dataclass(frozen=True)
class DesktopDeps:
    """What the desktop is built from; tests replace Docker, NVML, the tray and the dialogs."""

    build_engine: EngineFactory = _real_engine
    build_proxy: ProxyFactory = _real_proxy
    #: The conversations (SQLite) of the chat page and the proxy's sessions API.
    build_chat: ChatFactory = _real_chat
    #: What the setup page reads: Docker, the NVIDIA runtime, GPUs, the image, the models.
    build_setup_probe: SetupProbeFactory = _real_setup_probe
    gpu_probe: Callable[[], GpuProbe] = NvmlGpuProbe
    clock: Clock = field(default_factory=MonotonicClock)
    tray_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable
    dialogs: Dialogs = field(default_factory=MessageBoxes)
    gpu_interval: float = 2.0
    #: The ``Exec=`` command a "Start at login" entry runs.
    launch_command: str = DEFAULT_COMMAND
    #: Seconds between two looks at the config file for hand edits.
    config_interval: float = 1.0


class StartupAborted(Exception):
    """Startup failed and the user was told why; the process exits with ``exit_code``."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


async def start_desktop(
    app: QApplication,
    config_file: Path,
    environ: Mapping[str, str],
    deps: DesktopDeps | None = None,
    *,
    quit_request: QuitRequest | None = None,
) -> Desktop:
    """Load the config, open the engine, the GPU monitor and the proxy, show the tray or window.

    Raises ``StartupAborted`` after telling the user why it cannot start.
    """
    deps = deps or DesktopDeps()
    quit_request = quit_request or QuitRequest()
    try:
        config, fingerprint = await asyncio.get_running_loop().run_in_executor(
            None, read_config, config_file
        )
    except ConfigError as exc:
        await deps.dialogs.error(f"{APP_NAME}: invalid config", _problems(exc), exc.hint)
        raise StartupAborted(EXIT_USAGE) from None

    # What is opened is closed again, in reverse order, if a later step fails or the startup
    # is cancelled (a quit while a dialog is open); on success the desktop's shutdown owns it.
    async with contextlib.AsyncExitStack() as undo:
        # One GPU probe: the VRAM gauge reads it, and the supervisor plans room on it.
        probe = deps.gpu_probe()
        undo.push_async_callback(probe.close)
        engine = deps.build_engine(config, environ, clock=deps.clock, gpu_probe=probe)
        undo.push_async_callback(engine.close)
        try:
            await engine.supervisor.open(watch=engine.watch)
        except RyxError as exc:
            await undo.aclose()
            await deps.dialogs.error(f"{APP_NAME} cannot start", exc.message, exc.hint)
            raise StartupAborted(EXIT_FAILURE) from None

        # This machine's GPUs through NVML, the other hosts' through their own probes.
        monitor = GpuMonitor(
            probe,
            engine.supervisor,
            engine.runtime,
            deps.clock,
            interval=deps.gpu_interval,
            remote_probes=engine.gpu_probes,
        )
        await monitor.open()
        undo.push_async_callback(monitor.close)

        # The chat page and the sessions API share one store; the chat goes through the proxy.
        chat = deps.build_chat(engine, environ, lambda: built.local_root)
        undo.push_async_callback(chat.close)  # after the proxy's close: its answers write here
        built = deps.build_proxy(engine, environ, chat.service)
        proxy, proxy_error = await _start_proxy(built)
        proxy_note = _proxy_note(proxy_error, built.port) if proxy_error is not None else ""
        if proxy is not None:
            undo.push_async_callback(proxy.close)

        watcher = ConfigWatcher(
            config_file,
            fingerprint,
            _reloader(engine.supervisor),
            interval=deps.config_interval,
        )
        desktop = _build_ui(
            app,
            config_file,
            environ,
            deps,
            engine=engine,
            probe=probe,
            monitor=monitor,
            proxy=proxy,
            proxy_note=proxy_note,
            quit_request=quit_request,
            watcher=watcher,
            chat=chat,
            first_run=fingerprint == MISSING,
        )
        await watcher.open()
        undo.push_async_callback(watcher.close)
        undo.pop_all()
    if proxy_error is not None:
        # Not awaited: the app is usable while the dialog is open.
        desktop.bridge.spawn(
            deps.dialogs.error(f"{APP_NAME}: proxy off", proxy_error.message, proxy_error.hint)
        )
    return desktop


def _build_ui(
    app: QApplication,
    config_file: Path,
    environ: Mapping[str, str],
    deps: DesktopDeps,
    *,
    engine: Engine,
    probe: GpuProbe,
    monitor: GpuMonitor,
    proxy: ProxyServer | None,
    proxy_note: str,
    quit_request: QuitRequest,
    watcher: ConfigWatcher,
    chat: Chat,
    first_run: bool,
) -> Desktop:
    """The bridge, the window and (when there is a tray) the tray icon, wired together.

    ``first_run`` (no config file yet): the window opens at once, on the setup page.
    """
    bridge = EngineBridge(
        engine.supervisor,
        engine.runtime,
        proxy_url=proxy.url if proxy is not None else None,
        vram_source=monitor.subscribe,
        requests_total=proxy.metrics.requests_total if proxy is not None else None,
        # Every save from the app: refused when the file changed since it was read.
        apply_config=watcher.save,
    )
    clipboard = app.clipboard()
    setup_probe = deps.build_setup_probe(engine, probe, environ)
    setup_page = SetupPage(
        config=lambda: bridge.config,
        facts=setup_probe.facts,
        scan=setup_probe.scan,
        save=watcher.save,
        pull=setup_probe.pull,
        load_compose=setup_probe.load_compose,
    )
    bridge.configChanged.connect(setup_page.refresh)
    chat_page = ChatTab(chat.service, bridge, clipboard=clipboard)
    window = ManagerWindow(
        bridge,
        clipboard=clipboard,
        clock=deps.clock.now,
        autostart=_autostart(environ, deps.launch_command),
        chat_page=chat_page,
        setup_page=setup_page,
    )
    # The checklist is read each time the page comes forward (Docker may have started since).
    window.pageShown.connect(lambda name: setup_page.recheck() if name == "setup" else None)
    setup_page.modelsAdded.connect(lambda _keys: window.show_page("models"))
    window.set_proxy_status(proxy.url if proxy is not None else None, proxy_note)
    tray = TrayIcon(bridge, clipboard=clipboard) if deps.tray_available() else None
    desktop = Desktop(
        config_path=config_file,
        engine=engine,
        gpu_probe=probe,
        gpu_monitor=monitor,
        proxy=proxy,
        bridge=bridge,
        window=window,
        tray=tray,
        quit_request=quit_request,
        config_watcher=watcher,
        proxy_note=proxy_note,
        chat=chat,
        chat_page=chat_page,
        setup_page=setup_page,
    )
    watcher.subscribe(desktop.on_config_file)
    if tray is not None:
        window.hide_on_close = True
        tray.openManagerRequested.connect(desktop.show_window)
        tray.showLogsRequested.connect(desktop.show_logs)
        tray.settingsRequested.connect(desktop.show_settings)
        tray.quitRequested.connect(desktop.quit)
        tray.show()
    else:
        window.hide_on_close = False
        window.closed.connect(desktop.quit)
        window.show_notice(NO_TRAY_NOTICE)
        desktop.show_window()
    if first_run:
        window.show_page("setup")
        desktop.show_window()
    return desktop


def _reloader(supervisor: Supervisor) -> Callable[[Config], Awaitable[None]]:
    """How a hand edit of the config file is applied: as a save from Settings applies it."""

    async def apply(config: Config) -> None:
        if config != supervisor.config:  # an edit of comments or layout changes nothing
            await supervisor.reconfigure(config)

    return apply


async def _start_proxy(proxy: ProxyServer) -> tuple[ProxyServer | None, RyxError | None]:
    """The started proxy, or None and why it could not listen (the app runs on without it)."""
    try:
        await proxy.start()
    except RyxError as exc:
        log.warning("%s", exc.message)
        return None, exc
    return proxy, None


def _proxy_note(error: RyxError, port: int) -> str:
    """Why the proxy is off, in the status bar's words (after "Proxy off: ")."""
    if isinstance(error, PortInUseError):
        return f"port {port} is in use"
    return "it could not start"


def _autostart(environ: Mapping[str, str], command: str) -> Autostart | None:
    try:
        return Autostart(environ, command)
    except RyxError as exc:  # no HOME: the window offers no "Start at login"
        log.info("no autostart: %s", exc.message)
        return None


def _launch_command(argv: Sequence[str], config: str | None) -> str:
    """How a login session starts the app as it runs now (with its ``--config``)."""
    command = launch_command(argv[0] if argv else "", sys.executable)
    if config:
        command += " " + exec_line(["--config", str(Path(config).expanduser().absolute())])
    return command


async def run_desktop(
    app: QApplication,
    config_file: Path,
    environ: Mapping[str, str],
    deps: DesktopDeps | None = None,
    *,
    quit_request: QuitRequest | None = None,
    started: Callable[[Desktop], None] | None = None,
) -> int:
    """Start, run until a quit is requested, shut down; returns the exit code.

    ``started`` is called with the running desktop (the app raises its window from a second
    launch through it; tests inspect and drive the app with it).
    """
    quit_request = quit_request or QuitRequest()
    startup = asyncio.ensure_future(
        start_desktop(app, config_file, environ, deps, quit_request=quit_request)
    )
    quit_early = asyncio.ensure_future(quit_request.wait())
    try:
        await asyncio.wait({startup, quit_early}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        quit_early.cancel()
    if not startup.done():  # a quit while starting (e.g. SIGTERM with a dialog open)
        startup.cancel()
        with contextlib.suppress(asyncio.CancelledError, StartupAborted):
            await startup
        return EXIT_OK
    try:
        desktop = startup.result()
    except StartupAborted as aborted:
        return aborted.exit_code
    if started is not None:
        started(desktop)
    stop_all = await quit_request.wait()
    await desktop.shutdown(stop_all=stop_all)
    return EXIT_OK


def run_on_qt(
    app: QApplication,
    config_file: Path,
    environ: Mapping[str, str],
    deps: DesktopDeps | None = None,
    *,
    started: Callable[[Desktop], None] | None = None,
) -> int:
    """Run the desktop on a qasync loop over ``app`` until it quit and shut down.

    A quit comes from the tray, from closing the window when there is no tray, from SIGINT or
    SIGTERM, or from Qt itself (``aboutToQuit``, e.g. when the session ends): in every case the
    shutdown coroutine runs to its end on the loop before this returns.
    """
    loop = QtAsyncioLoop(app)
    quit_request = QuitRequest()
    qt_quit: list[bool] = []

    def about_to_quit() -> None:
        # Qt's loop has ended already: nothing asyncio may run now (qasync's last pass over
        # Qt's events runs callbacks with no running loop). The quit request is set once the
        # loop runs again, in _run_to_completion.
        qt_quit.append(True)

    # The tray keeps the app alive with no window open; without a tray, closing the window
    # asks for a quit itself (``Desktop.quit``), so Qt never quits on its own here.
    quit_on_last_window = app.quitOnLastWindowClosed()
    app.setQuitOnLastWindowClosed(False)
    app.aboutToQuit.connect(about_to_quit)
    try:
        with loop:
            handled = _on_signals(loop, quit_request.set)
            try:
                task = loop.create_task(
                    run_desktop(
                        app,
                        config_file,
                        environ,
                        deps,
                        quit_request=quit_request,
                        started=started,
                    )
                )
                return _run_to_completion(
                    loop, task, qt_quitting=lambda: bool(qt_quit), quit=quit_request.set
                )
            finally:
                for signum in handled:
                    loop.remove_signal_handler(signum)
                _cancel_leftovers(loop)
    finally:
        app.aboutToQuit.disconnect(about_to_quit)
        app.setQuitOnLastWindowClosed(quit_on_last_window)


def main(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    config: str | None = None,
    deps: DesktopDeps | None = None,
) -> int:
    """``ryx-desktop`` with no command: the tray application. Returns the exit code.

    What stops it before the window exists raises ``RyxError``; the CLI prints that.
    """
    problem = _display_problem(environ)
    if problem:
        raise RyxError(
            problem,
            "run it inside your desktop session, or use `ryx-desktop serve` "
            "for the proxy without a GUI.",
        )
    config_file = config_path(config, environ)
    use_qt_event_dispatcher(os.environ)
    app = QApplication(list(argv))
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName(APP_NAME)
    app.setWindowIcon(state_icon(None))

    single = SingleInstance(instance_name(config_file, environ))
    if not single.claim():
        if single.notify_running():
            print(ALREADY_RUNNING)
            return EXIT_OK
        raise RyxError(
            "another ryx-desktop holds this config but did not answer.",
            "quit it (or end its process), then start ryx-desktop again.",
        )

    _configure_logging(environ)
    deps = deps or DesktopDeps(launch_command=_launch_command(argv, config))

    garbage = MainThreadGarbageCollector()

    def started(desktop: Desktop) -> None:
        single.raiseRequested.connect(desktop.show_window)
        garbage.freeze()

    garbage.start()
    try:
        return run_on_qt(app, config_file, environ, deps, started=started)
    finally:
        garbage.stop()
        single.release()


def _run_to_completion(
    loop: asyncio.AbstractEventLoop,
    task: asyncio.Task[int],
    *,
    qt_quitting: Callable[[], bool],
    quit: Callable[[], None],
) -> int:
    """Run ``task`` to its end, even when Qt's loop was ended from outside (``app.quit()``).

    Then ``aboutToQuit`` was emitted after Qt's loop had stopped, so the shutdown has not run:
    request the quit and run the loop again until the shutdown is done.
    """
    while True:
        try:
            return loop.run_until_complete(task)
        except RuntimeError:
            if task.done() or not qt_quitting():
                raise
            log.info("Qt is quitting: shutting down")
            quit()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())


def _on_signals(loop: asyncio.AbstractEventLoop, quit: Callable[[], None]) -> list[int]:
    """SIGINT and SIGTERM quit cleanly (models keep running) where the loop supports it."""
    handled: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, quit)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(signum)
    return handled


def _display_problem(environ: Mapping[str, str]) -> str:
    """Why Qt could not open a window here ("" when it can); Qt would abort without a word."""
    if not sys.platform.startswith("linux") or environ.get("QT_QPA_PLATFORM"):
        return ""
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return ""
    return "no display to show the tray and window on (DISPLAY is not set)."


def _configure_logging(environ: Mapping[str, str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("ryx_desktop")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if environ.get("RYX_DEBUG") else logging.INFO)


def _problems(error: RyxError) -> str:
    problems = getattr(error, "errors", None) or [error.message]
    return "\n".join(str(p) for p in problems)
