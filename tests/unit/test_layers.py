"""Dependencies point downward: core imports no Qt and no Docker/HTTP/NVML library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_IN_CORE = ("PySide6", "docker", "httpx", "aiohttp", "pynvml", "requests")


def imported_after(module: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_core_imports_no_outside_library() -> None:
    loaded = imported_after("ryx_desktop.core.supervisor")
    assert not loaded & set(FORBIDDEN_IN_CORE)
    assert "ryx_desktop" in loaded  # the probe really imported something


@pytest.mark.parametrize(
    "module",
    [
        "ryx_desktop.adapters.docker_runtime",
        "ryx_desktop.adapters.health",
        "ryx_desktop.adapters.nvml",
        "ryx_desktop.proxy",
        "ryx_desktop.cli",
    ],
)
def test_engine_layers_import_no_qt(module: str) -> None:
    loaded = imported_after(module)
    assert "PySide6" not in loaded and "qasync" not in loaded
    assert "ryx_desktop" in loaded


def test_proxy_talks_to_models_only_through_core() -> None:
    # The proxy may use aiohttp, but never the Docker SDK: models change only via the supervisor.
    loaded = imported_after("ryx_desktop.proxy")
    assert "aiohttp" in loaded
    assert "docker" not in loaded
