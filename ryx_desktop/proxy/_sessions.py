"""The sessions API of the backend ryx-desktop replaced on port 8420: kept conversations.

``POST /api/sessions`` (optional ``{"title"}``) creates one, ``GET /api/sessions`` lists them,
``GET``/``DELETE /api/sessions/{id}`` read or remove one, and ``POST /api/sessions/{id}/messages``
with ``{"content", "model", "stream"}`` sends the conversation to the named model (served name,
alias or key; the selected model when absent) and stores the answer. The answer is one JSON
object, or with ``stream: true`` an event stream::

    data: {"progress": "loading qwen 40 %"}
    data: {"delta": "Hel"}
    data: {"done": {...the stored message...}, "ttft_s": 0.2, "tokens_per_s": 41.5}
    data: [DONE]

(``data: {"error": {...}}`` in place of ``done`` when it fails). The requests pass the same
Host, Origin and key checks as ``/v1`` (the server's ``_dispatch``), the generation itself goes
through the proxy's own ``/v1/chat/completions`` (see ``adapters.chat_client``), and a client
that goes away mid-answer cancels it: the partial answer is stored as ``cut``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from aiohttp import web

from ryx_desktop.core.chat import (
    ChatDelta,
    ChatDone,
    ChatEvent,
    ChatFailed,
    ChatProgress,
    ChatService,
)
from ryx_desktop.core.conversations import (
    Conversation,
    ConversationStoreError,
    Message,
    UnknownConversation,
)
from ryx_desktop.core.errors import UnknownModelError
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.proxy._body import read_body
from ryx_desktop.proxy._errors import ProxyError, error_payload

#: The collection's path; one session's is ``PREFIX/{id}``, its messages ``PREFIX/{id}/messages``.
PREFIX = "/api/sessions"

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_DONE = b"data: [DONE]\n\n"


class SessionsApi:
    """The ``/api/sessions`` routes over a :class:`ChatService` (503 for all when None)."""

    def __init__(
        self, chat: ChatService | None, supervisor: Supervisor, *, body_timeout: float
    ) -> None:
        self._chat = chat
        self._supervisor = supervisor
        self._body_timeout = body_timeout
        self._answering: set[asyncio.Task[Any]] = set()  # handlers of messages under way

    async def cut_all(self, timeout: float = 5.0) -> None:
        """Cut the answers under way (the proxy shuts down): each is stored as ``cut``."""
        tasks = set(self._answering)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # ---- routes -----------------------------------------------------------------------------

    async def list_sessions(
        self, request: web.BaseRequest, extra: dict[str, str]
    ) -> web.StreamResponse:
        """``GET /api/sessions``: the sessions, most recently updated first."""
        with _store_errors():
            sessions = await self._service().store.list()
        return _json({"sessions": [session_json(c) for c in sessions]}, extra)

    async def create_session(
        self, request: web.BaseRequest, extra: dict[str, str]
    ) -> web.StreamResponse:
        """``POST /api/sessions``: 201 and the new session."""
        chat = self._service()
        body = await self._read_object(request, required=False)
        title = body.get("title", "")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise _invalid("the 'title' field must be a string")
        with _store_errors():
            conversation = await chat.store.create(title.strip())
        return _json(session_json(conversation), extra, status=201)

    async def item(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        """``/api/sessions/{id}`` (GET, DELETE) and ``/api/sessions/{id}/messages`` (POST)."""
        with _store_errors():
            return await self._item(request, extra)

    async def _item(self, request: web.BaseRequest, extra: dict[str, str]) -> web.StreamResponse:
        path, method = request.path, request.method
        session_id, _, rest = path[len(PREFIX) + 1 :].partition("/")
        if not session_id or rest not in ("", "messages"):
            raise ProxyError(404, f"there is no endpoint {path}", "not_found")
        allowed = ("GET", "DELETE") if rest == "" else ("POST",)
        if method not in allowed:
            methods = ", ".join(allowed)
            raise ProxyError(
                405,
                f"{method} is not allowed on {path} (use {methods})",
                "method_not_allowed",
                headers={"Allow": methods},
            )
        chat = self._service()
        if rest == "messages":
            return await self._message(request, extra, chat, session_id)
        if method == "DELETE":
            if not await chat.store.delete(session_id):
                raise _no_session(session_id)
            return web.Response(status=204, headers=extra)
        found = await chat.store.get(session_id)
        if found is None:
            raise _no_session(session_id)
        conversation, messages = found
        body = {**session_json(conversation), "messages": [message_json(m) for m in messages]}
        return _json(body, extra)

    # ---- a message --------------------------------------------------------------------------

    async def _message(
        self, request: web.BaseRequest, extra: dict[str, str], chat: ChatService, session_id: str
    ) -> web.StreamResponse:
        body = await self._read_object(request, required=True)
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            raise _invalid("the 'content' field must be a non-empty string")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise _invalid("the 'model' field must be a string")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _invalid("the 'stream' field must be true or false")
        if await chat.store.get(session_id) is None:
            raise _no_session(session_id)
        name = model or self._selected()
        key = resolve_model(self._supervisor.config, name)
        if key is None:
            raise self._no_model(f"no model is called {name!r}")
        extra["X-Ryx-Model"] = key
        task = asyncio.current_task()
        assert task is not None
        self._answering.add(task)
        try:
            return await self._answer(extra, chat.send(session_id, content, name), request, stream)
        finally:
            self._answering.discard(task)

    async def _answer(
        self,
        extra: dict[str, str],
        events: AsyncGenerator[ChatEvent, None],
        request: web.BaseRequest,
        stream: bool,
    ) -> web.StreamResponse:
        if stream:
            return await self._stream(request, extra, events)
        async with contextlib.aclosing(events):
            try:
                async for event in events:
                    if isinstance(event, ChatDone):
                        return _json(_done(event, "message"), extra)
                    if isinstance(event, ChatFailed):
                        raise _failed(event)
            except UnknownConversation as error:  # deleted since the check above
                raise _no_session(error.conversation_id) from None
            except UnknownModelError as error:  # removed from the config since the check
                raise self._no_model(error.message) from None
        raise ProxyError(502, "the answer ended without a result", "generation_failed")

    async def _stream(
        self,
        request: web.BaseRequest,
        extra: dict[str, str],
        events: AsyncGenerator[ChatEvent, None],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={**_SSE_HEADERS, **extra})
        await response.prepare(request)
        try:
            async with contextlib.aclosing(events):
                try:
                    async for event in events:
                        await response.write(_event_bytes(event))
                except UnknownConversation as error:
                    await response.write(_data(error_payload(_no_session(error.conversation_id))))
                except UnknownModelError as error:
                    await response.write(_data(error_payload(self._no_model(error.message))))
                except ConversationStoreError as error:
                    await response.write(_data(error_payload(_store_failed(error))))
            await response.write(_DONE)
            await response.write_eof()
        except ConnectionError:  # the client left: closing the events stored the answer as cut
            pass
        return response

    # ---- helpers ----------------------------------------------------------------------------

    def _service(self) -> ChatService:
        if self._chat is None:
            raise ProxyError(
                503,
                "this proxy keeps no conversations",
                "sessions_unavailable",
                hint="The sessions API comes with the ryx-desktop app's proxy, "
                "which has a conversation store",
            )
        return self._chat

    def _selected(self) -> str:
        key = self._supervisor.selected
        if key is None:
            raise self._no_model("the message names no model, and no model is selected")
        return key

    def _no_model(self, message: str) -> ProxyError:
        known = ", ".join(sorted(self._supervisor.config.models))
        return ProxyError(
            404,
            message,
            "model_not_found",
            hint=f"Name a model by its key, served name or alias: {known}",
        )

    async def _read_object(self, request: web.BaseRequest, *, required: bool) -> dict[str, Any]:
        raw = await read_body(request, self._body_timeout)
        if not raw.strip():
            if required:
                raise _invalid("the request has no body: send a JSON object")
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise ProxyError(
                400,
                "the request body is not valid JSON",
                "invalid_json",
                hint="Send a JSON object",
            ) from None
        if not isinstance(body, dict):
            raise _invalid("the request body must be a JSON object")
        return body


def session_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created": conversation.created,
        "updated": conversation.updated,
        "message_count": conversation.message_count,
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "model": message.model,
        "state": message.state,
        "created": message.created,
        "error": message.error,
    }


def _done(event: ChatDone, field: str) -> dict[str, Any]:
    return {
        field: message_json(event.message),
        "ttft_s": event.ttft_s,
        "tokens_per_s": event.tokens_per_s,
        "completion_tokens": event.completion_tokens,
    }


def _failed(event: ChatFailed) -> ProxyError:
    return ProxyError(502, event.text, "generation_failed", hint=event.hint)


def _event_bytes(event: object) -> bytes:
    if isinstance(event, ChatDelta):
        return _data({"delta": event.text})
    if isinstance(event, ChatProgress):
        return _data({"progress": event.text})
    if isinstance(event, ChatDone):
        return _data(_done(event, "done"))
    assert isinstance(event, ChatFailed)
    return _data({**error_payload(_failed(event)), "message": message_json(event.message)})


def _data(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """The store's failures leave as 500 ``store_failed`` (with the store's hint)."""
    try:
        yield
    except ConversationStoreError as error:
        raise _store_failed(error) from None


def _store_failed(error: ConversationStoreError) -> ProxyError:
    return ProxyError(500, error.message, "store_failed", hint=error.hint)


def _invalid(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request")


def _no_session(session_id: str) -> ProxyError:
    return ProxyError(
        404,
        f"there is no session {session_id!r}",
        "session_not_found",
        hint="List the sessions with GET /api/sessions, or create one with POST /api/sessions",
    )


def _json(body: object, extra: Mapping[str, str], *, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=extra,
    )
