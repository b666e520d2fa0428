"""Reads vLLM's log lines for how far a model has loaded."""

from __future__ import annotations

import re

_SHARDS = re.compile(
    r"Loading (?:safetensors |pt |)checkpoint shards:\s*(?P<pct>\d{1,3})% Completed\s*\|\s*"
    r"(?P<done>\d+)/(?P<total>\d+)"
)


def parse_load_progress(line: str) -> tuple[float, str] | None:
    """Percent loaded and a short detail from one log line, or None when the line says nothing.

    >>> parse_load_progress("Loading safetensors checkpoint shards:  50% Completed | 2/4")
    (50.0, 'weights 2/4 shards')
    """
    match = _SHARDS.search(line)
    if match is None:
        return None
    percent = min(100.0, float(match["pct"]))
    return percent, f"weights {match['done']}/{match['total']} shards"
