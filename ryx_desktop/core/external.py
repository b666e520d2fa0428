"""Whether an external (``url:``) model's server serves the name ryx-desktop sends it.

Without ``served_name:`` the name to send is learned from the server's ``/v1/models``: the key
when the server lists it, else the only model it lists. A server listing several others cannot
be guessed: the user chooses. A model is ready only while its server lists the name we send.
"""

from __future__ import annotations

from dataclasses import dataclass

from ryx_desktop.core.ports import ProbeResult


@dataclass(frozen=True, slots=True)
class ExternalVerdict:
    """What one probe says about an external model."""

    ready: bool
    served_name: str  # the name to send (learned, or the configured one)
    note: str = ""  # why it is not ready


def judge_external(result: ProbeResult, wanted: str, *, explicit: bool) -> ExternalVerdict:
    """The verdict on ``result`` for a model whose name to send is ``wanted``.

    ``explicit``: ``wanted`` is the configured ``served_name:`` (never replaced); otherwise it
    is the model's key, replaced by the only name the server lists.
    """
    if not result.reachable:
        return ExternalVerdict(False, wanted, result.error or "no answer")
    names = result.served_names
    if wanted in names:
        return ExternalVerdict(True, wanted)
    if not names:
        why = result.error or "its /v1/models lists no models"
        return ExternalVerdict(False, wanted, why)
    listed = ", ".join(names)
    if explicit:
        return ExternalVerdict(
            False,
            wanted,
            f"the server does not serve {wanted!r} (it serves: {listed}); "
            "fix `served_name:` to one of those",
        )
    if len(names) == 1:
        return ExternalVerdict(True, names[0])
    return ExternalVerdict(
        False,
        wanted,
        f"the server serves several models: choose one with `served_name:` (one of: {listed})",
    )
