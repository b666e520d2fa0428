"""The base of the errors a user can meet, and the config's own: one sentence plus a hint.

They live here, in the leaf layer, so that config raises them without importing core;
``ryx_desktop.core.errors`` re-exports both beside the rest of the family, so code above config
imports every error from there.
"""

from __future__ import annotations


class RyxError(Exception):
    """Base class: a user-facing failure with a one-line message and a hint."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(RyxError):
    """The config file cannot be read or does not validate."""

    hint = "Fix the file, then check it with `ryx-desktop config check`."
