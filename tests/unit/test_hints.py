"""Hints about a model's log name the real model and never point at lines that are not shown.

A tray notification shows a failure's sentence and hint, no log line; the window shows the hint
before the log lines. So no hint says "the log lines above", and none says a literal ``KEY``.
"""

from __future__ import annotations

import inspect

import pytest

from ryx_desktop.core import errors, readiness
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.failures import exit_error
from ryx_desktop.core.readiness import first_answer_hint


def error_classes() -> list[type[RyxError]]:
    found = [
        value
        for module in (errors, readiness)
        for _, value in inspect.getmembers(module, inspect.isclass)
        if issubclass(value, RyxError)
    ]
    return sorted(set(found), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_no_default_hint_says_key_or_points_above(cls: type[RyxError]) -> None:
    assert "KEY" not in cls.hint
    assert "lines above" not in cls.hint


def test_an_exit_hint_names_the_model() -> None:
    error = exit_error("tiny", 1, oom=False, lines=["starting", "oh no"], while_loading=True)
    assert error.hint == "`ryx-desktop logs tiny` shows the whole log."
    assert error.log_tail == ("starting", "oh no")


def test_a_first_answer_hint_names_the_model() -> None:
    hint = first_answer_hint("coder")
    assert hint.startswith("`ryx-desktop logs coder` shows the engine's error;")
    assert "first_answer_check: false" in hint
