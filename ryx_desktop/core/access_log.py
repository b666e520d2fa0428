"""Which of vLLM's log lines are ryx-desktop's own probes, so a log view can leave them out.

vLLM's API server (uvicorn) logs every request, and ryx-desktop asks each model for
``/health``, ``/metrics`` and ``/v1/models`` every few seconds: left in, those lines bury what
vLLM says (a newcomer's log view was 102 of 131 lines of them). vLLM 0.3x could be told
``--disable-access-log-for-endpoints``, but older versions exit on that unknown flag, so the
lines are filtered where the log is shown instead; ``ryx-desktop logs`` keeps the raw log.
"""

from __future__ import annotations

import re

#: Paths ryx-desktop's health and metrics probes ask for.
PROBE_PATHS = ("/health", "/metrics", "/v1/models")

# `(APIServer pid=1) INFO:     172.17.0.1:40000 - "GET /health HTTP/1.1" 200 OK`, with or
# without the process prefix (older vLLM) and with any query string.
_ACCESS = re.compile(
    r'INFO:\s+\S+ - "GET (?P<path>/[^\s?"]*)(?:\?[^\s"]*)? HTTP/\d(?:\.\d)?" \d{3}\b'
)


def is_probe_access_line(line: str) -> bool:
    """True for an access-log line of a GET on one of the probe paths.

    >>> is_probe_access_line('(APIServer pid=1) INFO:     172.17.0.1:40000 - '
    ...                      '"GET /health HTTP/1.1" 200 OK')
    True
    >>> is_probe_access_line('INFO:     172.17.0.1:40000 - "POST /v1/completions HTTP/1.1" 200 OK')
    False
    """
    match = _ACCESS.search(line)
    return match is not None and match["path"] in PROBE_PATHS
