"""The desktop app's startup and shutdown, with the real supervisor, proxy, tray and window.

No Docker and no NVML: the engine is the real ``Supervisor`` over ``FakeRuntime`` /
``FakeHealth`` and the GPU probe returns a fixed reading. Everything runs on a qasync loop over
pytest-qt's ``QApplication``, as in the app. Dialogs are recorded instead of shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from ryx_desktop.adapters.setup_probe import SetupProbe
from ryx_desktop.app import Engine, build_proxy
from ryx_desktop.config import Config, save_config
from ryx_desktop.core.chat import ChatService
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.errors import DockerUnavailableError
from ryx_desktop.core.gpu import GpuProbe, GpuReading, GpuStatus
from ryx_desktop.core.ports import Clock, ContainerInfo, RuntimeEvent
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.desktop import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    NO_TRAY_NOTICE,
    Desktop,
    DesktopDeps,
    MessageBoxes,
    StartupAborted,
    run_on_qt,
    start_desktop,
)
from ryx_desktop.proxy import ProxyServer
from ryx_desktop.ui.event_loop import QtAsyncioLoop
from tests.support.fakes import FakeHealth, FakeRuntime
from tests.support.setup_fakes import FakeSetupDocker
from tests.support.waiting import wait_for

GIB = 1024**3
MODEL = "general"
_T = TypeVar("_T")


# ---- fakes and helpers ---------------------------------------------------------------------


class RecordingDialogs:
    """``Dialogs`` that record what would have been shown."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str]] = []

    async def error(self, title: str, message: str, hint: str) -> None:
        self.shown.append((title, message, hint))


class FixedGpuProbe:
    """One 24 GiB GPU, always the same reading."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    async def read(self) -> GpuReading:
        self.reads += 1
        gpu = GpuStatus(
            index=0,
            name="Fake GPU",
            total_bytes=24 * GIB,
            used_bytes=2 * GIB,
            free_bytes=22 * GIB,
            utilization_percent=3.0,
        )
        return GpuReading(gpus=(gpu,))

    async def close(self) -> None:
        self.closed = True


class DockerDown(FakeRuntime):
    """An engine that does not answer until a test sets ``down`` to False."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def list_models(self) -> list[ContainerInfo]:
        if self.down:
            raise DockerUnavailableError("Docker is not running at unix:///var/run/docker.sock")
        return await super().list_models()

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        if self.down:
            raise DockerUnavailableError("Docker is not running at unix:///var/run/docker.sock")
        async for event in super().events():
            yield event


class Rig:
    """The injected parts of one desktop, and what the test saw of them."""

    def __init__(self, *, tray: bool = True, proxy_port: int = 0, docker_up: bool = True) -> None:
        self.runtime = FakeRuntime() if docker_up else DockerDown()
        self.health = FakeHealth(self.runtime)
        self.probe = FixedGpuProbe()
        self.dialogs = RecordingDialogs()
        self.engine: Engine | None = None
        self.proxy_port = proxy_port
        self.setup_docker = FakeSetupDocker("up")
        self.deps = DesktopDeps(
            build_engine=self._engine,
            build_proxy=self._proxy,
            build_setup_probe=self._setup_probe,
            gpu_probe=lambda: self.probe,
            clock=MonotonicClock(),
            tray_available=lambda: tray,
            dialogs=self.dialogs,
            gpu_interval=0.05,
        )

    def _engine(
        self, config: Config, environ: Mapping[str, str], *, clock: Clock, gpu_probe: GpuProbe
    ) -> Engine:
        supervisor = Supervisor(
            config,
            self.runtime,
            self.health,
            clock,
            environ=environ,
            probe_interval=0.05,
            gpu_probe=gpu_probe,
        )
        # Engine's fields name the real adapters; the fakes have the same methods.
        self.engine = Engine(config, self.runtime, self.health, supervisor)  # type: ignore[arg-type]
        return self.engine

    def _proxy(
        self, engine: Engine, environ: Mapping[str, str], chat: ChatService | None
    ) -> ProxyServer:
        return build_proxy(engine, environ, port=self.proxy_port, chat=chat)

    def _setup_probe(
        self, engine: Engine, gpu_probe: GpuProbe, environ: Mapping[str, str]
    ) -> SetupProbe:
        return SetupProbe(self.setup_docker, gpu_probe, environ=environ)  # type: ignore[arg-type]

    def stops(self) -> list[str]:
        return [key for verb, key in self.runtime.calls if verb == "stop"]


