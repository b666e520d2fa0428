"""Config files for the tests of the watched config: a small valid config and a hand edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ryx_desktop.config import Config


def config_with(model: str = "/models/a", **top: Any) -> Config:
    """A valid config with one CPU model ``a`` serving ``model``, plus ``top`` settings."""
    return Config.model_validate(
        {"models": {"a": {"model": model, "port": 8001, "devices": "none"}}, **top}
    )


def hand_edit(path: Path, old: str, new: str) -> bytes:
    """Change ``old`` to ``new`` in the file, in place, as an editor would; the new bytes."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path.read_bytes()
