"""Fixtures for the end-to-end tests: the whole desktop app against the real Docker engine.

The Docker fixtures (engine client, fake vLLM image, config factory, container cleanup after each
test) are the integration suite's own, imported from there. The X session tests also need Xvfb,
trayer, xdotool and xwininfo: when one is missing they fail saying what to install, they never
skip (``bash .ci/run`` installs them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures, used by name)
    _remove_containers_after,
    docker_client,
    fake_image,
    free_port,
    make_config,
    models_dir,
)
from tests.support.xsession import TrayHost, XDisplay, missing_tools, tray_host, xvfb

# In-process Qt tests here draw offscreen, like tests/gui; the X session test runs the app in a
# child process with QT_QPA_PLATFORM=xcb on its own Xvfb display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def x_display(tmp_path: Path) -> Iterator[XDisplay]:
    """A fresh Xvfb display for this test (its log is ``tmp_path/xvfb.log``)."""
    missing = missing_tools()
    if missing:
        pytest.fail(
            "The X session test needs " + ", ".join(missing) + " (Debian packages in "
            "parentheses); `bash .ci/run` installs them.",
            pytrace=False,
        )
    with xvfb(log_path=tmp_path / "xvfb.log") as display:
        yield display


@pytest.fixture
def tray(x_display: XDisplay) -> Iterator[TrayHost]:
    """``trayer`` on :func:`x_display`, owning the system tray selection."""
    with tray_host(x_display) as host:
        yield host