def write_config(path: Path, **top: Any) -> Path:
    config = Config.model_validate(
        {
            "default_model": MODEL,
            "models": {MODEL: {"model": "/models/general", "port": 18123, "devices": "none"}},
            **top,
        }
    )
    save_config(config, path)
    return path


def run_loop(qapp: QApplication, scenario: Coroutine[Any, Any, _T]) -> _T:
    loop = QtAsyncioLoop(qapp)
    with loop:
        result: _T = loop.run_until_complete(scenario)
    return result


def run_app(
    qapp: QApplication,
    config_file: Path,
    environ: Mapping[str, str],
    rig: Rig,
    started: Callable[[Desktop], None] | None = None,
    *,
    deadline: float = 20.0,
) -> int:
    """``run_on_qt`` with a watchdog: a quit that never comes fails the test, not hangs it."""
    fired: list[bool] = []
    watchdogs: list[asyncio.TimerHandle] = []

    def guarded(desktop: Desktop) -> None:
        def give_up() -> None:
            fired.append(True)
            desktop.quit()

        watchdogs.append(asyncio.get_running_loop().call_later(deadline, give_up))
        if started is not None:
            started(desktop)

    try:
        code = run_on_qt(qapp, config_file, environ, rig.deps, started=guarded)
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
    assert not fired, f"the app did not quit within {deadline} s"
    return code


