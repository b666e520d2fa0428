"""Where tests save screenshots and rendered images for people to look at (never committed)."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


def artifact_path(name: str) -> Path:
    """A path under ``$RYX_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the checkout)."""
    folder = Path(os.environ.get("RYX_TEST_ARTIFACTS") or _ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
