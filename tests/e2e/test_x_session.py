"""``ryx-desktop`` in a real X session: the tray icon, its menu and the manager window.

The real console entry runs as a child process on an Xvfb display with ``trayer`` as the tray
host and the real Docker engine behind it (one model on the fake vLLM image). The test drives it
as a person would, through X only: it finds the tray icon window, right-clicks it, starts the
model from the menu (the icon turns amber, then green: read from the screen), opens the model
manager from the menu, and quits from the menu. Screenshots of the tray menu and of the window
are saved as test artifacts (``x11-tray-menu.png``, ``x11-manager-window.png``; the
offscreen window test of tests/gui writes ``manager-window.png``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from PySide6.QtGui import QColor, QImage

from ryx_desktop.config import Config, save_config
from ryx_desktop.core.states import InstanceState
from ryx_desktop.ui.icons import state_colour
from tests.support.artifacts import artifact_path
from tests.support.xsession import Geometry, TrayHost, XDisplay, XSessionError, wait_until

pytestmark = [pytest.mark.x11, pytest.mark.docker]

APP_CLASS = "ryx-desktop"  # WM_CLASS of every window the app opens
WINDOW_TITLE = "Model manager"
MODEL = "general"
LOAD_SECONDS = 4  # the fake's load time: long enough to see the amber icon on the screen
EXIT_TIMEOUT = 15.0


def ryx_desktop_command() -> list[str]:
    """The venv's ``ryx-desktop`` console script (installed by ``pip install -e``)."""
    script = Path(sys.executable).with_name("ryx-desktop")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ryx_desktop"]


@pytest.fixture
def app_env(
    tmp_path: Path, x_display: XDisplay, make_config: Callable[..., Config]
) -> dict[str, str]:
    """The app's environment: the Xvfb display, a config file, and a home of its own."""
    config = make_config(
        {
            MODEL: {
                "name": "Fake general",
                "model": "/models/small/general/qwen2.5-3b",
                "env": {"FAKE_VLLM_LOAD_SECONDS": str(LOAD_SECONDS)},
            }
        },
        default_model=MODEL,
    )
    config_file = tmp_path / "config.yaml"
    save_config(config, config_file)
    home = tmp_path / "home"
    runtime = tmp_path / "runtime"
    for folder in (home, runtime):
        folder.mkdir(mode=0o700)
    env = x_display.env()
    env.update(
        QT_QPA_PLATFORM="xcb",
        RYX_CONFIG=str(config_file),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(runtime),
    )
    env.pop("RYX_DEBUG", None)
    return env


class RunningApp:
    """The ``ryx-desktop`` child process and its log."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"ryx-desktop exited ({self.process.returncode}):\n{self.log()}")
        return True


@pytest.fixture
def app(app_env: dict[str, str], tray: TrayHost, tmp_path: Path) -> Iterator[RunningApp]:
    """``ryx-desktop`` started with the tray host up; killed if the test left it running."""
    log_path = tmp_path / "ryx-desktop.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ryx_desktop_command(),
            env=app_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    running = RunningApp(process, log_path)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


# --------------------------------------------------------------------------- reading the screen


def colour_at(path: Path, x: int, y: int) -> QColor:
    image = QImage(str(path))
    assert not image.isNull(), f"{path} is not an image"
    return image.pixelColor(x, y)


def close_to(colour: QColor, expected: QColor, tolerance: int = 24) -> bool:
    return all(
        abs(a - b) <= tolerance
        for a, b in zip(
            (colour.red(), colour.green(), colour.blue()),
            (expected.red(), expected.green(), expected.blue()),
            strict=True,
        )
    )


def icon_colour(display: XDisplay, icon: int, tmp_path: Path) -> QColor:
    """The colour at the middle of the tray icon, as the screen shows it now."""
    where = display.geometry(icon)
    shot = display.screenshot(tmp_path / "icon.png", where)
    return colour_at(shot, where.width // 2, where.height // 2)


def open_menu(display: XDisplay, icon: int, app: RunningApp) -> int:
    """Right-click the tray icon; return the menu's window once it is on the screen."""
    before = set(display.search("--class", APP_CLASS))

    def menu() -> int | None:
        app.alive()
        new = [w for w in display.search("--class", APP_CLASS) if w not in before]
        return new[0] if new else None

    display.click(icon, button=3)
    try:
        return wait_until(menu, "the tray menu to open after a right click on the icon")
    except XSessionError as exc:
        pytest.fail(f"{exc}\n{display.tree()}\napp log:\n{app.log()}")


def wait_closed(display: XDisplay, window: int) -> None:
    wait_until(lambda: not display.is_viewable(window), "the tray menu to close")


def distinct_colours(path: Path, area: Geometry, step: int = 4) -> int:
    image = QImage(str(path))
    seen = {
        image.pixel(x, y)
        for x in range(0, min(area.width, image.width()), step)
        for y in range(0, min(area.height, image.height()), step)
    }
    return len(seen)


# --------------------------------------------------------------------------- the test


