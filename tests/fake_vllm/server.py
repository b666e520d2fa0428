#!/usr/bin/env python3
"""A fake vLLM OpenAI-compatible server, standard library only (runs on Python 3.11).

Seen from outside it behaves like ``vllm/vllm-openai``: it takes vLLM's flags, prints vLLM-like
startup and load-progress lines, binds its port only once "loading" is done, and serves
``/health``, ``/v1/models``, chat and text completions (streaming and not), embeddings,
``/metrics`` and sleep/wake.

Environment knobs:

* ``FAKE_VLLM_LOAD_SECONDS`` total load time, spread over the shards (default 0.3)
* ``FAKE_VLLM_SHARDS`` number of checkpoint shards (default 4)
* ``FAKE_VLLM_CRASH=1`` crash during load after the first shard (traceback, exit 1)
* ``FAKE_VLLM_EXIT_CODE=N`` exit with code N during load after the first shard, printing nothing
  more (137 looks like the OOM killer)
* ``FAKE_VLLM_TOKEN_DELAY`` seconds between generated tokens (default 0)

Test-only endpoints (not in vLLM):

* ``GET /fake/requests`` the recorded requests: ``[{"method", "path", "headers", "json"}]``
  (``/fake/*`` requests are not recorded); ``DELETE /fake/requests`` clears them
* ``GET /fake/disconnects`` ``{"count": n}``: generation requests whose client went away before
  the end (seen within one token delay)
* ``POST /fake/health`` with ``{"status": 500}``: ``/health`` answers that status from now on
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = "0.6.4.post1"
EMBEDDING_DIM = 8
DEFAULT_MAX_TOKENS = 16
DEFAULT_MAX_MODEL_LEN = 32768

_print_lock = threading.Lock()


def emit(line: str, stream=None) -> None:
    """Print one line and flush it at once (docker logs and tests read it live)."""
    out = stream or sys.stdout
    with _print_lock:
        out.write(line + "\n")
        out.flush()


def info(source: str, message: str) -> None:
    emit(f"INFO {time.strftime('%m-%d %H:%M:%S')} {source}] {message}")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm serve", add_help=True, allow_abbrev=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", "-q", default=None)
    parser.add_argument("--enable-sleep-mode", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--disable-log-requests", action="store_true")
    parser.add_argument("--download-dir", default=None)
    args, unknown = parser.parse_known_args(argv)
    if not args.served_model_name:
        args.served_model_name = [args.model]
    args.unknown_args = unknown
    return args


def model_max_len(args: argparse.Namespace) -> int:
    if args.max_model_len:
        return int(args.max_model_len)
    config = os.path.join(args.model, "config.json")
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        with open(config, encoding="utf-8") as handle:
            value = json.load(handle).get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_MODEL_LEN


# --------------------------------------------------------------------------- shared state


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.served = list(args.served_model_name)
        self.model = args.model
        self.max_model_len = model_max_len(args)
        self.created = int(time.time())
        self.lock = threading.Lock()
        self.running = 0
        self.success: dict[str, int] = {"stop": 0, "length": 0}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.sleeping = False
        self.sleep_level = 0
        self.health_status = 200
        self.requests: list[dict] = []
        self.disconnects = 0
        self.token_delay = max(0.0, _env_float("FAKE_VLLM_TOKEN_DELAY", 0.0))


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


# --------------------------------------------------------------------------- fake generation


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [text]


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return "" if content is None else str(content)


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first
        return " ".join(str(item) for item in prompt)
    return ""


def embedding_for(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(digest[i] - 127.5) / 127.5 for i in range(EMBEDDING_DIM)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def error_body(message: str, kind: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    disable_nagle_algorithm = True  # as uvicorn: no 40 ms delayed-ACK wait on kept-alive requests
    state: State  # set on the subclass made by serve()

    # -- logging: uvicorn's access-log format, nothing on stderr for each request
    def log_request(self, code="-", size="-") -> None:
        try:
            phrase = HTTPStatus(int(code)).phrase
        except (ValueError, TypeError):
            phrase = ""
        host, port = self.client_address[:2]
        emit(
            f'INFO:     {host}:{port} - "{self.command} {self.path} '
            f'{self.request_version}" {code} {phrase}'
        )

    def log_message(self, format, *args) -> None:
        pass

    # -- plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, error_body(message, kind, status))

    def _client_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True as soon as the client has closed its socket."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], max(0.0, timeout))
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _pause(self) -> None:
        """One token delay, watching the client."""
        if self._client_gone(self.state.token_delay):
            raise ClientGone

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientGone from exc

    # -- dispatch
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        raw = self._read_body()
        body = None
        body_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = str(exc)
        if not path.startswith("/fake/"):
            with self.state.lock:
                self.state.requests.append(
                    {
                        "method": method,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": body,
                    }
                )
        routes = {
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health},
            "/version": {"GET": self._version},
            "/v1/models": {"GET": self._models},
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/completions": {"POST": self._completions},
            "/v1/embeddings": {"POST": self._embeddings},
            "/metrics": {"GET": self._metrics},
            "/sleep": {"POST": self._sleep},
            "/wake_up": {"POST": self._wake_up},
            "/is_sleeping": {"GET": self._is_sleeping},
            "/fake/requests": {"GET": self._fake_requests, "DELETE": self._fake_clear},
            "/fake/disconnects": {"GET": self._fake_disconnects},
            "/fake/health": {"POST": self._fake_health},
        }
        route = routes.get(path)
        if route is None:
            self._json(404, {"detail": "Not Found"})
            return
        handler = route.get(method)
        if handler is None:
            self._json(405, {"detail": "Method Not Allowed"})
            return
        if method in ("POST", "PUT") and path not in ("/sleep", "/wake_up") and body_error:
            self._error(400, f"JSON decode error: {body_error}", "BadRequestError")
            return
        if path.startswith("/v1/") and not self._authorized():
            self._json(401, {"error": "Unauthorized"})
            return
        try:
            handler(body, query)
        except ClientGone:
            with self.state.lock:
                self.state.disconnects += 1
            self.close_connection = True

    def _authorized(self) -> bool:
        key = self.state.args.api_key
        return not key or self.headers.get("Authorization", "") == f"Bearer {key}"

    # -- vLLM endpoints
    def _health(self, body, query) -> None:
        self._send(self.state.health_status)

    def _version(self, body, query) -> None:
        self._json(200, {"version": VERSION})

    def _models(self, body, query) -> None:
        st = self.state
        data = [
            {
                "id": name,
                "object": "model",
                "created": st.created,
                "owned_by": "vllm",
                "root": st.model,
                "parent": None,
                "max_model_len": st.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": st.created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in st.served
        ]
        self._json(200, {"object": "list", "data": data})

    def _check_generation(self, body) -> str | None:
        """The served name to answer as, or None once an error answer was sent."""
        if not isinstance(body, dict):
            self._error(400, "Request body must be a JSON object", "BadRequestError")
            return None
        model = body.get("model")
        if model is None:
            model = self.state.served[0]
        if model not in self.state.served:
            self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
            return None
        if self.state.sleeping:
            self._error(503, "The engine is sleeping; call /wake_up first", "ServiceUnavailable")
            return None
        return str(model)

    def _generate(self, body, prompt: str, chat: bool) -> None:
        served = self._check_generation(body)
        if served is None:
            return
        st = self.state
        limit = body.get("max_completion_tokens") if chat else None
        if limit is None:
            limit = body.get("max_tokens")
        if not isinstance(limit, int) or limit < 1:
            limit = DEFAULT_MAX_TOKENS
        tokens = _tokens(f"fake reply from {served} to: {prompt}")
        finish = "stop" if len(tokens) <= limit else "length"
        tokens = tokens[:limit]
        usage = {
            "prompt_tokens": _count_tokens(prompt),
            "total_tokens": _count_tokens(prompt) + len(tokens),
            "completion_tokens": len(tokens),
        }
        prefix = "chatcmpl" if chat else "cmpl"
        ident = f"{prefix}-{uuid.uuid4().hex}"
        created = int(time.time())
        with st.lock:
            st.running += 1
        try:
            if body.get("stream"):
                options = body.get("stream_options") or {}
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                self._stream(ident, created, served, tokens, finish, usage, include_usage, chat)
            else:
                for _ in tokens:
                    if st.token_delay:
                        self._pause()
                text = "".join(tokens)
                if chat:
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "tool_calls": []},
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                    }
                else:
                    choice = {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                    }
                self._json(
                    200,
                    {
                        "id": ident,
                        "object": "chat.completion" if chat else "text_completion",
                        "created": created,
                        "model": served,
                        "choices": [choice],
                        "usage": usage,
                        "prompt_logprobs": None,
                    },
                )
            with st.lock:
                st.success[finish] = st.success.get(finish, 0) + 1
                st.prompt_tokens += usage["prompt_tokens"]
                st.generation_tokens += usage["completion_tokens"]
        finally:
            with st.lock:
                st.running -= 1

    def _stream(self, ident, created, served, tokens, finish, usage, include_usage, chat) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ClientGone from exc
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices, **extra) -> None:
            payload = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": served,
                "choices": choices,
            }
            payload.update(extra)
            self._write_chunk(b"data: " + json.dumps(payload).encode("utf-8") + b"\n\n")

        if chat:
            role = {"role": "assistant", "content": ""}
            event([{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}])
        for i, token in enumerate(tokens):
            if self.state.token_delay:
                self._pause()
            last = i == len(tokens) - 1
            reason = finish if last else None
            if chat:
                choice = {
                    "index": 0,
                    "delta": {"content": token},
                    "logprobs": None,
                    "finish_reason": reason,
                }
            else:
                choice = {"index": 0, "text": token, "logprobs": None, "finish_reason": reason}
            if last:
                choice["stop_reason"] = None
            event([choice])
        if include_usage:
            event([], usage=usage)
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the terminating zero-length chunk

    def _chat(self, body, query) -> None:
        prompt = ""
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(body, dict) and not isinstance(messages, list):
            self._error(400, "Field `messages` is required", "BadRequestError")
            return
        for message in reversed(messages or []):
            if isinstance(message, dict) and message.get("role") == "user":
                prompt = _message_text(message.get("content"))
                break
        self._generate(body, prompt, chat=True)

    def _completions(self, body, query) -> None:
        prompt = _prompt_text(body.get("prompt")) if isinstance(body, dict) else ""
        self._generate(body, prompt, chat=False)

    def _embeddings(self, body, query) -> None:
        served = self._check_generation(body)
        if served is None:
            return
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [" ".join(map(str, raw))]  # one tokenized input
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else json.dumps(x) for x in raw]
        else:
            self._error(400, "Field `input` must be a string or a list", "BadRequestError")
            return
        tokens = sum(_count_tokens(text) for text in inputs)
        self._json(
            200,
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": served,
                "data": [
                    {"index": i, "object": "embedding", "embedding": embedding_for(text)}
                    for i, text in enumerate(inputs)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            },
        )

    def _metrics(self, body, query) -> None:
        st = self.state
        label = f'model_name="{st.served[0]}"'
        with st.lock:
            running = st.running
            success = dict(st.success)
            prompt_tokens = st.prompt_tokens
            generation_tokens = st.generation_tokens
        usage = 0.0 if st.sleeping else min(1.0, running * 0.01)
        lines = []

        def gauge(name: str, help_text: str, value: float) -> None:
            lines.extend(
                [
                    f"# HELP vllm:{name} {help_text}",
                    f"# TYPE vllm:{name} gauge",
                    f"vllm:{name}{{{label}}} {float(value)}",
                ]
            )

        gauge("num_requests_running", "Number of requests currently running on GPU.", running)
        gauge("num_requests_waiting", "Number of requests waiting to be processed.", 0)
        gauge("num_requests_swapped", "Number of requests swapped to CPU.", 0)
        gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage)
        gauge("gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", usage)
        lines += [
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason, count in sorted(success.items()):
            lines.append(
                f'vllm:request_success_total{{finished_reason="{reason}",{label}}} {float(count)}'
            )
        for name, value, help_text in (
            ("prompt_tokens_total", prompt_tokens, "Number of prefill tokens processed."),
            ("generation_tokens_total", generation_tokens, "Number of generation tokens."),
        ):
            lines += [
                f"# HELP vllm:{name} {help_text}",
                f"# TYPE vllm:{name} counter",
                f"vllm:{name}{{{label}}} {float(value)}",
            ]
        text = "\n".join(lines) + "\n"
        self._send(200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")

    def _sleep_mode_enabled(self) -> bool:
        if self.state.args.enable_sleep_mode:
            return True
        self._error(400, "Sleep mode is not enabled in the model config", "BadRequestError")
        return False

    def _sleep(self, body, query) -> None:
        if not self._sleep_mode_enabled():
            return
        try:
            level = int(query.get("level", ["1"])[0])
        except ValueError:
            level = 1
        with self.state.lock:
            self.state.sleeping = True
            self.state.sleep_level = level
        self._send(200)

    def _wake_up(self, body, query) -> None:
        if not self._sleep_mode_enabled():
            return
        with self.state.lock:
            self.state.sleeping = False
            self.state.sleep_level = 0
        self._send(200)

    def _is_sleeping(self, body, query) -> None:
        self._json(200, {"is_sleeping": self.state.sleeping})

    # -- test-only endpoints
    def _fake_requests(self, body, query) -> None:
        with self.state.lock:
            recorded = list(self.state.requests)
        self._json(200, recorded)

    def _fake_clear(self, body, query) -> None:
        with self.state.lock:
            self.state.requests.clear()
        self._json(200, [])

    def _fake_disconnects(self, body, query) -> None:
        with self.state.lock:
            count = self.state.disconnects
        self._json(200, {"count": count})

    def _fake_health(self, body, query) -> None:
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, int) or not 100 <= status <= 599:
            self._error(400, 'body must be {"status": <int>}', "BadRequestError")
            return
        self.state.health_status = status
        self._json(200, {"status": status})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


# --------------------------------------------------------------------------- lifecycle


def _fail(kind: str, message: str, frames: list[tuple[str, int, str, str]]) -> None:
    emit("Traceback (most recent call last):", sys.stderr)
    for path, line, func, code in frames:
        emit(f'  File "{path}", line {line}, in {func}', sys.stderr)
        emit(f"    {code}", sys.stderr)
    emit(f"{kind}: {message}", sys.stderr)
    sys.exit(1)


def _progress(done: int, total: int, elapsed: float) -> str:
    pct = int(100 * done / total) if total else 100
    clock = f"{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}"
    if done == 0:
        timing = f"{clock}<?, ?it/s"
    else:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else 0.0
        timing = f"{clock}<{int(left) // 60:02d}:{int(left) % 60:02d}, {rate:5.2f}it/s"
    return f"Loading safetensors checkpoint shards: {pct:3d}% Completed | {done}/{total} [{timing}]"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    # As PID 1 in a container, Python ignores SIGTERM unless a handler is installed.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def shut_down_now() -> int:
        emit("INFO:     Shutting down")
        emit(f"INFO:     Finished server process [{os.getpid()}]")
        return 0

    info("api_server.py:585", f"vLLM API server version {VERSION}")
    shown = {k: v for k, v in vars(args).items() if k != "unknown_args"}
    namespace = ", ".join(f"{k}={v!r}" for k, v in shown.items())
    info("api_server.py:586", f"args: Namespace({namespace})")
    if os.path.isabs(args.model) and not os.path.exists(args.model):
        _fail(
            "OSError",
            f"Incorrect path_or_model_id: '{args.model}'. Please provide either the path to a "
            "local folder or the repo_id of a model on the Hub.",
            [
                ("/usr/local/bin/vllm", 8, "<module>", "sys.exit(main())"),
                (
                    "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py",
                    470,
                    "cached_files",
                    "resolved_file = hf_hub_download(",
                ),
            ],
        )
    state = State(args)
    info(
        "llm_engine.py:249",
        f"Initializing an LLM engine (v{VERSION}) with config: model={args.model!r}, "
        f"served_model_name={state.served[0]!r}, max_seq_len={state.max_model_len}, "
        f"tensor_parallel_size={args.tensor_parallel_size}, "
        f"gpu_memory_utilization={args.gpu_memory_utilization}, "
        f"enable_sleep_mode={args.enable_sleep_mode}",
    )
    info("model_runner.py:1072", f"Starting to load model {args.model}...")

    shards = max(1, _env_int("FAKE_VLLM_SHARDS", 4))
    load_seconds = max(0.0, _env_float("FAKE_VLLM_LOAD_SECONDS", 0.3))
    crash = os.environ.get("FAKE_VLLM_CRASH", "") not in ("", "0")
    exit_code = os.environ.get("FAKE_VLLM_EXIT_CODE", "")
    started = time.monotonic()
    emit(_progress(0, shards, 0.0))
    for done in range(1, shards + 1):
        if stop.wait(load_seconds / shards):
            return shut_down_now()
        emit(_progress(done, shards, time.monotonic() - started))
        if done == 1 and exit_code:
            sys.stdout.flush()
            os._exit(int(exit_code))
        if done == 1 and crash:
            _fail(
                "RuntimeError",
                "CUDA error: an illegal memory access was encountered\n"
                "CUDA kernel errors might be asynchronously reported at some other API call, "
                "so the stacktrace below might be incorrect.",
                [
                    (
                        "/usr/local/lib/python3.12/dist-packages/vllm/worker/model_runner.py",
                        1074,
                        "load_model",
                        "self.model = get_model(vllm_config=self.vllm_config)",
                    ),
                    (
                        "/usr/local/lib/python3.12/dist-packages/vllm/model_executor/"
                        "model_loader/loader.py",
                        364,
                        "load_model",
                        "model.load_weights(self._get_all_weights(model_config, model))",
                    ),
                ],
            )
    info("model_runner.py:1077", "Loading model weights took 4.1 GiB")
    info("gpu_executor.py:122", "# GPU blocks: 2048, # CPU blocks: 512")
    info("api_server.py:249", f"Started engine process with PID {os.getpid()}")

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    Server.address_family = family
    handler = type("BoundHandler", (Handler,), {"state": state})
    try:
        httpd = Server((args.host, args.port), handler)
    except OSError as exc:
        emit(
            f"ERROR:    [Errno {exc.errno}] error while attempting to bind on address "
            f"('{args.host}', {args.port}): {exc.strerror}",
            sys.stderr,
        )
        return 1
    port = httpd.server_address[1]
    info("launcher.py:19", "Available routes are:")
    for route in (
        "/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/metrics",
        "/sleep",
        "/wake_up",
        "/is_sleeping",
    ):
        info("launcher.py:27", f"Route: {route}")
    emit(f"INFO:     Started server process [{os.getpid()}]")
    emit("INFO:     Waiting for application startup.")
    emit("INFO:     Application startup complete.")
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    display_host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    emit(f"INFO:     Uvicorn running on http://{display_host}:{port} (Press CTRL+C to quit)")
    while not stop.wait(0.5):
        pass
    emit("INFO:     Shutting down")
    httpd.shutdown()
    httpd.server_close()
    emit("INFO:     Waiting for application shutdown.")
    emit("INFO:     Application shutdown complete.")
    emit(f"INFO:     Finished server process [{os.getpid()}]")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # don't wait for streaming threads still blocked on slow clients
