#!/usr/bin/env python3
"""A fake vLLM 0.32 (V1 engine) OpenAI-compatible server, standard library only (Python 3.11).

Seen from outside it behaves like ``vllm serve`` in ``vllm/vllm-openai`` on one GPU: its command
line is what follows ``vllm serve`` (the model positionally; ``--model`` still works with vLLM's
deprecation warning; an unknown flag exits 2 with argparse's usage line), it prints vLLM's V1
log lines (``(APIServer pid=N) INFO 12-01 10:21:22 [file.py:N] ...`` and ``(EngineCore pid=N)``
lines, unprefixed tqdm bars and uvicorn lines), binds its port at once but listens only once the
engine is built (connection refused while loading), and serves ``/health``, ``/v1/models``, chat
and text completions (streaming and not), embeddings, ``/metrics`` (today's metric names with
``engine`` and ``model_name`` labels), ``/version`` and ``/ping``. Errors are nested OpenAI-style:
``{"error": {"message", "type", "param", "code"}}``; a request naming a model that is not served
answers 404 ``The model `x` does not exist. Valid aliases: a, b.``. With ``--api-key`` (or
``VLLM_API_KEY``) every ``/v1/*`` path needs ``Authorization: Bearer KEY`` (401
``{"error": "Unauthorized"}``); ``/health`` and ``/metrics`` do not.

Dev-mode routes exist only with ``VLLM_SERVER_DEV_MODE=1`` (otherwise 404 ``{"detail": "Not
Found"}``), as in vLLM, whatever ``--enable-sleep-mode`` says: ``POST /sleep?level=0|1|2``
(``level`` is a query parameter, default 1; new requests wait while the engine sleeps),
``POST /wake_up`` (optional repeatable ``?tags=weights`` / ``?tags=kv_cache``; the engine serves
again once every tag is awake), ``GET /is_sleeping`` and ``POST /collective_rpc``. Level 2
discards the weights: after waking from it the model answers garbage (``!`` tokens) until
``POST /collective_rpc {"method": "reload_weights"}``, as vLLM expects a client to reload them.

Environment knobs:

* ``FAKE_VLLM_LOAD_SECONDS`` weight-loading time, spread over the shards (default 0.3)
* ``FAKE_VLLM_SHARDS`` number of checkpoint shards (default 4)
* ``FAKE_VLLM_COMPILE_SECONDS`` torch.compile time (default 0; skipped with ``--enforce-eager``)
* ``FAKE_VLLM_GRAPH_SECONDS`` CUDA graph capture time (default 0; skipped with ``--enforce-eager``)
* ``FAKE_VLLM_CRASH=1`` crash during load after the first shard: ``RuntimeError: CUDA error: an
  illegal memory access was encountered`` in the engine core's traceback, then the API server's
  ``RuntimeError: Engine core initialization failed. ...`` last line, exit 1
* ``FAKE_VLLM_GPU_OOM=weights|kv_cache|free_memory`` fail start-up like vLLM out of GPU memory
  (``torch.OutOfMemoryError: CUDA out of memory. ...`` while loading the weights; ``ValueError:
  No available memory for the cache blocks. ...`` when sizing the KV cache; ``ValueError: Free
  memory on device cuda:0 (X/Y GiB) on startup is less than desired GPU memory utilization ...``
  before loading), with the same V1 failure shape, exit 1
* ``FAKE_VLLM_PLATFORM=cpu`` act as the CPU build: ``--enable-sleep-mode`` is refused with
  ``Sleep mode is not supported on current platform.`` (exit 1), ``CPU KV cache size``, no CUDA
  graphs
* ``FAKE_VLLM_FAIL_FIRST_REQUEST=1`` ``/health`` answers 200, but the first generation fails like
  the CPU build with a head_dim it has no kernel for (``RuntimeError: Unsupported CPU attention
  configuration: ...`` → ``EngineDeadError``): it answers 500 and the server exits (code 0, as
  vLLM does)
* ``FAKE_VLLM_EXIT_CODE=N`` exit with code N during load after the first shard, printing nothing
  more (137 looks like the OOM killer)
* ``FAKE_VLLM_TOKEN_DELAY`` seconds between generated tokens (default 0)
* ``FAKE_VLLM_WAKE_SECONDS`` time a ``/wake_up`` of a sleeping engine takes (default 0)
* ``VLLM_SERVER_DEV_MODE=1`` and ``VLLM_API_KEY`` as in vLLM

Test-only endpoints (not in vLLM; never behind the API key):

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
import itertools
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
from urllib.parse import parse_qs, quote, urlsplit

VERSION = "0.32.0"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
EMBEDDING_DIM = 8
DEFAULT_MAX_TOKENS = 16
DEFAULT_MAX_MODEL_LEN = 32768
GPU_TOTAL_GIB = 23.52
SITE = "/usr/local/lib/python3.12/dist-packages"
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
TTFT_BUCKETS += (7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5)
ITL_BUCKETS += (10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
E2E_BUCKETS += (120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOP_USAGE = (
    "usage: vllm [-h] [-v]\n"
    "            {chat,complete,serve,launch,bench,collect-env,download-kernels,preload,"
    "run-batch,snapshot}\n"
    "            ..."
)
MODEL_FLAG_WARNING = (
    "With `vllm serve`, you should provide the model as a positional argument or in a config "
    "file instead of via the `--model` option. The `--model` option will be removed in a future "
    "version."
)
LOGO = (
    "",
    "       █     █     █▄   ▄█",
    " ▄▄ ▄█ █     █     █ ▀▄▀ █  version {version}",
    "  █▄█▀ █     █     █     █  model   {model}",
    "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀",
    "",
)

_print_lock = threading.Lock()


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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# --------------------------------------------------------------------------- output


def write(text: str, stream=None) -> None:
    """Write ``text`` as it is and flush it at once (docker logs and tests read it live)."""
    out = stream or sys.stdout
    with _print_lock:
        out.write(text)
        out.flush()


def emit(line: str, stream=None) -> None:
    """Print one line."""
    write(line + "\n", stream)


class Log:
    """vLLM's logger format: ``(Process pid=N) LEVEL mm-dd HH:MM:SS [file.py:line] message``.

    vLLM logs to stdout; every line of a multi-line message gets the prefix. uvicorn's own
    lines (``INFO:     ...``) go to stderr and its access log to stdout, tqdm bars and
    tracebacks to stderr, unprefixed.
    """

    def __init__(self) -> None:
        self.api_pid = os.getpid()
        self.engine_pid = self.api_pid + 1

    def line(self, process: str, pid: int, level: str, where: str, message: str) -> None:
        head = f"({process} pid={pid}) {level} {time.strftime('%m-%d %H:%M:%S')} [{where}] "
        emit("\n".join(head + part for part in message.split("\n")))

    def api(self, where: str, message: str, level: str = "INFO") -> None:
        self.line("APIServer", self.api_pid, level, where, message)

    def engine(self, where: str, message: str, level: str = "INFO") -> None:
        self.line("EngineCore", self.engine_pid, level, where, message)

    def worker(self, where: str, message: str, level: str = "INFO") -> None:
        self.line("Worker", self.engine_pid + 1, level, where, message)

    @staticmethod
    def uvicorn(message: str) -> None:
        emit(f"INFO:     {message}", sys.stderr)


def traceback_text(frames: list[tuple[str, int, str, str]], error: str) -> str:
    """A Python traceback: ``frames`` as (file, line, function, code), then ``error``."""
    lines = ["Traceback (most recent call last):"]
    for path, number, function, code in frames:
        lines.append(f'  File "{path}", line {number}, in {function}')
        if code:
            lines.append(f"    {code}")
    lines.append(error)
    return "\n".join(lines)


def _v(path: str) -> str:
    return f"{SITE}/vllm/{path}"


CLI_FRAMES = [
    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
    (_v("entrypoints/cli/main.py"), 120, "main", "args.dispatch_function(args)"),
    (_v("entrypoints/cli/serve.py"), 156, "cmd", "uvloop.run(run_server(args))"),
    (f"{SITE}/uvloop/__init__.py", 48, "wrapper", "return await main"),
    (
        _v("entrypoints/launchers/api_server/entry.py"),
        177,
        "run_server",
        "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)",
    ),
]
ENGINE_CLIENT_FRAMES = [
    (
        _v("entrypoints/launchers/api_server/entry.py"),
        195,
        "run_server_worker",
        "async with build_async_engine_client(",
    ),
    (
        _v("entrypoints/launchers/api_server/entry.py"),
        87,
        "build_async_engine_client_from_engine_args",
        "async_llm = AsyncLLM.from_vllm_config(",
    ),
    (_v("v1/engine/async_llm.py"), 262, "from_vllm_config", "return cls("),
    (_v("v1/engine/async_llm.py"), 163, "__init__", "self.engine_core = EngineCoreClient."),
    (
        _v("v1/engine/core_client.py"),
        118,
        "make_async_mp_client",
        "return AsyncMPClient(*client_args)",
    ),
    (_v("v1/engine/core_client.py"), 1117, "__init__", "super().__init__("),
    (_v("v1/engine/core_client.py"), 630, "__init__", "with launch_core_engines("),
    ("/usr/lib/python3.12/contextlib.py", 144, "__exit__", "next(self.gen)"),
    (_v("v1/engine/utils.py"), 1186, "launch_core_engines", "wait_for_engine_startup("),
    (_v("v1/engine/utils.py"), 1431, "wait_for_engine_startup", "raise RuntimeError("),
]
ENGINE_INIT_FRAMES = [
    (
        _v("v1/engine/core.py"),
        1486,
        "run_engine_core",
        "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)",
    ),
    (_v("v1/engine/core.py"), 1193, "__init__", "super().__init__("),
    (_v("v1/engine/core.py"), 145, "__init__", "self.model_executor = executor_class(vllm_config)"),
    (_v("v1/executor/abstract.py"), 110, "__init__", "self._init_executor()"),
]
LOAD_FRAMES = [
    (
        _v("v1/executor/uniproc_executor.py"),
        63,
        "_init_executor",
        "self.driver_worker.load_model()",
    ),
    (_v("v1/worker/gpu_worker.py"), 606, "load_model", "self.model_runner.load_model("),
    (
        _v("v1/worker/gpu_model_runner.py"),
        5056,
        "load_model",
        "self.model = model or model_loader.load_model(",
    ),
    (
        _v("model_executor/model_loader/base_loader.py"),
        96,
        "load_model",
        "self.load_weights(model, model_config)",
    ),
    (
        _v("model_executor/model_loader/default_loader.py"),
        482,
        "load_weights",
        "loaded_weights = model.load_weights(self.get_all_weights(model_config, model))",
    ),
]


def engine_start_failure(log: Log, frames: list[tuple[str, int, str, str]], error: str) -> None:
    """The V1 shape of an engine that fails to start: the root cause in the engine core's log
    and stderr, then the API server's generic last line far below it; exit 1."""
    root = traceback_text(ENGINE_INIT_FRAMES + frames, error)
    log.engine("core.py:1510", "EngineCore failed to start.\n" + root, level="ERROR")
    process_frames = [
        ("/usr/lib/python3.12/multiprocessing/process.py", 314, "_bootstrap", "self.run()"),
        (
            "/usr/lib/python3.12/multiprocessing/process.py",
            108,
            "run",
            "self._target(*self._args, **self._kwargs)",
        ),
        (_v("v1/engine/core.py"), 1520, "run_engine_core", "raise e"),
    ]
    emit("Process EngineCore:", sys.stderr)
    emit(traceback_text(process_frames + ENGINE_INIT_FRAMES[:1] + frames, error), sys.stderr)
    api_failure(
        ENGINE_CLIENT_FRAMES,
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {'EngineCore': 1}",
    )