def test_tray_icon_menu_and_manager_window_in_a_real_x_session(
    app: RunningApp,
    tray: TrayHost,
    x_display: XDisplay,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    display = x_display

    # The tray icon: a window of the app embedded in trayer's panel, grey while nothing runs.
    try:
        icon = wait_until(
            lambda: app.alive() and tray.icon_of(APP_CLASS),
            "the app's tray icon in trayer's panel",
            timeout=60,
        )
    except XSessionError as exc:
        pytest.fail(f"{exc}\n{display.tree()}\napp log:\n{app.log()}")
    assert close_to(icon_colour(display, icon, tmp_path), state_colour(InstanceState.STOPPED))
    assert not display.search("--name", WINDOW_TITLE), "the window opened although a tray exists"

    # Start the model from the menu: its submenu is the second item (after "Copy proxy URL"),
    # and its second entry is Start (after "Use for requests with no model").
    menu = open_menu(display, icon, app)
    display.key("Down", "Down", "Right", "Down", "Return")
    wait_closed(display, menu)

    colours: list[str] = []

    def ready() -> bool:
        app.alive()
        colour = icon_colour(display, icon, tmp_path)
        colours.append(colour.name())
        return close_to(colour, state_colour(InstanceState.READY))

    wait_until(ready, "the tray icon to turn green (the model ready)", timeout=90)
    amber = state_colour(InstanceState.STARTING)
    assert any(close_to(QColor(c), amber) for c in colours), (
        f"the icon never showed amber while the model loaded: {colours}"
    )

    # The menu again, now with the model ready: its screenshot is the README's.
    menu = open_menu(display, icon, app)
    area = tray.display.geometry(tray.panel()).union(display.geometry(menu)).grown(8)
    shot = display.screenshot(artifact_path("x11-tray-menu.png"), area)
    assert distinct_colours(shot, area) > 4, "the tray menu screenshot is blank"

    # "Open model manager" is the fourth item from the bottom (Quit and Stop all and quit are
    # the last two, Settings... is above them).
    display.key("Up", "Up", "Up", "Up", "Return")
    wait_closed(display, menu)
    try:
        windows = wait_until(
            lambda: app.alive() and display.search("--name", WINDOW_TITLE),
            "the model manager window to be mapped",
        )
    except XSessionError as exc:
        pytest.fail(f"{exc}\n{display.tree()}\napp log:\n{app.log()}")
    window = windows[0]
    assert display.is_viewable(window)
    assert APP_CLASS in display.window_name(window)
    where = display.geometry(window)
    assert where.width >= 600 and where.height >= 400, where
    shot = display.screenshot(artifact_path("x11-manager-window.png"), where)
    assert distinct_colours(shot, where) > 8, "the window screenshot is blank"

    # Quit from the menu: the second item from the bottom. Models keep running.
    menu = open_menu(display, icon, app)
    display.key("Up", "Up", "Return")
    began = time.monotonic()
    try:
        code = app.process.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ryx-desktop did not exit within {EXIT_TIMEOUT} s of Quit:\n{app.log()}")
    log = app.log()
    assert code == 0, log
    assert time.monotonic() - began < EXIT_TIMEOUT
    assert "Traceback" not in log, log
    container = docker_client.containers.get(f"ryx-vllm-{MODEL}")
    assert container.status == "running", "Quit (not 'Stop all and quit') stopped the model"
    assert not display.search("--class", APP_CLASS), "a window of the app outlived it"


@pytest.fixture
def first_run_env(app_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The same session, but no config file yet: what a new user starts with."""
    return {**app_env, "RYX_CONFIG": str(tmp_path / "fresh" / "config.yaml")}


def test_a_first_run_opens_the_setup_page_in_a_real_x_session(
    first_run_env: dict[str, str], tray: TrayHost, x_display: XDisplay, tmp_path: Path
) -> None:
    display = x_display
    log_path = tmp_path / "first-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ryx_desktop_command(),
            env=first_run_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    app = RunningApp(process, log_path)
    try:
        # With a tray host there, a first run still opens the window: on the setup page.
        try:
            windows = wait_until(
                lambda: app.alive() and display.search("--name", WINDOW_TITLE),
                "the window of a first run to be mapped",
                timeout=60,
            )
        except XSessionError as exc:
            pytest.fail(f"{exc}\n{display.tree()}\napp log:\n{app.log()}")
        where = display.geometry(windows[0])
        assert where.width >= 600 and where.height >= 400, where
        # The checklist reads the real Docker engine; its first line says it answers.
        shots: list[Path] = []

        def checked() -> bool:
            app.alive()
            shot = display.screenshot(artifact_path("x11-first-run.png"), where)
            shots.append(shot)
            return distinct_colours(shot, where) > 8 and "setup checklist" in app.log()

        wait_until(checked, "the setup page's checklist on the screen", timeout=30)
        assert not (tmp_path / "fresh" / "config.yaml").exists()  # nothing written unasked
        process.terminate()
        code = process.wait(EXIT_TIMEOUT)
        assert code == 0, app.log()
        assert "Traceback" not in app.log(), app.log()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
