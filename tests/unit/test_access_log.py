"""Telling ryx-desktop's probe requests apart in vLLM's access log."""

from __future__ import annotations

import doctest

import pytest

from ryx_desktop.core import access_log
from ryx_desktop.core.access_log import is_probe_access_line


@pytest.mark.parametrize(
    "line",
    [
        '(APIServer pid=1) INFO:     172.17.0.1:40000 - "GET /health HTTP/1.1" 200 OK',
        '(APIServer pid=12) INFO:     172.17.0.1:40002 - "GET /metrics HTTP/1.1" 200 OK',
        '(APIServer pid=1) INFO:     172.17.0.1:40004 - "GET /v1/models HTTP/1.1" 200 OK',
        'INFO:     127.0.0.1:51234 - "GET /health HTTP/1.1" 200 OK',  # vLLM without the prefix
        'INFO:     172.17.0.1:40000 - "GET /v1/models HTTP/1.1" 401 Unauthorized',
        'INFO:     [::1]:40000 - "GET /metrics?format=text HTTP/1.1" 200 OK',
    ],
)
def test_probe_lines_are_recognised(line: str) -> None:
    assert is_probe_access_line(line)


@pytest.mark.parametrize(
    "line",
    [
        '(APIServer pid=1) INFO:     172.17.0.1:4 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        '(APIServer pid=1) INFO:     172.17.0.1:40000 - "GET /v1/models/x HTTP/1.1" 404 Not Found',
        '(APIServer pid=1) INFO:     172.17.0.1:40000 - "GET /healthz HTTP/1.1" 404 Not Found',
        '(APIServer pid=1) INFO:     172.17.0.1:40000 - "POST /sleep?level=1 HTTP/1.1" 200 OK',
        "(APIServer pid=1) INFO 12-01 10:21:22 [launcher.py:46] Route: /health, Methods: GET",
        "(EngineCore pid=80) ERROR 12-01 10:21:22 [core.py:700] GET /health failed",
        "",
    ],
)
def test_other_lines_are_kept(line: str) -> None:
    assert not is_probe_access_line(line)


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(access_log).failed == 0