def api_failure(frames: list[tuple[str, int, str, str]], error: str) -> None:
    """An exception that ends ``vllm serve`` itself: its traceback on stderr, exit 1."""
    emit(traceback_text(CLI_FRAMES + frames, error), sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


# --------------------------------------------------------------------------- command line


def _max_model_len(text: str) -> int:
    """vLLM takes ``4096``, ``32k``, ``1M`` (and ``-1`` for the model's own)."""
    found = re.fullmatch(r"(-?\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"invalid max_model_len value: {text!r}")
    value = float(found.group(1))
    scale = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}[found.group(2).lower()]
    if found.group(2).isupper():
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}[found.group(2)]
    return int(value * scale)


class Parser(argparse.ArgumentParser):
    """``vllm serve``'s parser for the flags the fake knows."""

    def __init__(self) -> None:
        super().__init__(
            prog="vllm serve",
            usage="vllm serve [model_tag] [options]",
            allow_abbrev=False,
        )
        flag = argparse.BooleanOptionalAction
        add = self.add_argument
        add("model_tag", nargs="?", default=None)
        # Frontend
        add("--host", default=None)
        add("--port", type=int, default=8000)
        add(
            "--uvicorn-log-level",
            default="info",
            choices=["critical", "debug", "error", "info", "trace", "warning"],
        )
        add("--disable-uvicorn-access-log", action=flag, default=False)
        add("--disable-access-log-for-endpoints", default=None)
        add("--api-key", nargs="+", default=None)
        add("--chat-template", default=None)
        add("--enable-auto-tool-choice", action=flag, default=False)
        add("--tool-call-parser", default=None)
        add("--max-log-len", type=int, default=None)
        # Engine
        add("--model", default=DEFAULT_MODEL)
        add("--tokenizer", default=None)
        add("--trust-remote-code", action=flag, default=False)
        add("--download-dir", default=None)
        add("--load-format", default="auto")
        add(
            "--dtype",
            default="auto",
            choices=["auto", "bfloat16", "float", "float16", "float32", "half"],
        )
        add("--seed", type=int, default=0)
        add("--max-model-len", type=_max_model_len, default=None)
        add("--quantization", "-q", default=None)
        add("--enforce-eager", action=flag, default=False)
        add("--revision", default=None)
        add("--served-model-name", nargs="+", default=None)
        add("--generation-config", default="auto")
        add("--enable-sleep-mode", action=flag, default=False)
        add("--reasoning-parser", default="")
        add("--distributed-executor-backend", default=None)
        add("--tensor-parallel-size", "-tp", type=int, default=1)
        add("--pipeline-parallel-size", "-pp", type=int, default=1)
        add("--data-parallel-size", "-dp", type=int, default=1)
        add("--gpu-memory-utilization", type=float, default=0.9)
        add("--kv-cache-memory-bytes", type=int, default=None)
        add("--kv-cache-dtype", default="auto")
        add("--block-size", type=int, default=None)
        add("--enable-prefix-caching", action=flag, default=None)
        add("--cpu-offload-gb", type=float, default=0)
        add("--max-num-seqs", type=int, default=None)
        add("--max-num-batched-tokens", type=int, default=None)
        add("--enable-chunked-prefill", action=flag, default=None)
        add("--disable-log-stats", action=flag, default=False)
        add("--enable-log-requests", action=flag, default=False)