def record_closes(desktop: Desktop, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap the real close methods: the list says in which order they ran."""
    order: list[str] = []

    def wrap(name: str, target: object) -> None:
        original = target.close  # type: ignore[attr-defined]

        async def close() -> None:
            order.append(name)
            await original()

        monkeypatch.setattr(target, "close", close)

    if desktop.proxy is not None:
        wrap("proxy", desktop.proxy)
    wrap("gpu monitor", desktop.gpu_monitor)
    wrap("engine", desktop.engine)
    return order


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    # Start at login writes under XDG_CONFIG_HOME: never the real home.
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "RYX_DATA_DIR": str(tmp_path / "data"),  # the chat's conversations
    }


# ---- startup ------------------------------------------------------------------------------


def test_first_run_opens_the_window_on_the_setup_page_and_adding_a_model_writes_the_file(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    config_file = tmp_path / "fresh" / "config.yaml"  # no config file yet: a first run
    rig = Rig(tray=True)

    async def scenario() -> None:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        try:
            window = desktop.window
            # Even with a tray, a first run shows the window, on the setup page, checked.
            assert window.isVisible()
            assert window.current_page() == "setup"
            page = window.pages.currentWidget()
            await wait_for(lambda: page.facts is not None, "the setup checklist")
            results = await page.recheck()
            docker = next(r for r in results if r.name.startswith("Docker"))
            assert docker.ok, docker
            # The setup page stays reachable from the toolbar, and the Chat page is there.
            window.show_page("models")
            window.action("setup").trigger()
            assert window.current_page() == "setup"
            window.show_page("chat")
            assert window.current_page() == "chat"
        finally:
            await desktop.shutdown()

    quits = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)  # as run_on_qt has it: the window closes at shutdown
    try:
        run_loop(qapp, scenario())
    finally:
        qapp.setQuitOnLastWindowClosed(quits)
    assert rig.dialogs.shown == []
    assert not config_file.exists()  # nothing is written until the user adds models


def test_startup_builds_everything_and_the_proxy_answers(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)

    async def scenario() -> tuple[Desktop, list[str]]:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        order = record_closes(desktop, monkeypatch)
        try:
            assert desktop.proxy is not None
            assert desktop.bridge.proxy_url == desktop.proxy.url
            async with httpx.AsyncClient(timeout=5) as client:
                health = await client.get(f"http://127.0.0.1:{desktop.proxy.port}/health")
                assert health.status_code == 200
                models = await client.get(f"http://127.0.0.1:{desktop.proxy.port}/v1/models")
                assert MODEL in models.text
                assert desktop.bridge.requests_total() == 0
                select = await client.post(
                    f"http://127.0.0.1:{desktop.proxy.port}/api/instances/{MODEL}/select"
                )
                assert select.status_code == 200
            # The GPU monitor feeds the bridge, and the proxy's count reaches the status bar.
            await wait_for(lambda: desktop.bridge.vram() is not None, "a VRAM report")
            report = desktop.bridge.vram()
            assert report is not None and report.gpus[0].name == "Fake GPU"
            assert desktop.bridge.requests_total() == 1  # what the status bar's req/s reads
            assert desktop.window.proxy_status_text() == f"Proxy: {desktop.proxy.url}"
            assert not desktop.window.isVisible()  # with a tray, only the icon shows at startup
            assert desktop.window.hide_on_close  # and closing the window only hides it
            assert desktop.tray is not None and desktop.has_tray
            assert desktop.tray.tray.toolTip().endswith(f"Proxy {desktop.proxy.url}")
        finally:
            await desktop.shutdown()
        return desktop, order

    desktop, order = run_loop(qapp, scenario())
    assert rig.dialogs.shown == []
    assert order == ["proxy", "gpu monitor", "engine"]
    assert desktop.closed == ["proxy", "chat", "gpu", "engine"]
    assert rig.probe.closed


def test_the_offscreen_platform_has_no_tray(qapp: QApplication) -> None:
    # Why the default deps give the no-tray fallback in these tests' environment.
    from PySide6.QtWidgets import QSystemTrayIcon

    assert DesktopDeps().tray_available() is QSystemTrayIcon.isSystemTrayAvailable()
    assert not QSystemTrayIcon.isSystemTrayAvailable()


def test_without_a_tray_the_window_opens_says_so_and_closing_it_quits(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=False)
    seen: dict[str, Any] = {}

    def started(desktop: Desktop) -> None:
        seen["desktop"] = desktop
        seen["visible"] = desktop.window.isVisible()
        seen["notice"] = desktop.window.notice_text()
        seen["hide_on_close"] = desktop.window.hide_on_close
        desktop.window.close()  # the user closes the only window

    code = run_app(qapp, config_file, environ, rig, started)

    desktop: Desktop = seen["desktop"]
    assert code == EXIT_OK
    assert desktop.tray is None
    assert seen["visible"] is True
    assert seen["notice"] == NO_TRAY_NOTICE
    assert seen["hide_on_close"] is False
    assert desktop.closed == ["proxy", "chat", "gpu", "engine"]


def test_port_in_use_shows_why_and_the_app_runs_on_without_the_proxy(
    qapp: QApplication,
    tmp_path: Path,
    environ: dict[str, str],
    busy_port: int,
) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True, proxy_port=busy_port)

    async def scenario() -> Desktop:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        try:
            await wait_for(lambda: bool(rig.dialogs.shown), "the proxy dialog")
            # Without the proxy the models still start and stop from the app.
            inst = await desktop.bridge.start(MODEL)
            assert inst is not None and inst.state is InstanceState.READY
            assert desktop.proxy is None
            assert desktop.bridge.proxy_url is None
            assert desktop.bridge.requests_total() is None
            assert desktop.proxy_note == f"port {busy_port} is in use"
            status = desktop.window.proxy_status_text()
            assert status == f"Proxy off: port {busy_port} is in use"
            assert desktop.tray is not None
            assert "Proxy off" in desktop.tray.tray.toolTip()
        finally:
            await desktop.shutdown()
        return desktop

    desktop = run_loop(qapp, scenario())
    [(title, message, hint)] = rig.dialogs.shown
    assert "proxy" in title
    assert f"127.0.0.1:{busy_port}" in message and "in use" in message
    assert "proxy.port" in hint
    assert desktop.closed == ["chat", "gpu", "engine"]  # nothing to close for the proxy


def test_an_invalid_config_is_shown_and_exits_2(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("models:\n  general:\n    port: not-a-port\n")
    rig = Rig()

    async def scenario() -> None:
        await start_desktop(qapp, config_file, environ, rig.deps)

    with pytest.raises(StartupAborted) as aborted:
        run_loop(qapp, scenario())
    assert aborted.value.exit_code == EXIT_USAGE
    [(title, message, hint)] = rig.dialogs.shown
    assert "config" in title
    assert str(config_file) in message
    assert hint
    assert rig.engine is None  # nothing was built


def test_docker_not_running_at_launch_is_waited_for_then_adopted(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    # "Start at login" races the Docker service: the app starts anyway, says what it waits
    # for, and takes over what runs once the engine answers.
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(docker_up=False)
    runtime = rig.runtime
    assert isinstance(runtime, DockerDown)

    async def scenario() -> Desktop:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        try:
            notice = desktop.window.notice_text()
            assert notice.startswith("Waiting for the Docker engine: Docker is not running")
            assert desktop.tray is not None
            desktop.tray.rebuild_menu()
            waiting = desktop.tray.action("engine-waiting")
            assert waiting is not None and not waiting.isEnabled()
            assert "Waiting for the Docker engine" in desktop.tray.tray.toolTip()

            runtime.add_running(MODEL, 18123, "/models/general", spec_hash=None)
            runtime.down = False  # the Docker service is up now
            await wait_for(
                lambda: desktop.bridge.instance(MODEL).state is InstanceState.READY,
                "the running model adopted",
                15,
            )
            assert desktop.bridge.engine_problem is None
            assert desktop.window.notice_text() == ""
            desktop.tray.rebuild_menu()
            assert desktop.tray.action("engine-waiting") is None
        finally:
            await desktop.shutdown()
        return desktop

    run_loop(qapp, scenario())
    assert rig.dialogs.shown == []


# ---- shutdown -----------------------------------------------------------------------------


def test_quit_closes_proxy_then_gpu_then_engine_and_models_keep_running(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)
    seen: dict[str, Any] = {}

    def started(desktop: Desktop) -> None:
        seen["desktop"] = desktop
        seen["order"] = record_closes(desktop, monkeypatch)

        async def use_then_quit() -> None:
            inst = await desktop.bridge.start(MODEL)
            assert inst is not None and inst.state is InstanceState.READY
            assert desktop.tray is not None
            desktop.tray.quitRequested.emit(False)  # the tray's "Quit"

        desktop.bridge.spawn(use_then_quit())

    code = run_app(qapp, config_file, environ, rig, started)

    desktop: Desktop = seen["desktop"]
    assert code == EXIT_OK
    assert seen["order"] == ["proxy", "gpu monitor", "engine"]
    assert rig.stops() == []
    container = rig.runtime.by_key(MODEL)
    assert container is not None and container.serving  # the model keeps running
    assert desktop.proxy is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{desktop.proxy.port}/health", timeout=2)


def test_stop_all_and_quit_stops_the_models_first(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)
    seen: dict[str, Any] = {}
    events: list[str] = []

    def started(desktop: Desktop) -> None:
        seen["desktop"] = desktop
        order = record_closes(desktop, monkeypatch)
        seen["order"] = order
        original_stop = rig.runtime.stop

        async def stop(container_id: str, timeout: float) -> None:
            order.append("model stopped")
            await original_stop(container_id, timeout)

        monkeypatch.setattr(rig.runtime, "stop", stop)

        async def use_then_quit() -> None:
            await desktop.bridge.start(MODEL)
            assert desktop.tray is not None
            desktop.tray.quitRequested.emit(True)  # "Stop all and quit"

        desktop.bridge.spawn(use_then_quit())
        desktop.bridge.instanceChanged.connect(lambda inst: events.append(inst.state.value))

    code = run_app(qapp, config_file, environ, rig, started)

    desktop: Desktop = seen["desktop"]
    assert code == EXIT_OK
    assert seen["order"] == ["model stopped", "proxy", "gpu monitor", "engine"]
    assert rig.stops() == [MODEL]
    assert rig.runtime.by_key(MODEL) is None
    assert desktop.closed == ["models", "proxy", "chat", "gpu", "engine"]
    assert events[-1] == "stopped"


def test_qt_quitting_on_its_own_still_runs_the_whole_shutdown(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    # E.g. the session ends: Qt's loop stops and aboutToQuit fires; the shutdown must still run.
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)
    seen: dict[str, Desktop] = {}

    def started(desktop: Desktop) -> None:
        seen["desktop"] = desktop
        qapp.quit()

    code = run_app(qapp, config_file, environ, rig, started)

    assert code == EXIT_OK
    assert seen["desktop"].closed == ["proxy", "chat", "gpu", "engine"]
    assert rig.probe.closed


def test_sigterm_quits_cleanly(qapp: QApplication, tmp_path: Path, environ: dict[str, str]) -> None:
    config_file = write_config(tmp_path / "config.yaml")
    rig = Rig(tray=True)
    seen: dict[str, Desktop] = {}

    def started(desktop: Desktop) -> None:
        seen["desktop"] = desktop
        # Only when the app handles it: the default action would end the test run.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)

        async def terminate() -> None:
            await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGTERM)

        desktop.bridge.spawn(terminate())

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    code = run_app(qapp, config_file, environ, rig, started)

    assert code == EXIT_OK
    assert seen["desktop"].closed == ["proxy", "chat", "gpu", "engine"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back afterwards


class BlockingDialogs(RecordingDialogs):
    """A dialog the user never dismisses; showing it asks the app to terminate (SIGTERM)."""

    async def error(self, title: str, message: str, hint: str) -> None:
        await super().error(title, message, hint)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(asyncio.Event().wait(), timeout=20)  # fails the test if stuck


def test_a_quit_while_a_startup_dialog_is_open_ends_the_app(
    qapp: QApplication, tmp_path: Path, environ: dict[str, str]
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("models: [not, a, mapping]\n")
    rig = Rig()
    dialogs = BlockingDialogs()
    rig.deps = dataclasses.replace(rig.deps, dialogs=dialogs)

    code = run_app(qapp, config_file, environ, rig)

    assert code == EXIT_OK
    assert len(dialogs.shown) == 1


# ---- the real message box ------------------------------------------------------------------


def open_boxes(qapp: QApplication) -> list[QMessageBox]:
    return [w for w in qapp.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def test_the_message_box_does_not_block_and_returns_when_dismissed(qapp: QApplication) -> None:
    boxes = MessageBoxes()

    async def scenario() -> None:
        shown = asyncio.ensure_future(
            boxes.error("ryx-desktop: proxy off", "the port is in use", "Set proxy.port.")
        )
        await wait_for(lambda: bool(open_boxes(qapp)), "the message box")
        [box] = open_boxes(qapp)
        assert box.text() == "The port is in use"
        assert box.informativeText() == "Set proxy.port."
        assert not shown.done()  # the loop kept running while it is open
        box.button(QMessageBox.StandardButton.Ok).click()
        await asyncio.wait_for(shown, timeout=5)

        cancelled = asyncio.ensure_future(boxes.error("title", "message", ""))
        await wait_for(lambda: bool(open_boxes(qapp)), "the second message box")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert open_boxes(qapp) == []  # a quit closes it

    # As in the app (run_on_qt): closing the only window must not make Qt quit.
    qapp.setQuitOnLastWindowClosed(False)
    try:
        run_loop(qapp, scenario())
    finally:
        qapp.setQuitOnLastWindowClosed(True)


def test_without_a_display_it_says_so_instead_of_aborting(tmp_path: Path) -> None:
    # Qt would abort the process with its own message; the app explains and exits 1.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    config_file = write_config(tmp_path / "config.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "ryx_desktop", "--config", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_FAILURE
    lines = done.stderr.strip().splitlines()
    assert (
        lines[0] == "ryx-desktop: no display to show the tray and window on (DISPLAY is not set)."
    )
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2
