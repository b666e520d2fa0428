"""Streams chat completions through ryx-desktop's own proxy (``POST /v1/chat/completions``).

Going through the proxy rather than to a model's server gives the chat what every client gets:
routing by served name, alias or key, a stopped or sleeping model started or woken on demand,
and the proxy's loading messages while it waits. Those arrive, depending on
``proxy.loading_messages``, as SSE comment lines (``: loading qwen 40%``) or as
``reasoning_content`` deltas of chunks whose id starts with ``chatcmpl-ryx-wait-``; both become
:class:`ChatProgress`. The answer's ``content`` deltas become :class:`ChatDelta` and the usage
chunk (``stream_options.include_usage``) :class:`CompletionUsage`.

An error answer (the proxy's OpenAI-shaped ``{"error": {"message", "type", "code", "hint"}}``),
an SSE ``error`` event, a stream that ends without ``[DONE]`` and a proxy that does not answer
all raise :class:`ChatRequestError` with one sentence and a hint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from ryx_desktop.core.chat import ChatDelta, ChatProgress, ChatRequestError, CompletionUsage

#: The id prefix of the chunks the proxy sends while a model loads (``proxy._loading``).
_WAIT_ID = "chatcmpl-ryx-wait-"
#: A comment the proxy sends only to keep a waiting connection busy.
_KEEP_ALIVE = "waiting"

ChatItem = ChatProgress | ChatDelta | CompletionUsage


class ProxyChatClient:
    """A :class:`~ryx_desktop.core.chat.CompletionClient` for the proxy at ``base_url``.

    ``base_url`` is the proxy's root (``http://127.0.0.1:8420``, no ``/v1``), or a function
    returning it (read at each request: the proxy in the same process knows its port only once
    it listens); ``api_key`` its ``proxy.api_key`` when it has one. The aiohttp session is made
    by the first request (on the running loop) and closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | Callable[[], str],
        api_key: str | None,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self._base_url = base_url
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        base = self._base_url if isinstance(self._base_url, str) else self._base_url()
        return base.rstrip("/")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def stream(self, model: str, messages: list[dict[str, str]]) -> AsyncIterator[ChatItem]:
        """Stream the answer of ``model`` (the name as given: the proxy routes it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        url = f"{self.base_url}/v1/chat/completions"
        try:
            response = await self._session.post(url, json=body, headers=self._headers)
        except aiohttp.ClientConnectorError:
            raise ChatRequestError(
                f"ryx-desktop's proxy is not answering at {self.base_url}",
                hint="Start ryx-desktop (or `ryx-desktop serve`), or check proxy.port.",
            ) from None
        except aiohttp.ClientError as exc:
            raise _broke_off(self.base_url, exc) from None
        complete = False
        try:
            if response.status != 200:
                raise error_of(response.status, await response.text(errors="replace"))
            if response.content_type != "text/event-stream":  # the whole answer at once
                for item in _whole_answer(await response.read()):
                    yield item
                complete = True
                return
            try:
                async for name, data in _events(response.content):
                    if name == "comment":
                        if data and data != _KEEP_ALIVE:
                            yield ChatProgress(data)
                        continue
                    if data == "[DONE]":
                        complete = True
                        return
                    for item in _chunk_items(name, data):
                        yield item
            except (aiohttp.ClientError, ValueError) as exc:
                raise _broke_off(self.base_url, exc) from None
            raise ChatRequestError(
                "the answer ended before it was complete",
                hint="See the proxy's log; the model's server may have stopped.",
            )
        finally:
            if complete:
                response.release()
            else:
                response.close()  # mid-answer: the proxy sees the client go, the model stops


def error_of(status: int, text: str) -> ChatRequestError:
    """The error an error answer's body says: OpenAI's shape (the proxy's, with its ``hint``),
    vLLM's older flat one, or plain text."""
    hint = ""
    try:
        payload = json.loads(text)
        error = payload.get("error", payload)
        if isinstance(error, str):
            error = {"message": error}
        message = str(error["message"])
        hint = str(error.get("hint") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = text.strip()[:300] or f"the proxy answered {status}"
    if hint and message.endswith(f". {hint}"):  # the proxy's message carries its hint
        message = message[: -len(hint) - 2]
    return ChatRequestError(message, hint or None, status)


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """``(event name, data)`` for each SSE event, and ``("comment", text)`` for each comment."""
    name, data = "message", list[str]()
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            yield "comment", line[1:].strip()
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        yield name, "\n".join(data)


def _chunk_items(name: str, data: str) -> list[ChatItem]:
    """What one ``chat.completion.chunk`` (or error event) says."""
    try:
        chunk = json.loads(data)
    except ValueError:
        if name == "error":
            raise error_of(502, data) from None
        return []
    if not isinstance(chunk, dict):
        return []
    if name == "error" or "error" in chunk:
        raise error_of(int(_code(chunk)), data)
    items: list[ChatItem] = []
    waiting = str(chunk.get("id", "")).startswith(_WAIT_ID)
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and waiting:  # the proxy's loading message (a model's own thinking is not)
            items.append(ChatProgress(str(reasoning).strip()))
        content = delta.get("content")
        if content:
            items.append(ChatDelta(str(content)))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        items.append(
            CompletionUsage(_int(usage.get("completion_tokens")), _int(usage.get("prompt_tokens")))
        )
    return items


def _whole_answer(raw: bytes) -> list[ChatItem]:
    """A non-streamed ``chat.completion`` (a server that ignored ``stream``)."""
    try:
        answer = json.loads(raw)
        text = answer["choices"][0]["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ChatRequestError(
            "the proxy's answer is not a chat completion",
            hint="Check that proxy.port is ryx-desktop's proxy and not another server.",
        ) from None
    items: list[ChatItem] = [ChatDelta(str(text))] if text else []
    usage = answer.get("usage")
    if isinstance(usage, dict):
        items.append(
            CompletionUsage(_int(usage.get("completion_tokens")), _int(usage.get("prompt_tokens")))
        )
    return items


def _code(chunk: dict[str, Any]) -> int:
    error = chunk.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 502


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _broke_off(base_url: str, exc: BaseException) -> ChatRequestError:
    return ChatRequestError(
        f"the connection to ryx-desktop's proxy at {base_url} broke off: {exc}",
        hint="Check that ryx-desktop still runs, then send the message again.",
    )