def _normalize(argv: list[str]) -> list[str]:
    """As vLLM: ``--max_model_len`` is ``--max-model-len``."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            arg = key.replace("_", "-") + eq + value
        out.append(arg)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``vllm serve``'s arguments as vLLM 0.32 does (exit 2 on a bad or unknown flag)."""
    argv = _normalize(argv)
    where = next((i for i, a in enumerate(argv) if re.match(r"^--model(=.+|$)", a)), None)
    if where is not None:
        emit(MODEL_FLAG_WARNING, sys.stderr)
        if argv[where] == "--model":
            tag, rest = argv[where + 1 : where + 2], argv[where + 2 :]
        else:
            tag, rest = [argv[where].removeprefix("--model=")], argv[where + 1 :]
        argv = tag + argv[:where] + rest
    if (
        argv
        and argv[0].startswith("-")
        and any(re.match(r"^--served-model-name(=.+|$)", a) for a in argv)
    ):
        api_failure(
            [],
            "ValueError: `model` should be provided as the first positional argument when using "
            "`vllm serve`. i.e. `vllm serve <model> --<arg> <value>`.",
        )
    parser = Parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        emit(TOP_USAGE, sys.stderr)
        emit(f"vllm: error: unrecognized arguments: {' '.join(unknown)}", sys.stderr)
        sys.exit(2)
    if args.model_tag is not None:
        args.model = args.model_tag
    args.non_default = {
        key: value
        for key, value in vars(args).items()
        if key != "model_tag" and value != parser.get_default(key)
    }
    if args.model_tag is not None:
        args.non_default = {"model_tag": args.model_tag, **args.non_default}
    if not args.served_model_name:
        args.served_model_name = [args.model]
    env_key = os.environ.get("VLLM_API_KEY", "")
    args.api_keys = [k for k in (args.api_key or [env_key]) if k]
    return args


def model_config(args: argparse.Namespace) -> dict:
    path = os.path.join(args.model, "config.json")
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
        if isinstance(loaded, dict):
            return loaded
    return {}


def model_max_len(args: argparse.Namespace, config: dict) -> int:
    if args.max_model_len and args.max_model_len > 0:
        return int(args.max_model_len)
    value = config.get("max_position_embeddings")
    if isinstance(value, int) and value > 0:
        return value
    return DEFAULT_MAX_MODEL_LEN


# --------------------------------------------------------------------------- shared state


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class State:
    def __init__(self, args: argparse.Namespace, log: Log, stop: threading.Event) -> None:
        self.args = args
        self.log = log
        self.stop = stop
        self.served = list(args.served_model_name)
        self.model = args.model
        self.max_model_len = model_max_len(args, model_config(args))
        self.dev_mode = _dev_mode()
        self.created = int(time.time())
        self.lock = threading.Lock()
        self.awake = threading.Condition(self.lock)
        self.running = 0
        self.waiting = 0
        self.success: dict[str, int] = dict.fromkeys(FINISH_REASONS, 0)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.paused = False  # the scheduler: new requests wait while it is paused
        self.sleep_level = 0
        self.sleeping_tags: set[str] = set()
        self.weights_lost = False  # woken from level 2 and not reloaded: garbage output
        self.health_status = 200
        self.requests: list[dict] = []
        self.disconnects = 0
        self.token_delay = max(0.0, _env_float("FAKE_VLLM_TOKEN_DELAY", 0.0))
        self.fail_first_request = _env_flag("FAKE_VLLM_FAIL_FIRST_REQUEST")
        self.dead = False
        excluded = args.disable_access_log_for_endpoints or ""
        self.quiet_paths = {p.strip() for p in excluded.split(",") if p.strip()}

    def sleep_state(self) -> str:
        if not self.paused and not self.sleeping_tags:
            return "awake"
        return {1: "weights_offloaded", 2: "discard_all"}.get(self.sleep_level, "")


def _dev_mode() -> bool:
    try:
        return bool(int(os.environ.get("VLLM_SERVER_DEV_MODE", "0")))
    except ValueError:
        return False


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


