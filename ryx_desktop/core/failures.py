"""The error for a container that ended on its own, worded from what its log says.

``exit_error`` turns a container's exit code, Docker's ``OOMKilled`` and its whole log into one
clear sentence (the real cause, not the log's generic last line), the specific hint, and the
log's last lines. Pure: the supervisor reads the log and the container's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from ryx_desktop.core.diagnosis import Cause, diagnose
from ryx_desktop.core.errors import ContainerExitedError, OutOfMemoryError, logs_hint

#: Log lines a failure keeps to show.
LOG_TAIL = 20
#: At most this many of the log's last lines are read to find a failure's cause.
DIAGNOSIS_LINES = 5000


def exit_error(
    key: str,
    code: int | None,
    *,
    oom: bool,
    lines: Sequence[str],
    while_loading: bool = False,
) -> ContainerExitedError:
    """The error for model ``key``'s container that ended with ``code`` (None: it vanished).

    ``lines`` is its log, oldest first (as much as was read; the last ``LOG_TAIL`` become the
    error's tail). ``oom`` is Docker's ``OOMKilled`` or an ``oom`` event.

    >>> exit_error("tiny", 132, oom=False, lines=[], while_loading=True).message
    "tiny's container exited with code 132 (SIGILL, illegal instruction) before printing anything"
    """
    found = diagnose(lines, code, oom_killed=oom)
    tail = tuple(lines[-LOG_TAIL:])
    if found.cause is Cause.OOM_KILLED:
        message = f"{key} ran out of memory and was killed (exit code {code})"
    elif found.reason is not None:
        what = "failed to start" if while_loading else "stopped"
        message = f"{key} {what}: {found.reason} ({found.exit})"
    elif not lines:
        message = f"{key}'s container {found.exit} before printing anything"
    else:
        message = f"{key}'s container {found.exit}" + (" while loading" if while_loading else "")
    hint = found.hint
    if hint is None:
        hint = (
            logs_hint(key)
            if lines
            else "It printed no log line: check that its image runs on this machine "
            "(`docker run --rm IMAGE --help`)."
        )
    error_type = OutOfMemoryError if found.memory else ContainerExitedError
    return error_type(message, hint, exit_code=code, log_tail=tail, evidence=found.evidence)
