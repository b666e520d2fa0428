"""A real X session for end-to-end tests: Xvfb, a tray host (trayer), xdotool and screenshots.

``xvfb()`` starts a virtual X server on a display number it picks itself (``-displayfd``: no
races between parallel runs); ``tray_host(display)`` runs ``trayer`` on it and returns once the
freedesktop system tray selection (``_NET_SYSTEM_TRAY_S0``) has an owner, which is what Qt's
``QSystemTrayIcon.isSystemTrayAvailable()`` checks. No window manager is needed: trayer embeds
the icons itself. ``XDisplay`` wraps xdotool for finding, clicking and typing into windows, and
``XDisplay.screenshot`` saves the screen or a part of it as PNG with Qt's xcb platform (PySide6 is
already installed; no image library is needed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

#: The programs the X tests run, and the Debian package that provides each.
TOOLS = {
    "Xvfb": "xvfb",
    "trayer": "trayer",
    "xdotool": "xdotool",
    "xwininfo": "x11-utils",
}

SCREEN = (1280, 800)
START_TIMEOUT = 15.0

_T = TypeVar("_T")


class XSessionError(RuntimeError):
    """The X session could not be set up or did not do what was expected in time."""


def missing_tools() -> list[str]:
    """``"program (Debian package)"`` for every X tool that is not on ``PATH``."""
    return [f"{tool} ({package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]


def wait_until(predicate: Callable[[], _T], what: str, timeout: float = START_TIMEOUT) -> _T:
    """Poll ``predicate`` until it returns something truthy; raise ``XSessionError`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise XSessionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- the X display


@dataclass(frozen=True)
class Geometry:
    """A window's position on the screen and its size, in pixels."""

    x: int
    y: int
    width: int
    height: int

    def union(self, other: Geometry) -> Geometry:
        """The smallest rectangle holding both."""
        left, top = min(self.x, other.x), min(self.y, other.y)
        right = max(self.x + self.width, other.x + other.width)
        bottom = max(self.y + self.height, other.y + other.height)
        return Geometry(left, top, right - left, bottom - top)

    def grown(self, margin: int) -> Geometry:
        """This rectangle with ``margin`` pixels more on every side (clipped at 0)."""
        x, y = max(0, self.x - margin), max(0, self.y - margin)
        return Geometry(x, y, self.x + self.width + margin - x, self.y + self.height + margin - y)


@dataclass(frozen=True)
class TreeWindow:
    """One window of an ``xwininfo -tree`` listing: its id, name, WM_CLASS and size."""

    id: int
    name: str
    classes: tuple[str, ...]  # (instance, class) from WM_CLASS; () when unset
    width: int
    height: int


# "     0x400007 "ryx-desktop": ("ryx-desktop" "ryx-desktop")  22x22+0+0  +1257+1"
_TREE_LINE = re.compile(
    r'^\s+(?P<id>0x[0-9a-f]+) (?P<name>\(has no name\)|".*?"): \((?P<classes>.*?)\)\s+'
    r"(?P<width>\d+)x(?P<height>\d+)"
)


@dataclass(frozen=True)
class XDisplay:
    """One X display (``:N``) and the xdotool / xwininfo operations the tests need on it."""

    number: int

    @property
    def name(self) -> str:
        return f":{self.number}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``DISPLAY`` set to this display."""
        env = dict(os.environ if base is None else base)
        env["DISPLAY"] = self.name
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an X client (xdotool, xwininfo ...) on this display."""
        result = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=30, check=False
        )
        if check and result.returncode != 0:
            raise XSessionError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    # ---- finding windows ------------------------------------------------------------------

    def search(self, *criteria: str, visible: bool = True) -> list[int]:
        """Window ids ``xdotool search`` finds (``[]`` when none), e.g. ``("--class", "x")``."""
        argv = ["xdotool", "search"]
        if visible:
            argv.append("--onlyvisible")
        result = self.run(*argv, *criteria, check=False)
        return [int(word) for word in result.stdout.split()]

    def tree(self, window: int | None = None) -> str:
        """``xwininfo -tree`` of ``window`` (default: the whole screen), for failure messages."""
        target = ["-root"] if window is None else ["-id", str(window)]
        return self.run("xwininfo", "-tree", *target, check=False).stdout

    def children(self, window: int) -> list[TreeWindow]:
        """Every window below ``window`` (all depths), as ``xwininfo -tree`` lists them."""
        found = []
        for line in self.tree(window).splitlines():
            match = _TREE_LINE.match(line)
            if match and int(match["id"], 16) != window:
                classes = tuple(re.findall(r'"([^"]*)"', match["classes"]))
                found.append(
                    TreeWindow(
                        int(match["id"], 16),
                        match["name"].strip('"'),
                        classes,
                        int(match["width"]),
                        int(match["height"]),
                    )
                )
        return found

    def is_viewable(self, window: int) -> bool:
        """True while the window is mapped and all its ancestors are (X's ``IsViewable``)."""
        result = self.run("xwininfo", "-id", str(window), check=False)
        return result.returncode == 0 and "Map State: IsViewable" in result.stdout

    def geometry(self, window: int) -> Geometry:
        """Where ``window`` is on the screen (absolute position) and its size."""
        out = self.run("xwininfo", "-id", str(window)).stdout
        values: dict[str, int] = {}
        for line in out.splitlines():
            key, _, value = line.strip().partition(":")
            if key in ("Absolute upper-left X", "Absolute upper-left Y", "Width", "Height"):
                values[key] = int(value.strip())
        return Geometry(
            values["Absolute upper-left X"],
            values["Absolute upper-left Y"],
            values["Width"],
            values["Height"],
        )

    def window_name(self, window: int) -> str:
        return self.run("xdotool", "getwindowname", str(window), check=False).stdout.strip()

    # ---- input ----------------------------------------------------------------------------

    def click(self, window: int, button: int = 1) -> None:
        """Move the pointer to the middle of ``window`` and click ``button`` (1 left, 3 right)."""
        where = self.geometry(window)
        self.click_at(where.x + where.width // 2, where.y + where.height // 2, button)

    def click_at(self, x: int, y: int, button: int = 1) -> None:
        """Click ``button`` at screen position (``x``, ``y``)."""
        # One xdotool call, no --sync: XTest delivers the motion before the click anyway, and
        # --sync waits ~15 s for a motion event that never comes when the pointer is there.
        self.run("xdotool", "mousemove", str(x), str(y), "click", str(button))

    def key(self, *keys: str) -> None:
        """Press and release ``keys`` in order (X keysym names: ``Down``, ``Return`` ...)."""
        self.run("xdotool", "key", "--delay", "50", *keys)

    # ---- the system tray ------------------------------------------------------------------

    def tray_owner(self) -> int:
        """The window owning ``_NET_SYSTEM_TRAY_S0`` (0 when no tray host runs)."""
        return _selection_owner(self.name, "_NET_SYSTEM_TRAY_S0")

    # ---- screenshots ----------------------------------------------------------------------

    def screenshot(self, path: Path, area: Geometry | None = None) -> Path:
        """Save the whole screen, or only ``area`` of it, to ``path`` as PNG."""
        argv = [sys.executable, "-c", _GRAB, str(path)]
        if area is not None:
            argv += [str(area.x), str(area.y), str(area.width), str(area.height)]
        env = self.env()
        env["QT_QPA_PLATFORM"] = "xcb"
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not path.is_file():
            raise XSessionError(f"screenshot to {path} failed: {result.stderr.strip()}")
        return path


# Runs in a child process: one QGuiApplication on the xcb platform grabs the root window (all
# windows drawn on it, menus included, as there is no compositor) and saves the PNG.
_GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
path, *area = sys.argv[1:]
x, y, w, h = (int(v) for v in area) if area else (0, 0, -1, -1)
image = app.primaryScreen().grabWindow(0, x, y, w, h)
sys.exit(0 if not image.isNull() and image.save(path, "PNG") else 1)
"""


def _selection_owner(display: str, selection: str) -> int:
    """The owner window of an X selection, read with libX11 (no X tool prints it)."""
    name = ctypes.util.find_library("X11")
    if name is None:
        raise XSessionError("libX11 is missing (Debian: libx11-6)")
    xlib = ctypes.CDLL(name)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XInternAtom.restype = ctypes.c_ulong
    xlib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    xlib.XGetSelectionOwner.restype = ctypes.c_ulong
    xlib.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    conn = xlib.XOpenDisplay(display.encode())
    if not conn:
        raise XSessionError(f"cannot open X display {display}")
    try:
        atom = xlib.XInternAtom(conn, selection.encode(), 0)
        return int(xlib.XGetSelectionOwner(conn, atom))
    finally:
        xlib.XCloseDisplay(conn)


# --------------------------------------------------------------------------- processes


def _stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextlib.contextmanager
def xvfb(size: tuple[int, int] = SCREEN, log_path: Path | None = None) -> Iterator[XDisplay]:
    """A fresh Xvfb server on a free display; stopped (and its clients cut off) on exit."""
    read_fd, write_fd = os.pipe()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                f"{size[0]}x{size[1]}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    finally:
        os.close(write_fd)
    try:
        number = _read_display_number(read_fd, process)
        display = XDisplay(number)
        wait_until(
            lambda: display.run("xdpyinfo", check=False).returncode == 0,
            f"Xvfb on {display.name} to accept clients",
        )
        yield display
    finally:
        os.close(read_fd)
        _stop(process)
        if log is not subprocess.DEVNULL:
            log.close()


def _read_display_number(fd: int, process: subprocess.Popen[bytes]) -> int:
    text = b""
    deadline = time.monotonic() + START_TIMEOUT
    while not text.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise XSessionError(f"Xvfb gave no display number (exit status {process.poll()})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                raise XSessionError("Xvfb closed its -displayfd pipe without a display number")
            text += chunk
    return int(text.strip())


@dataclass(frozen=True)
class TrayHost:
    """A running trayer panel: the window that holds the tray icons."""

    display: XDisplay
    process: subprocess.Popen[bytes]
    owner: int  # the window owning the tray selection

    def panel(self) -> int:
        """The panel window (trayer's WM_CLASS "panel")."""
        found = self.display.search("--classname", "panel")
        if not found:
            raise XSessionError(f"trayer's panel is not on the screen:\n{self.display.tree()}")
        return found[0]

    def icons(self) -> list[TreeWindow]:
        """The client windows embedded in the panel (those with a WM_CLASS), mapped or not."""
        return [w for w in self.display.children(self.panel()) if w.classes]

    def icon_of(self, app_class: str) -> int | None:
        """The viewable tray icon window whose WM_CLASS contains ``app_class``, if any."""
        for icon in self.icons():
            if app_class in icon.classes and self.display.is_viewable(icon.id):
                return icon.id
        return None


@contextlib.contextmanager
def tray_host(display: XDisplay, extra_args: Sequence[str] = ()) -> Iterator[TrayHost]:
    """``trayer`` at the top right of ``display``; ready once it owns the tray selection."""
    argv = [
        "trayer",
        "--edge",
        "top",
        "--align",
        "right",
        "--widthtype",
        "request",
        "--height",
        "24",
        "--transparent",
        "false",
        "--SetDockType",
        "true",
        *extra_args,
    ]
    process = subprocess.Popen(
        argv,
        env=display.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def owned() -> int:
            if process.poll() is not None:
                raise XSessionError(f"trayer exited with status {process.returncode}")
            return display.tray_owner()

        owner = wait_until(owned, "trayer to own the system tray selection")
        yield TrayHost(display, process, owner)
    finally:
        _stop(process)