def error_body(message: str, kind: str, code: int, param: str | None = None) -> dict:
    """vLLM's ``ErrorResponse``: the OpenAI shape, nested under ``error``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def validation_error(kind: str, loc: str, msg: str, value, ctx: dict | None = None) -> dict:
    """vLLM's answer to a request FastAPI fails to validate: 400 ``Bad Request``."""
    detail = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        detail["ctx"] = ctx
    return error_body(f"1 validation error:\n  {detail}", "Bad Request", 400, loc)


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    disable_nagle_algorithm = True  # as uvicorn: no 40 ms delayed-ACK wait on kept-alive requests
    state: State  # set on the subclass made by serve()

    # -- logging: uvicorn's access log (stdout), filtered as vLLM's flags say
    def log_request(self, code="-", size="-") -> None:
        args = self.state.args
        url = urlsplit(self.path)
        if args.disable_uvicorn_access_log or url.path in self.state.quiet_paths:
            return
        try:
            phrase = HTTPStatus(int(code)).phrase
        except (ValueError, TypeError):
            phrase = ""
        host, port = self.client_address[:2]
        target = quote(url.path) + (f"?{url.query}" if url.query else "")
        emit(
            f'INFO:     {host}:{port} - "{self.command} {target} '
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

    def _error(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        self._json(status, error_body(message, kind, status, param))

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

    def _routes(self) -> dict:
        routes = {
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health, "POST": self._health},
            "/version": {"GET": self._version},
            "/v1/models": {"GET": self._models},
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/completions": {"POST": self._completions},
            "/v1/embeddings": {"POST": self._embeddings},
            "/metrics": {"GET": self._metrics},
            "/fake/requests": {"GET": self._fake_requests, "DELETE": self._fake_clear},
            "/fake/disconnects": {"GET": self._fake_disconnects},
            "/fake/health": {"POST": self._fake_health},
        }
        if self.state.dev_mode:
            routes.update(
                {
                    "/sleep": {"POST": self._sleep},
                    "/wake_up": {"POST": self._wake_up},
                    "/is_sleeping": {"GET": self._is_sleeping},
                    "/collective_rpc": {"POST": self._collective_rpc},
                }
            )
        return routes

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        raw = self._read_body()
        body = None
        body_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = exc
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
        if path.startswith(("/v1", "/v2", "/inference")) and not self._authorized():
            self._json(401, {"error": "Unauthorized"})
            return
        route = self._routes().get(path)
        if route is None:
            self._json(404, {"detail": "Not Found"})
            return
        handler = route.get(method)
        if handler is None:
            self._json(405, {"detail": "Method Not Allowed"})
            return
        if path.startswith("/v1/") and isinstance(body_error, json.JSONDecodeError):
            self._json(
                400,
                validation_error(
                    "json_invalid",
                    f"body.{body_error.pos}",
                    "JSON decode error",
                    {},
                    {"error": body_error.msg},
                ),
            )
            return
        try:
            handler(body, query)
        except ClientGone:
            with self.state.lock:
                self.state.disconnects += 1
            self.close_connection = True

    def _authorized(self) -> bool:
        keys = self.state.args.api_keys
        if not keys:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in keys

    # -- vLLM endpoints
    def _health(self, body, query) -> None:
        self._send(503 if self.state.dead else self.state.health_status)

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

    def _check_model(self, body) -> str | None:
        """The served name to answer as, or None once an error answer was sent."""
        if not isinstance(body, dict):
            self._json(
                400,
                validation_error(
                    "model_attributes_type",
                    "body",
                    "Input should be a valid dictionary or object to extract fields from",
                    body,
                ),
            )
            return None
        model = body.get("model")
        if model is None:
            return self.state.served[0]
        if model not in self.state.served:
            aliases = ", ".join(self.state.served)
            message = f"The model `{model}` does not exist. Valid aliases: {aliases}."
            info = f"ErrorInfo(message={message!r}, type='NotFoundError', param='model', code=404)"
            self.state.log.api("serving.py:274", f"Error with model error={info}", "ERROR")
            self._error(404, message, "NotFoundError", "model")
            return None
        return str(model)

    def _wait_awake(self) -> None:
        """While the engine sleeps its scheduler is paused: new requests wait, as in vLLM."""
        st = self.state
        with st.awake:
            if not st.paused:
                return
            st.waiting += 1
            try:
                while st.paused:
                    st.awake.wait(0.1)
                    if self._client_gone(0):
                        raise ClientGone
            finally:
                st.waiting -= 1

    def _generate(self, body, prompt: str, chat: bool) -> None:
        served = self._check_model(body)
        if served is None:
            return
        st = self.state
        limit = body.get("max_completion_tokens") if chat else None
        if limit is None:
            limit = body.get("max_tokens")
        if isinstance(limit, int) and limit > st.max_model_len:
            self._error(
                400,
                f"max_tokens={limit} cannot be greater than max_model_len={st.max_model_len}. "
                f"Please request fewer output tokens. (parameter=max_tokens, value={limit})",
                "BadRequestError",
                "max_tokens",
            )
            return
        if not isinstance(limit, int) or limit < 1:
            limit = DEFAULT_MAX_TOKENS
        self._wait_awake()
        if st.fail_first_request:
            self._die(body)
            return
        started = time.monotonic()
        if st.weights_lost:
            tokens = ["!"] * limit
        else:
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
        stamps: list[float] = []
        try:
            if body.get("stream"):
                options = body.get("stream_options") or {}
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                self._stream(
                    ident, created, served, tokens, finish, usage, include_usage, chat, stamps
                )
            else:
                for _ in tokens:
                    if st.token_delay:
                        self._pause()
                    stamps.append(time.monotonic())
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
        except ClientGone:
            finish = "abort"
            raise
        finally:
            with st.lock:
                st.running -= 1
                st.success[finish] = st.success.get(finish, 0) + 1
                st.prompt_tokens += usage["prompt_tokens"]
                st.generation_tokens += len(stamps)
                if stamps:
                    st.ttft.observe(stamps[0] - started)
                    for before, after in itertools.pairwise(stamps):
                        st.itl.observe(after - before)
                st.e2e.observe(time.monotonic() - started)

    def _stream(
        self, ident, created, served, tokens, finish, usage, include_usage, chat, stamps
    ) -> None:
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
            stamps.append(time.monotonic())
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

    def _die(self, body) -> None:
        """The engine dies at its first step (the CPU build with a head_dim it has no kernel
        for): the worker's, engine core's and API server's errors, 500, then the server stops."""
        st = self.state
        log = st.log
        st.dead = True
        root = (
            "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 "
            "kv_cache_idx=0"
        )
        worker_frames = [
            (
                _v("v1/executor/multiproc_executor.py"),
                1055,
                "_execute_worker_rpc",
                "output = func(*args, **kwargs)",
            ),
            (
                _v("v1/worker/gpu_model_runner.py"),
                4142,
                "execute_model",
                "self._build_attention_metadata(",
            ),
            (
                _v("v1/attention/backends/cpu_attn.py"),
                253,
                "build",
                "scheduler_metadata = ops.cpu_attn_get_scheduler_metadata(",
            ),
            (
                _v("_custom_ops.py"),
                3865,
                "cpu_attn_get_scheduler_metadata",
                "scheduler_metadata = torch.ops._C.get_scheduler_metadata(",
            ),
        ]
        log.worker(
            "multiproc_executor.py:1063",
            "WorkerProc hit an exception.\n" + traceback_text(worker_frames, root),
            "ERROR",
        )
        engine_frames = [
            (_v("v1/engine/core.py"), 1496, "run_engine_core", "engine_core.run_busy_loop()"),
            (
                _v("v1/engine/core.py"),
                1606,
                "_process_engine_step",
                "outputs, model_executed = self.step_fn()",
            ),
            (_v("v1/engine/core.py"), 674, "step", "model_output = future.result()"),
            (_v("v1/executor/multiproc_executor.py"), 444, "get_response", "raise RuntimeError("),
        ]
        log.engine(
            "core.py:1512",
            "EngineCore encountered a fatal error.\n"
            + traceback_text(
                engine_frames,
                "RuntimeError: Worker failed with error '"
                + root.removeprefix("RuntimeError: ")
                + "', please check the stack trace above for the root cause",
            ),
            "ERROR",
        )
        api_frames = [
            (
                _v("v1/engine/async_llm.py"),
                849,
                "output_handler",
                "outputs = await engine_core.get_output_async()",
            ),
            (
                _v("v1/engine/core_client.py"),
                1235,
                "get_output_async",
                "raise self._format_exception(outputs) from None",
            ),
        ]
        dead = "EngineCore encountered an issue. See stack trace (above) for the root cause."
        log.api(
            "async_llm.py:906",
            "AsyncLLM output_handler failed.\n"
            + traceback_text(api_frames, f"vllm.v1.engine.exceptions.EngineDeadError: {dead}"),
            "ERROR",
        )
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            error = error_body(dead, "InternalServerError", 500)
            self._write_chunk(b"data: " + json.dumps(error).encode("utf-8") + b"\n\n")
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        else:
            self._error(500, dead, "InternalServerError")
        st.stop.set()

    def _chat(self, body, query) -> None:
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(body, dict) and not isinstance(messages, list):
            self._json(400, validation_error("missing", "body.messages", "Field required", body))
            return
        prompt = ""
        for message in reversed(messages or []):
            if isinstance(message, dict) and message.get("role") == "user":
                prompt = _message_text(message.get("content"))
                break
        self._generate(body, prompt, chat=True)

    def _completions(self, body, query) -> None:
        if isinstance(body, dict) and "prompt" not in body:
            self._json(400, validation_error("missing", "body.prompt", "Field required", body))
            return
        prompt = _prompt_text(body.get("prompt")) if isinstance(body, dict) else ""
        self._generate(body, prompt, chat=False)

    def _embeddings(self, body, query) -> None:
        served = self._check_model(body)
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
            self._json(400, validation_error("missing", "body.input", "Field required", body))
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
        base = {"engine": "0", "model_name": st.served[0]}
        lines: list[str] = []

        def labels(**extra: str) -> str:
            merged = {**base, **extra}
            return ",".join(f'{k}="{merged[k]}"' for k in sorted(merged))

        def family(name: str, kind: str, help_text: str) -> None:
            lines.extend([f"# HELP vllm:{name} {help_text}", f"# TYPE vllm:{name} {kind}"])

        def histogram(name: str, help_text: str, data: Histogram) -> None:
            family(name, "histogram", help_text)
            for bound, count in zip(data.buckets, data.counts, strict=True):
                lines.append(f"vllm:{name}_bucket{{{labels(le=str(bound))}}} {float(count)}")
            lines.append(f"vllm:{name}_bucket{{{labels(le='+Inf')}}} {float(data.count)}")
            lines.append(f"vllm:{name}_count{{{labels()}}} {float(data.count)}")
            lines.append(f"vllm:{name}_sum{{{labels()}}} {data.sum}")

        with st.lock:
            state = st.sleep_state()
            running = st.running
            usage = 0.0 if st.sleeping_tags else min(1.0, running * 0.01)
            family(
                "num_requests_running", "gauge", "Number of requests in model execution batches."
            )
            lines.append(f"vllm:num_requests_running{{{labels()}}} {float(running)}")
            family("num_requests_waiting", "gauge", "Number of requests waiting to be processed.")
            lines.append(f"vllm:num_requests_waiting{{{labels()}}} {float(st.waiting)}")
            family(
                "engine_sleep_state",
                "gauge",
                "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine "
                "is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means "
                "sleep level 2.",
            )
            for name in SLEEP_STATES:
                value = 1.0 if name == state else 0.0
                lines.append(f"vllm:engine_sleep_state{{{labels(sleep_state=name)}}} {value}")
            family("kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.")
            lines.append(f"vllm:kv_cache_usage_perc{{{labels()}}} {usage}")
            family("prompt_tokens_total", "counter", "Number of prefill tokens processed.")
            lines.append(f"vllm:prompt_tokens_total{{{labels()}}} {float(st.prompt_tokens)}")
            family("generation_tokens_total", "counter", "Number of generation tokens processed.")
            lines.append(
                f"vllm:generation_tokens_total{{{labels()}}} {float(st.generation_tokens)}"
            )
            family("request_success_total", "counter", "Count of successfully processed requests.")
            for reason in FINISH_REASONS:
                count = float(st.success.get(reason, 0))
                lines.append(
                    f"vllm:request_success_total{{{labels(finished_reason=reason)}}} {count}"
                )
            histogram(
                "time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                st.ttft,
            )
            histogram(
                "inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                st.itl,
            )
            histogram(
                "e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                st.e2e,
            )
        text = "\n".join(lines) + "\n"
        self._send(200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")

    # -- dev-mode endpoints (VLLM_SERVER_DEV_MODE=1)
    def _sleep(self, body, query) -> None:
        st = self.state
        raw = query.get("level", ["1"])[0]
        try:
            level = int(raw)
        except ValueError:
            self._json(
                400,
                validation_error(
                    "int_parsing",
                    "query.level",
                    "Input should be a valid integer, unable to parse string as an integer",
                    raw,
                ),
            )
            return
        if not 0 <= level <= 2:
            kind, msg, ctx = (
                ("greater_than_equal", "Input should be greater than or equal to 0", {"ge": 0})
                if level < 0
                else ("less_than_equal", "Input should be less than or equal to 2", {"le": 2})
            )
            self._json(400, validation_error(kind, "query.level", msg, raw, ctx))
            return
        started = time.perf_counter()
        with st.awake:
            st.paused = True
            if level >= 1 and "weights" not in st.sleeping_tags:
                st.sleeping_tags = {"weights", "kv_cache"}
                st.sleep_level = level
                if level == 2:
                    st.weights_lost = True
                freed = 14.2 if st.args.enable_sleep_mode else 0.0
                used = 1.1 if st.args.enable_sleep_mode else 15.3
                st.log.engine(
                    "gpu_worker.py:326",
                    f"Sleep mode freed {freed:.2f} GiB memory, {used:.2f} GiB memory is still "
                    "in use.",
                )
                st.log.engine(
                    "abstract.py:390",
                    f"It took {time.perf_counter() - started:.6f} seconds to fall asleep.",
                )
        self._json(200, {"status": "sleeping", "level": level})

    def _wake_up(self, body, query) -> None:
        st = self.state
        tags = query.get("tags") or None
        st.log.api("api_router.py:50", f"wake up the engine with tags: {tags}")
        started = time.perf_counter()
        with st.lock:
            asleep = bool(st.sleeping_tags)
        if asleep:  # moving the weights back (level 1) or reallocating them takes a while
            time.sleep(max(0.0, _env_float("FAKE_VLLM_WAKE_SECONDS", 0.0)))
        with st.awake:
            wanted = [t for t in (tags or []) if t != "scheduling"]
            if tags is None or wanted:
                if not st.sleeping_tags:
                    st.log.engine("abstract.py:396", "Executor is not sleeping.", "WARNING")
                elif any(t not in st.sleeping_tags for t in wanted):
                    st.log.engine(
                        "abstract.py:401",
                        f"Tag {wanted[0]} is not in sleeping tags {st.sleeping_tags}",
                        "WARNING",
                    )
                else:
                    woken = set(wanted) if wanted else set(st.sleeping_tags)
                    st.sleeping_tags -= woken
                    st.log.engine(
                        "abstract.py:408",
                        f"It took {time.perf_counter() - started:.6f} seconds to wake up tags "
                        f"{wanted or woken}.",
                    )
            fully_awake = not st.sleeping_tags
            if fully_awake:
                st.paused = False
                st.sleep_level = 0
                st.awake.notify_all()
        self._json(200, {"status": "awake" if fully_awake else "sleeping", "tags": tags})

    def _is_sleeping(self, body, query) -> None:
        with self.state.lock:
            sleeping = self.state.paused or bool(self.state.sleeping_tags)
        self._json(200, {"is_sleeping": sleeping})

    def _collective_rpc(self, body, query) -> None:
        if not isinstance(body, dict):
            self._json(400, {"detail": "Request body must be a JSON object"})
            return
        method = body.get("method")
        if method is None:
            self._json(400, {"detail": "Missing 'method' in request body"})
            return
        if method == "reload_weights":
            with self.state.lock:
                self.state.weights_lost = False
        self._json(200, {"results": [None]})

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


# --------------------------------------------------------------------------- start-up


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def _shard_line(done: int, total: int, elapsed: float) -> str:
    """tqdm with vLLM's bar format: it starts with a carriage return and ends with a newline."""
    pct = int(100 * done / total) if total else 100
    if done == 0:
        timing = f"{_clock(elapsed)}<?, ?it/s"
    else:
        rate = done / max(elapsed, 0.05)
        left = (total - done) / rate
        timing = f"{_clock(elapsed)}<{_clock(left)}, {rate:6.2f}it/s"
    desc = "Loading safetensors checkpoint shards"
    return f"\r{desc}: {pct:3d}% Completed | {done}/{total} [{timing}]\n"


def _graph_bar(desc: str, done: int, total: int, elapsed: float) -> str:
    """One refresh of a default tqdm bar (10 cells when stderr is not a terminal)."""
    pct = int(100 * done / total)
    cells = "█" * (10 * done // total)
    bar = cells.ljust(10)
    if done == 0:
        timing = f"{_clock(elapsed)}<?, ?it/s"
    else:
        rate = done / max(elapsed, 0.05)
        timing = f"{_clock(elapsed)}<{_clock((total - done) / rate)}, {rate:5.2f}it/s"
    return f"\r{desc}: {pct:3d}%|{bar}| {done}/{total} [{timing}]"


class Startup:
    """The start-up sequence of ``vllm serve`` on one GPU, with the knobs' failures."""

    def __init__(self, args: argparse.Namespace, log: Log, stop: threading.Event) -> None:
        self.args = args
        self.log = log
        self.stop = stop
        self.config = model_config(args)
        self.max_len = model_max_len(args, self.config)
        self.cpu = os.environ.get("FAKE_VLLM_PLATFORM", "").lower() == "cpu"
        self.oom = os.environ.get("FAKE_VLLM_GPU_OOM", "").lower()
        self.eager = bool(args.enforce_eager) or self.cpu
        self.compile_time = 0.0

    def wait(self, seconds: float) -> bool:
        """Sleep; True when SIGTERM came meanwhile."""
        return self.stop.wait(max(0.0, seconds))

    def api_side(self) -> None:
        args, log = self.args, self.log
        logo = "\n".join(LOGO).format(version=VERSION, model=args.model)
        log.api("api_utils.py:347", logo)
        shown = {k: ("***" if k == "api_key" else v) for k, v in args.non_default.items()}
        log.api("api_utils.py:286", f"non-default args: {shown}")
        if os.path.isabs(args.model) and not os.path.exists(args.model):
            api_failure(
                [
                    (
                        _v("engine/arg_utils.py"),
                        2230,
                        "create_engine_config",
                        "maybe_override_with_speculators(",
                    ),
                    (
                        f"{SITE}/transformers/utils/hub.py",
                        595,
                        "cached_files",
                        'raise OSError(f"{e}") from e',
                    ),
                ],
                "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
                f"'{args.model}'. Use `repo_type` argument if needed.",
            )
        architectures = self.config.get("architectures") or ["Qwen3ForCausalLM"]
        log.api("model.py:733", f"Resolved architecture: {architectures[0]}")
        log.api("model.py:2152", f"Using max model len {self.max_len}")
        if args.enable_sleep_mode:
            if self.cpu:
                api_failure(
                    [
                        (
                            _v("engine/arg_utils.py"),
                            1955,
                            "create_model_config",
                            "return ModelConfig(",
                        ),
                        (
                            f"{SITE}/pydantic/_internal/_dataclasses.py",
                            121,
                            "__init__",
                            "s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), "
                            "self_instance=s)",
                        ),
                    ],
                    "pydantic_core._pydantic_core.ValidationError: 1 validation error for "
                    "ModelConfig\n  Value error, Sleep mode is not supported on current "
                    "platform. [type=value_error, input_value=ArgsKwargs((), {'model': "
                    "...nderer_num_workers': 1}), input_type=ArgsKwargs]\n"
                    "    For further information visit "
                    "https://errors.pydantic.dev/2.14/v/value_error",
                )
            log.api("model.py:659", "Enabling cumem allocator because sleep mode requires it.")
        if self.eager and not self.cpu:
            log.api(
                "vllm.py:1703",
                "Enforce eager set, disabling torch.compile, CUDAGraphs, and JIT kernel warmup. "
                "This is equivalent to setting -cc.mode=none -cc.cudagraph_mode=none and "
                "--kernel_config.enable_jit_warmup=False",
                "WARNING",
            )

    def engine_config_line(self) -> None:
        args = self.args
        dtype = {"auto": "torch.bfloat16", "half": "torch.float16", "float": "torch.float32"}
        self.log.engine(
            "core.py:133",
            f"Initializing a V1 LLM engine (v{VERSION}) with config: model={args.model!r}, "
            f"speculative_config=None, tokenizer={(args.tokenizer or args.model)!r}, "
            f"skip_tokenizer_init=False, tokenizer_mode=auto, revision={args.revision}, "
            f"tokenizer_revision=None, trust_remote_code={args.trust_remote_code}, "
            f"dtype={dtype.get(args.dtype, 'torch.' + args.dtype)}, max_seq_len={self.max_len}, "
            f"download_dir={args.download_dir!r}, load_format={args.load_format}, "
            f"tensor_parallel_size={args.tensor_parallel_size}, "
            f"pipeline_parallel_size={args.pipeline_parallel_size}, "
            f"data_parallel_size={args.data_parallel_size}, "
            f"quantization={args.quantization}, enforce_eager={args.enforce_eager}, "
            f"kv_cache_dtype={args.kv_cache_dtype}, device_config={'cpu' if self.cpu else 'cuda'}, "
            f"seed={args.seed}, served_model_name={', '.join(args.served_model_name)}, "
            "enable_prefix_caching=True, enable_chunked_prefill=True, pooler_config=None",
        )

    def fail(self, frames: list[tuple[str, int, str, str]], error: str) -> None:
        engine_start_failure(self.log, frames, error)

    def engine_side(self) -> bool:
        """Load, compile, size the KV cache and capture graphs; True when SIGTERM came."""
        args, log = self.args, self.log
        self.engine_config_line()
        log.engine(
            "parallel_state.py:2350",
            "rank 0 in world size 1 is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 0, "
            "ETP rank 0, EP rank N/A, EPLB rank N/A",
        )
        total_gib = GPU_TOTAL_GIB
        if self.oom == "free_memory":
            wanted = args.gpu_memory_utilization * total_gib
            self.fail(
                [
                    (
                        _v("v1/executor/uniproc_executor.py"),
                        58,
                        "_init_executor",
                        "self.driver_worker.init_device()",
                    ),
                    (
                        _v("v1/worker/gpu_worker.py"),
                        489,
                        "init_device",
                        "self.requested_memory = request_memory(init_snapshot, self.cache_config)",
                    ),
                    (_v("v1/worker/utils.py"), 762, "request_memory", "raise ValueError("),
                ],
                f"ValueError: Free memory on device cuda:0 (10.12/{total_gib:.2f} GiB) on "
                "startup is less than desired GPU memory utilization "
                f"({args.gpu_memory_utilization}, {wanted:.2f} GiB). Decrease GPU memory "
                "utilization or reduce GPU memory used by other processes.",
            )
        log.engine("gpu_model_runner.py:5039", f"Starting to load model {args.model}...")
        shards = max(1, _env_int("FAKE_VLLM_SHARDS", 4))
        load_seconds = max(0.0, _env_float("FAKE_VLLM_LOAD_SECONDS", 0.3))
        exit_code = os.environ.get("FAKE_VLLM_EXIT_CODE", "")
        started = time.monotonic()
        write(_shard_line(0, shards, 0.0), sys.stderr)
        for done in range(1, shards + 1):
            if self.wait(load_seconds / shards):
                return True
            write(_shard_line(done, shards, time.monotonic() - started), sys.stderr)
            if done == 1 and exit_code:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(int(exit_code))
            if done == 1 and _env_flag("FAKE_VLLM_CRASH"):
                self.fail(
                    LOAD_FRAMES,
                    "RuntimeError: CUDA error: an illegal memory access was encountered\n"
                    "CUDA kernel errors might be asynchronously reported at some other API call, "
                    "so the stacktrace below might be incorrect.\n"
                    "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
                    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
                )
            if done == 1 and self.oom == "weights":
                error = (
                    "CUDA out of memory. Tried to allocate 1.02 GiB. GPU 0 has a total capacity "
                    f"of {total_gib:.2f} GiB of which 312.50 MiB is free. Including non-PyTorch "
                    "memory, this process has 23.20 GiB memory in use. Of the allocated memory "
                    "22.71 GiB is allocated by PyTorch, and 64.00 MiB is reserved by PyTorch but "
                    "unallocated. If reserved but unallocated memory is large try setting "
                    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
                    "See documentation for Memory Management  "
                    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
                )
                log.engine(
                    "gpu_model_runner.py:5146",
                    "Failed to load model - not enough GPU memory. Try lowering "
                    "--gpu-memory-utilization to free memory for weights, increasing "
                    "--tensor-parallel-size, or using --quantization. See "
                    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
                    f"tips. (original error: {error})",
                    "ERROR",
                )
                self.fail(LOAD_FRAMES, f"torch.OutOfMemoryError: {error}")
        write("\n", sys.stderr)
        loaded = time.monotonic() - started
        log.engine("default_loader.py:501", f"Loading weights took {loaded:.2f} seconds")
        log.engine(
            "gpu_model_runner.py:5149",
            f"Model loading took 14.99 GiB memory and {loaded + 0.4:.6f} seconds",
        )
        if not self.eager and self.compile_phase():
            return True
        log.engine("monitor.py:91", "Initial profiling/warmup run took 0.42 s")
        kv_gib = -1.37 if self.oom == "kv_cache" else 4.29
        log.engine("gpu_worker.py:759", f"Available KV cache memory: {kv_gib:.2f} GiB")
        if self.oom == "kv_cache":
            self.fail(
                [
                    (
                        _v("v1/engine/core.py"),
                        158,
                        "__init__",
                        "kv_cache_config = self._initialize_kv_caches(vllm_config)",
                    ),
                    (
                        _v("v1/engine/core.py"),
                        327,
                        "_initialize_kv_caches",
                        "kv_cache_configs = get_kv_cache_configs(",
                    ),
                    (
                        _v("v1/core/kv_cache_utils.py"),
                        1836,
                        "get_kv_cache_configs",
                        "_check_enough_kv_cache_memory(",
                    ),
                    (
                        _v("v1/core/kv_cache_utils.py"),
                        1010,
                        "_check_enough_kv_cache_memory",
                        "raise ValueError(",
                    ),
                ],
                "ValueError: No available memory for the cache blocks. Try increasing "
                "`gpu_memory_utilization` when initializing the engine (this flag also controls "
                "CPU memory reservation on the CPU backend, despite its name). See "
                "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
                "details.",
            )
        tokens = 80368
        log.engine(
            "kv_cache_utils.py:2327",
            f"{'CPU' if self.cpu else 'GPU'} KV cache size: {tokens:,} tokens, Maximum "
            f"concurrency for {self.max_len:,} tokens per request: {tokens / self.max_len:.2f}x",
        )
        if not self.eager and self.graph_phase():
            return True
        took = time.monotonic() - started
        if self.compile_time > 0:
            log.engine(
                "core.py:388",
                "init engine (profile, create kv cache, warmup model) took "
                f"{took:.2f} s (compilation: {self.compile_time:.2f} s)",
            )
        else:
            log.engine(
                "core.py:402",
                f"init engine (profile, create kv cache, warmup model) took {took:.2f} s",
            )
        return False

    def compile_phase(self) -> bool:
        log = self.log
        seconds = max(0.0, _env_float("FAKE_VLLM_COMPILE_SECONDS", 0.0))
        log.engine("monitor.py:40", "Starting torch.compile")
        digest = hashlib.sha256(self.args.model.encode()).hexdigest()[:10]
        log.engine(
            "backends.py:1104",
            f"Using cache directory: /root/.cache/vllm/torch_compile_cache/{digest}/rank_0_0/"
            "backbone for vLLM's torch.compile",
        )
        if self.wait(seconds * 0.3):
            return True
        log.engine("backends.py:1166", f"Dynamo bytecode transform time: {seconds * 0.3:.2f} s")
        if self.wait(seconds * 0.7):
            return True
        log.engine(
            "backends.py:398",
            f"Compiling a graph for compile range (1, 8192) takes {seconds * 0.7:.2f} s",
        )
        self.compile_time = seconds + 0.01
        log.engine("monitor.py:62", f"torch.compile took {self.compile_time:.2f} s in total")
        return False

    def graph_phase(self) -> bool:
        seconds = max(0.0, _env_float("FAKE_VLLM_GRAPH_SECONDS", 0.0))
        started = time.monotonic()
        for desc, total in (
            ("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE)", 11),
            ("Capturing CUDA graphs (decode, FULL)", 7),
        ):
            begun = time.monotonic()
            parts = [_graph_bar(desc, 0, total, 0.0)]
            for done in (total // 2, total):
                if self.wait(seconds / 4):
                    return True
                parts.append(_graph_bar(desc, done, total, time.monotonic() - begun))
            write("".join(parts) + "\n", sys.stderr)
        took = time.monotonic() - started
        self.log.engine(
            "gpu_model_runner.py:6581",
            f"Graph capturing finished in {took:.0f} secs, took 0.54 GiB",
        )
        return False


def _routes_for(state: State) -> list[tuple[str, str]]:
    routes = [
        ("/openapi.json", "HEAD, GET"),
        ("/docs", "HEAD, GET"),
        ("/docs/oauth2-redirect", "HEAD, GET"),
        ("/redoc", "HEAD, GET"),
        ("/load", "GET"),
        ("/version", "GET"),
        ("/health", "GET"),
        ("/metrics", "GET"),
        ("/tokenize", "POST"),
        ("/detokenize", "POST"),
        ("/v1/models", "GET"),
        ("/ping", "GET"),
        ("/ping", "POST"),
        ("/invocations", "POST"),
    ]
    if state.dev_mode:
        routes += [
            ("/reset_prefix_cache", "POST"),
            ("/collective_rpc", "POST"),
            ("/server_info", "GET"),
            ("/sleep", "POST"),
            ("/release_kv_cache_memory", "POST"),
            ("/wake_up", "POST"),
            ("/is_sleeping", "GET"),
        ]
    routes += [
        ("/v1/chat/completions", "POST"),
        ("/v1/responses", "POST"),
        ("/v1/completions", "POST"),
        ("/v1/embeddings", "POST"),
        ("/v1/messages", "POST"),
        ("/inference/v1/generate", "POST"),
    ]
    return routes


def shutdown_lines(log: Log) -> None:
    """What vLLM prints between SIGTERM and its exit."""
    log.api("launcher.py:254", "[shutdown] API server: shutdown triggered")
    log.api(
        "launcher.py:270", "[shutdown] API server: stopping engine client mode=abort timeout=0s"
    )
    log.api("core_client.py:770", "[shutdown] MPClient: start timeout=0s")
    log.api("core_client.py:772", "[shutdown] MPClient: stopping engine manager")
    log.api("utils.py:628", "[shutdown] Process manager: send sigterm to process EngineCore")
    log.engine("core.py:1454", "[shutdown] EngineCore: trigger received signal=SIGTERM")
    log.engine("core.py:1635", "[shutdown] EngineCore: start mode=abort timeout=0s")
    log.engine("core.py:1499", "[shutdown] EngineCore: exiting busy loop")
    log.api("core_client.py:774", "[shutdown] MPClient: engine manager stopped")
    log.api("core_client.py:775", "[shutdown] MPClient: cleaning up background resources")
    log.api("core_client.py:777", "[shutdown] MPClient: complete")
    log.api("launcher.py:279", "[shutdown] API server: engine client stopped")
    log.api("launcher.py:282", "[shutdown] API server: signalling HTTP server shutdown")
    log.api("launcher.py:304", "[shutdown] API server: shutting down FastAPI HTTP server")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log()
    stop = threading.Event()
    sigterm = threading.Event()

    def on_signal(signum, frame) -> None:
        sigterm.set()
        stop.set()

    # As PID 1 in a container, Python ignores SIGTERM unless a handler is installed.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    startup = Startup(args, log, stop)
    startup.api_side()
    # vLLM binds its port before building the engine and listens only once it is built.
    host = args.host or "0.0.0.0"
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    handler = type("BoundHandler", (Handler,), {})
    try:
        httpd = Server((host, args.port), handler, bind_and_activate=False)
        httpd.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        httpd.server_bind()
    except OSError as exc:
        api_failure(
            [
                (
                    _v("entrypoints/launchers/launcher.py"),
                    370,
                    "create_server_socket",
                    "sock.bind(addr)",
                ),
            ],
            f"OSError: [Errno {exc.errno}] {exc.strerror}",
        )
    if startup.engine_side():
        return 0  # SIGTERM while loading: vLLM just goes
    state = State(args, log, stop)
    handler.state = state
    port = httpd.server_address[1]
    log.api("entry.py:136", "Supported tasks: ['generate']")
    if state.dev_mode:
        log.api(
            "__init__.py:44",
            "SECURITY WARNING: Development endpoints are enabled! This should NOT be used in "
            "production!",
            "WARNING",
        )
    display = f"[{host}]" if ":" in host else host
    log.api("entry.py:140", f"Starting vLLM server on http://{display}:{port}")
    log.api("launcher.py:186", "Available routes are:")
    for path, methods in _routes_for(state):
        log.api("launcher.py:195", f"Route: {path}, Methods: {methods}")
    Log.uvicorn(f"Started server process [{log.api_pid}]")
    Log.uvicorn("Waiting for application startup.")
    httpd.server_activate()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    Log.uvicorn("Application startup complete.")
    stop.wait()
    if sigterm.is_set():
        shutdown_lines(log)
        Log.uvicorn("Shutting down")
        httpd.shutdown()
        httpd.server_close()
        Log.uvicorn("Waiting for application shutdown.")
        Log.uvicorn("Application shutdown complete.")
        return 0
    # The engine died (FAKE_VLLM_FAIL_FIRST_REQUEST) after its 500 answer went out: uvicorn
    # stops, then the engine client, and vLLM exits 0.
    Log.uvicorn("Shutting down")
    httpd.shutdown()
    httpd.server_close()
    Log.uvicorn("Waiting for application shutdown.")
    Log.uvicorn("Application shutdown complete.")
    Log.uvicorn(f"Finished server process [{log.api_pid}]")
    log.api("core_client.py:770", "[shutdown] MPClient: start timeout=0s")
    log.api("core_client.py:777", "[shutdown] MPClient: complete")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # don't wait for streaming threads still blocked on slow clients
