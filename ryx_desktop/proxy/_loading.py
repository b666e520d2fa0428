"""What a stream that waits for its model's start (or wake) hears while it waits.

``proxy.loading_messages`` picks the style:

* ``comment``: an SSE comment line (``: loading KEY 40%``) every ``loading_interval``, which
  keeps the connection busy but which no chat UI shows;
* ``reasoning``: for chat completions, an OpenAI ``chat.completion.chunk`` whose delta carries
  the wait as ``reasoning_content`` ("loading KEY 40 %: weights 2/4 shards"), one per change of
  the text, which Open WebUI and similar clients display before the model's own answer; while
  nothing changes, a bare comment every ``loading_interval`` keeps the connection busy. Other
  endpoints (``/v1/completions``) have no reasoning field and get comments;
* ``off``: nothing until the model's own answer.

The texts come from the supervisor's snapshot (state, and the progress's phase, percent and
detail); a :class:`LoadingNotes` remembers what it last said so that it never repeats itself.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from ryx_desktop.core.states import Instance, InstanceState

LoadingStyle = Literal["comment", "reasoning", "off"]

#: The only endpoint whose chunks have a ``reasoning_content`` field.
_CHAT_PATH = "/v1/chat/completions"
#: What the model is doing in each progress phase ("wake": a sleeping model coming back).
_VERBS = {"pull": "starting", "create": "starting", "load": "loading", "wake": "waking"}
#: States in which a waiting stream's model is still on its way; any other (ready, or failed
#: once the start ran) is said by what follows: the model's answer or the error event.
_ON_THE_WAY = frozenset(
    {InstanceState.STOPPED, InstanceState.STOPPING, InstanceState.STARTING, InstanceState.SLEEPING}
)
#: Sent in ``reasoning`` style while the text stays the same: invisible, keeps proxies and
#: clients from timing out.
_KEEP_ALIVE = b": waiting\n\n"


def loading_style(configured: LoadingStyle, path: str) -> LoadingStyle:
    """The style a request on ``path`` gets: reasoning only where the chunk has the field."""
    if configured == "reasoning" and path != _CHAT_PATH:
        return "comment"
    return configured


def loading_comment(inst: Instance) -> bytes:
    """The ``comment`` style's line: ``: loading KEY 40%`` (or the phase, or ``starting``)."""
    progress = inst.progress
    detail = "starting"  # also before the start task has run and moved it out of stopped/failed
    if progress is not None:
        detail = f"{progress.percent:.0f}%" if progress.percent is not None else progress.phase
    return f": loading {inst.key} {detail}\n\n".encode()


def wait_text(inst: Instance) -> str:
    """One line saying what the model is doing: ``loading KEY 40 %: weights 2/4 shards``."""
    key, progress = inst.key, inst.progress
    if inst.state is InstanceState.SLEEPING:
        return f"waking {key}…"
    if progress is None:
        return f"starting {key}…"
    text = f"{_VERBS.get(progress.phase.value, 'starting')} {key}"
    if progress.percent is not None:
        text += f" {progress.percent:.0f} %"
    if progress.detail:
        return f"{text}: {progress.detail}"
    return text if progress.percent is not None else f"{text}…"


def reasoning_chunk(chunk_id: str, model: str, text: str, *, first: bool) -> bytes:
    """An SSE event holding one ``chat.completion.chunk`` whose delta is ``text`` as reasoning."""
    delta: dict[str, str] = {"role": "assistant"} if first else {}
    delta["reasoning_content"] = text
    chunk = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class LoadingNotes:
    """The bytes a waiting stream gets, in one style; remembers what it last said."""

    def __init__(self, style: LoadingStyle) -> None:
        self.style = style
        self._id = f"chatcmpl-ryx-wait-{uuid.uuid4().hex[:24]}"
        self._said: str | None = None

    @property
    def follows_changes(self) -> bool:
        """True when a change of the model's snapshot may be worth an event at once."""
        return self.style == "reasoning"

    def tick(self, inst: Instance) -> bytes:
        """Every ``loading_interval``: a comment, the changed text, or a keep-alive."""
        if self.style == "comment":
            return loading_comment(inst)
        if self.style == "reasoning":
            return self.changed(inst) or _KEEP_ALIVE
        return b""

    def changed(self, inst: Instance) -> bytes:
        """The model's snapshot changed: a reasoning event when its text did (else nothing)."""
        if self.style != "reasoning":
            return b""
        if self._said is not None and inst.state not in _ON_THE_WAY:
            return b""
        text = wait_text(inst)
        if text == self._said:
            return b""
        first = self._said is None
        self._said = text
        # One line each: clients concatenate the deltas into one reasoning text.
        return reasoning_chunk(self._id, inst.served_name, text + "\n", first=first)
