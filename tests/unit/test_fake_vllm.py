"""The fake vLLM server, run on the host as a subprocess (no Docker needed)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

SERVER = Path(__file__).resolve().parents[1] / "fake_vllm" / "server.py"
STARTING = re.compile(r"Starting vLLM server on http://[^\s]+:(\d+)$")
STARTED = "INFO:     Application startup complete."
PROGRESS = re.compile(r"Loading safetensors checkpoint shards:\s+(\d+)% Completed \| (\d+)/(\d+)")
TIMEOUT = 15.0


class FakeServer:
    """A running ``server.py`` whose output is read line by line as it comes."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, "FAKE_VLLM_LOAD_SECONDS": "0", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(SERVER), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environ,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port: int | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, pattern: str | re.Pattern[str], timeout: float = TIMEOUT) -> re.Match[str]:
        """Read lines until one matches ``pattern``; fail at EOF or after ``timeout``."""
        regex = re.compile(pattern)
        for line in self.lines:
            found = regex.search(line)
            if found:
                return found
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no line matching {regex.pattern!r} in:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # keep EOF visible to later waits
                pytest.fail(f"EOF before {regex.pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            found = regex.search(line)
            if found:
                return found

    def drain(self) -> list[str]:
        """All output, once the process has exited."""
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.lines

    def ready(self) -> FakeServer:
        self.port = int(self.wait_line(STARTING).group(1))
        self.wait_line(re.escape(STARTED))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def run(*flags: str, env: dict[str, str] | None = None) -> FakeServer:
        server = FakeServer(*flags, env=env)
        servers.append(server)
        return server

    yield run
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeServer]:
    """One ready server for the tests that only read: served as ``qwen`` and ``q-alias``, with
    every flag ryx-desktop and the other tests pass."""
    server = FakeServer(
        "Qwen/Qwen2.5-3B",
        "--served-model-name",
        "qwen",
        "q-alias",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.85",
        "--trust-remote-code",
        "--enforce-eager",
        "--dtype",
        "float16",
        "--max-num-seqs",
        "8",
        "--tensor-parallel-size",
        "1",
        "--quantization=awq",
        "--chat-template",
        "/t/my template.jinja",
        "--download-dir",
        "/models/cache",
        "--enable-log-requests",
        "--max_num_batched_tokens",
        "2048",
    ).ready()
    yield server
    server.close()


@pytest.fixture
def http(shared: FakeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=TIMEOUT) as client:
        yield client


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def sse_events(lines: list[str]) -> list[Any]:
    events = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the series ``vllm:name`` whose labels include ``labels``."""
    for found in re.finditer(rf"^vllm:{name}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        series = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
        if all(series.get(k) == v for k, v in labels.items()):
            return float(found.group(2))
    raise AssertionError(f"{name} {labels} missing from:\n{text}")


def in_order(text: str, markers: list[str]) -> None:
    positions = [text.index(marker) for marker in markers]
    assert positions == sorted(positions), list(zip(markers, positions, strict=True))


# --------------------------------------------------------------------------- start-up


def test_startup_prints_v1_lines_in_order(start: Callable[..., FakeServer]) -> None:
    server = start(
        "m",
        "--port",
        "0",
        env={"FAKE_VLLM_LOAD_SECONDS": "0.2", "FAKE_VLLM_SHARDS": "4"},
    ).ready()

    progress = [PROGRESS.search(line) for line in server.lines]
    steps = [(int(m.group(1)), int(m.group(2)), int(m.group(3))) for m in progress if m]
    assert steps == [(0, 0, 4), (25, 1, 4), (50, 2, 4), (75, 3, 4), (100, 4, 4)]
    text = "\n".join(server.lines)
    pid = server.proc.pid
    stamp = r"\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(
        rf"^\(APIServer pid={pid}\) INFO {stamp} \[api_utils\.py:286\] non-default args: "
        r"\{'model_tag': 'm', 'port': 0, 'model': 'm'\}$",
        text,
        re.M,
    )
    assert re.search(
        rf"^\(APIServer pid={pid}\) INFO {stamp} \[api_utils\.py:347\] .*version 0\.32\.0$",
        text,
        re.M,
    )
    assert re.search(
        rf"^\(EngineCore pid=\d+\) INFO {stamp} \[core\.py:133\] Initializing a V1 LLM engine "
        r"\(v0\.32\.0\) with config: model='m', ",
        text,
        re.M,
    )
    assert "With `vllm serve`, you should provide the model" not in text
    assert "Uvicorn running on" not in text
    in_order(
        text,
        [
            "Starting to load model m...",
            "Loading safetensors checkpoint shards: 100% Completed | 4/4",
            "[default_loader.py:501] Loading weights took 0.",
            "Model loading took ",
            "Starting torch.compile",
            "torch.compile took ",
            "Available KV cache memory: ",
            "GPU KV cache size: 80,368 tokens, Maximum concurrency for 32,768 tokens per request",
            "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 11/11",
            "Capturing CUDA graphs (decode, FULL): 100%|██████████| 7/7",
            "Graph capturing finished in ",
            "init engine (profile, create kv cache, warmup model) took ",
            "Supported tasks: ['generate']",
            "[entry.py:140] Starting vLLM server on http://0.0.0.0:",
            "Available routes are:",
            "Route: /health, Methods: GET",
            "Route: /v1/models, Methods: GET",
            "Route: /v1/chat/completions, Methods: POST",
            "INFO:     Started server process",
            "INFO:     Waiting for application startup.",
            "INFO:     Application startup complete.",
        ],
    )
    assert "Route: /sleep" not in text
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200


def test_progress_lines_start_with_a_carriage_return_like_tqdm(
    start: Callable[..., FakeServer],
) -> None:
    proc = subprocess.run(
        [sys.executable, str(SERVER), "m", "--port", "0"],
        env={**os.environ, "FAKE_VLLM_LOAD_SECONDS": "0", "FAKE_VLLM_CRASH": "1"},
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert b"\rLoading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]\n" in (
        proc.stderr
    )


def test_enforce_eager_skips_compile_and_graphs(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enforce-eager").ready()
    text = "\n".join(server.lines)
    assert "Enforce eager set, disabling torch.compile, CUDAGraphs" in text
    assert "torch.compile" not in text.replace("disabling torch.compile", "")
    assert "Capturing CUDA graphs" not in text
    assert re.search(
        r"init engine \(profile, create kv cache, warmup model\) took [\d.]+ s$", text, re.M
    )


def test_model_flag_works_with_vllms_deprecation_warning(start: Callable[..., FakeServer]) -> None:
    server = start("--port", "0", "--model", "some/model", "--served-model-name", "s").ready()
    assert server.lines[0] == (
        "With `vllm serve`, you should provide the model as a positional argument or in a "
        "config file instead of via the `--model` option. The `--model` option will be removed "
        "in a future version."
    )
    assert any("'model_tag': 'some/model'" in line for line in server.lines)
    models = httpx.get(f"{server.url}/v1/models", timeout=TIMEOUT).json()
    assert [(m["id"], m["root"]) for m in models["data"]] == [("s", "some/model")]


def test_served_name_without_a_positional_model_fails(start: Callable[..., FakeServer]) -> None:
    server = start("--served-model-name", "s", "--port", "0")
    assert server.proc.wait(timeout=TIMEOUT) == 1
    assert server.drain()[-1] == (
        "ValueError: `model` should be provided as the first positional argument when using "
        "`vllm serve`. i.e. `vllm serve <model> --<arg> <value>`."
    )


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            ["--some-unknown-flag", "x"],
            "vllm: error: unrecognized arguments: --some-unknown-flag x",
        ),
        (["--disable-log-requests"], "vllm: error: unrecognized arguments: --disable-log-requests"),
        (["--max-model"], "vllm: error: unrecognized arguments: --max-model"),
    ],
)
def test_unknown_flags_exit_2_with_argparses_usage(
    start: Callable[..., FakeServer], flags: list[str], error: str
) -> None:
    server = start("m", "--port", "0", *flags)
    assert server.proc.wait(timeout=TIMEOUT) == 2
    lines = server.drain()
    assert lines[0] == "usage: vllm [-h] [-v]"
    assert lines[-1] == error


def test_a_bad_value_exits_2(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "eighty")
    assert server.proc.wait(timeout=TIMEOUT) == 2
    assert server.drain() == [
        "usage: vllm serve [model_tag] [options]",
        "vllm serve: error: argument --port: invalid int value: 'eighty'",
    ]


def test_port_is_not_listening_while_loading_and_sigterm_while_loading_exits_0(
    start: Callable[..., FakeServer],
) -> None:
    port = free_port()
    server = start("m", "--port", str(port), env={"FAKE_VLLM_LOAD_SECONDS": "60"})
    server.wait_line(PROGRESS)  # loading has begun

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT)

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=TIMEOUT) == 0


def test_a_port_in_use_fails_before_loading(start: Callable[..., FakeServer]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start("m", "--host", "127.0.0.1", "--port", str(port))
        assert server.proc.wait(timeout=TIMEOUT) == 1
    lines = server.drain()
    assert lines[-1] == "OSError: [Errno 98] Address already in use"
    assert not any(PROGRESS.search(line) for line in lines)


def test_missing_absolute_model_path_exits_1(start: Callable[..., FakeServer]) -> None:
    server = start("/models/does/not/exist", "--port", "0")
    assert server.proc.wait(timeout=TIMEOUT) == 1
    lines = server.drain()
    assert "Traceback (most recent call last):" in lines
    assert lines[-1] == (
        "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
        "'/models/does/not/exist'. Use `repo_type` argument if needed."
    )


ENGINE_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {'EngineCore': 1}"
)


@pytest.mark.parametrize(
    ("env", "root_cause"),
    [
        (
            {"FAKE_VLLM_CRASH": "1"},
            "RuntimeError: CUDA error: an illegal memory access was encountered",
        ),
        (
            {"FAKE_VLLM_GPU_OOM": "weights"},
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.02 GiB.",
        ),
        (
            {"FAKE_VLLM_GPU_OOM": "kv_cache"},
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine",
        ),
        (
            {"FAKE_VLLM_GPU_OOM": "free_memory"},
            "ValueError: Free memory on device cuda:0 (10.12/23.52 GiB) on startup is less than "
            "desired GPU memory utilization (0.9, 21.17 GiB). Decrease GPU memory utilization "
            "or reduce GPU memory used by other processes.",
        ),
    ],
)
def test_engine_failures_have_the_v1_shape(
    start: Callable[..., FakeServer], env: dict[str, str], root_cause: str
) -> None:
    server = start("m", "--port", "0", env=env)
    assert server.proc.wait(timeout=TIMEOUT) == 1
    lines = server.drain()
    text = "\n".join(lines)
    assert lines[-1] == ENGINE_FAILED
    assert re.search(
        r"^\(EngineCore pid=\d+\) ERROR .* \[core\.py:1510\] EngineCore failed to start\.$",
        text,
        re.M,
    )
    assert re.search(
        rf"^\(EngineCore pid=\d+\) ERROR .* \[core\.py:1510\] {re.escape(root_cause)}", text, re.M
    )
    assert "Process EngineCore:" in lines
    root = max(i for i, line in enumerate(lines) if line.startswith(root_cause))
    assert root < len(lines) - 10, "the root cause is far above the last line"
    assert "Application startup complete" not in text


def test_weights_oom_logs_vllms_hint(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", env={"FAKE_VLLM_GPU_OOM": "weights"})
    assert server.proc.wait(timeout=TIMEOUT) == 1
    assert any(
        "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization"
        in line
        for line in server.drain()
    )


def test_cpu_platform_refuses_sleep_mode(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enable-sleep-mode", env={"FAKE_VLLM_PLATFORM": "cpu"})
    assert server.proc.wait(timeout=TIMEOUT) == 1
    text = "\n".join(server.drain())
    assert "Value error, Sleep mode is not supported on current platform." in text
    assert (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig" in text
    )
    assert not PROGRESS.search(text)


def test_cpu_platform_serves_without_sleep_mode(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", env={"FAKE_VLLM_PLATFORM": "cpu"}).ready()
    text = "\n".join(server.lines)
    assert "CPU KV cache size: " in text
    assert "Capturing CUDA graphs" not in text


def test_exit_code_knob_exits_silently_with_that_code(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", env={"FAKE_VLLM_EXIT_CODE": "137"})
    assert server.proc.wait(timeout=TIMEOUT) == 137
    lines = server.drain()
    assert PROGRESS.search(lines[-1]), lines  # nothing printed after the first shard
    assert "1/4" in lines[-1]


def test_sigterm_shuts_down_promptly_with_vllms_lines(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0").ready()
    begun = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=TIMEOUT) == 0
    assert time.monotonic() - begun < 2.0
    in_order(
        "\n".join(server.drain()),
        [
            "[shutdown] API server: shutdown triggered",
            "[shutdown] EngineCore: trigger received signal=SIGTERM",
            "[shutdown] MPClient: complete",
            "INFO:     Shutting down",
            "INFO:     Application shutdown complete.",
        ],
    )


def test_sigint_shuts_down_gracefully(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0").ready()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=TIMEOUT) == 0


# --------------------------------------------------------------------------- the API


def test_health_and_models(http: httpx.Client, shared: FakeServer) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.content == b""

    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["qwen", "q-alias"]
    first = models["data"][0]
    assert first["object"] == "model"
    assert first["owned_by"] == "vllm"
    assert first["root"] == "Qwen/Qwen2.5-3B"
    assert first["parent"] is None
    assert first["max_model_len"] == 4096
    assert isinstance(first["created"], int)

    line = shared.wait_line(r'"GET /v1/models HTTP/1\.1" 200 OK')
    assert re.match(
        r'^INFO:     127\.0\.0\.1:\d+ - "GET /v1/models HTTP/1\.1" 200 OK$', line.string
    )


def test_chat_completion(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/chat/completions",
        json={
            "model": "q-alias",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
            ],
        },
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "q-alias"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "fake reply from q-alias to: hello there"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_max_tokens_truncates(http: httpx.Client) -> None:
    body = http.post(
        "/v1/chat/completions",
        json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ).json()
    assert body["choices"][0]["message"]["content"] == "fake reply"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_max_tokens_beyond_the_context_is_400(http: httpx.Client) -> None:
    reply = http.post("/v1/completions", json={"model": "qwen", "prompt": "x", "max_tokens": 5000})
    assert reply.status_code == 400
    assert reply.json() == {
        "error": {
            "message": "max_tokens=5000 cannot be greater than max_model_len=4096. Please request "
            "fewer output tokens. (parameter=max_tokens, value=5000)",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }
    }


def test_chat_stream(http: httpx.Client) -> None:
    request = {
        "model": "qwen",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=request) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["transfer-encoding"] == "chunked"
        events = sse_events(list(reply.iter_lines()))

    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 7
    content = chunks[1:-1]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == (
        "fake reply from qwen to: parts work"
    )
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 6 + ["stop"]


def test_completions_plain_and_stream(http: httpx.Client) -> None:
    body = http.post("/v1/completions", json={"model": "qwen", "prompt": "once upon"}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "fake reply from qwen to: once upon"
    assert body["usage"]["completion_tokens"] == 7

    request = {"model": "qwen", "prompt": "x", "stream": True, "max_tokens": 3}
    with http.stream("POST", "/v1/completions", json=request) as reply:
        events = sse_events(list(reply.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "fake reply from"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_keep_alive_reuses_one_connection(shared: FakeServer) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=TIMEOUT) as sock:
        stream = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert stream.readline().startswith(b"HTTP/1.1 200")
            while stream.readline() not in (b"\r\n", b""):
                pass
        stream.close()


def test_embeddings(http: httpx.Client) -> None:
    body = http.post("/v1/embeddings", json={"model": "qwen", "input": ["a", "b", "a"]}).json()
    assert body["object"] == "list"
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]

    single = http.post("/v1/embeddings", json={"model": "qwen", "input": "a"}).json()
    assert [item["embedding"] for item in single["data"]] == [vectors[0]]


def test_unknown_model_is_404_nested_and_logged(http: httpx.Client, shared: FakeServer) -> None:
    message = "The model `nope` does not exist. Valid aliases: qwen, q-alias."
    for path, extra in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
        ("/v1/embeddings", {"input": "x"}),
    ):
        reply = http.post(path, json={"model": "nope", **extra})
        assert reply.status_code == 404
        assert reply.json() == {
            "error": {"message": message, "type": "NotFoundError", "param": "model", "code": 404}
        }
    line = shared.wait_line(r"\[serving\.py:274\] Error with model error=ErrorInfo")
    assert line.string.endswith(
        f"error=ErrorInfo(message={message!r}, type='NotFoundError', param='model', code=404)"
    )


def test_malformed_json_is_400_nested(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "Bad Request"
    assert error["code"] == 400
    assert error["message"].startswith("1 validation error:\n  {'type': 'json_invalid'")


def test_a_missing_field_is_400_nested(http: httpx.Client) -> None:
    reply = http.post("/v1/chat/completions", json={"model": "qwen"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "body.messages"


def test_chunked_request_body_is_read(http: httpx.Client) -> None:
    payload = json.dumps({"model": "qwen", "prompt": "chunked"}).encode()

    def parts() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    reply = http.post("/v1/completions", content=parts())
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["text"].endswith("to: chunked")


def test_metrics_have_todays_names_and_labels(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"model": "qwen", "prompt": "count me", "max_tokens": 3})
    text = http.get("/metrics").text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert f"# HELP vllm:{name} " in text
        assert f"# TYPE vllm:{name} gauge" in text
        assert f'vllm:{name}{{engine="0",model_name="qwen"}} ' in text
    for gone in ("gpu_cache_usage_perc", "num_requests_swapped"):
        assert gone not in text
    assert metric(text, "engine_sleep_state", sleep_state="awake") == 1
    assert metric(text, "engine_sleep_state", sleep_state="weights_offloaded") == 0
    assert metric(text, "engine_sleep_state", sleep_state="discard_all") == 0
    assert "# TYPE vllm:request_success_total counter" in text
    assert metric(text, "request_success_total", finished_reason="length") >= 1
    assert metric(text, "prompt_tokens_total") >= 2
    assert metric(text, "generation_tokens_total") >= 3
    for name in (
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "e2e_request_latency_seconds",
    ):
        assert f"# TYPE vllm:{name} histogram" in text
        count = metric(text, f"{name}_count")
        assert count >= 1
        assert metric(text, f"{name}_bucket", le="+Inf") == count


def test_recorded_requests(http: httpx.Client) -> None:
    http.post(
        "/v1/completions",
        json={"model": "qwen", "prompt": "remember me"},
        headers={"X-Trace": "abc"},
    )
    recorded = http.get("/fake/requests").json()
    mine = [r for r in recorded if (r["json"] or {}).get("prompt") == "remember me"]
    assert len(mine) == 1
    assert mine[0]["method"] == "POST"
    assert mine[0]["path"] == "/v1/completions"
    assert mine[0]["headers"]["x-trace"] == "abc"
    assert not any(r["path"].startswith("/fake/") for r in recorded)


def test_sleep_routes_are_404_without_dev_mode(http: httpx.Client) -> None:
    for method, path in (("POST", "/sleep?level=1"), ("POST", "/wake_up"), ("GET", "/is_sleeping")):
        reply = http.request(method, path)
        assert reply.status_code == 404
        assert reply.json() == {"detail": "Not Found"}


# --------------------------------------------------------------------------- access log


def test_access_log_skips_the_listed_endpoints(start: Callable[..., FakeServer]) -> None:
    server = start(
        "m", "--port", "0", "--disable-access-log-for-endpoints", "/health,/metrics,/v1/models"
    ).ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        for path in ("/health", "/metrics", "/v1/models", "/version"):
            assert http.get(path).status_code == 200
    server.wait_line(r'"GET /version HTTP/1\.1" 200 OK')
    assert not any(re.search(r'"GET /(health|metrics|v1/models)', line) for line in server.lines)


def test_no_access_log_at_all(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--disable-uvicorn-access-log").ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/version").status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert not any("HTTP/1.1" in line for line in server.drain())


# --------------------------------------------------------------------------- state changes


def test_health_status_can_be_set(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0").ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.post("/fake/health", json={"status": 500}).status_code == 200
        assert http.get("/health").status_code == 500
        assert http.post("/fake/health", json={"status": 200}).status_code == 200
        assert http.get("/health").status_code == 200


DEV_MODE = {"VLLM_SERVER_DEV_MODE": "1"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def test_sleep_level_1_makes_requests_wait_until_wake(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enable-sleep-mode", env=DEV_MODE).ready()
    assert any("SECURITY WARNING: Development endpoints are enabled!" in x for x in server.lines)
    assert any(line.endswith("Route: /sleep, Methods: POST") for line in server.lines)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}
        assert http.post("/sleep?level=1").json() == {"status": "sleeping", "level": 1}
        assert http.get("/is_sleeping").json() == {"is_sleeping": True}
        metrics = http.get("/metrics").text
        assert metric(metrics, "engine_sleep_state", sleep_state="awake") == 0
        assert metric(metrics, "engine_sleep_state", sleep_state="weights_offloaded") == 1
        assert http.get("/health").status_code == 200

        answers: queue.Queue[httpx.Response] = queue.Queue()
        waiter = threading.Thread(
            target=lambda: answers.put(
                httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=TIMEOUT)
            )
        )
        waiter.start()
        wait_until(lambda: metric(http.get("/metrics").text, "num_requests_waiting") == 1)
        assert answers.empty()

        woken = http.post("/wake_up")
        assert woken.json() == {"status": "awake", "tags": None}
        waiter.join(timeout=TIMEOUT)
        assert answers.get_nowait().json()["choices"][0]["message"]["content"] == (
            "fake reply from m to: x"
        )
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}


def test_wake_up_by_tags(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enable-sleep-mode", env=DEV_MODE).ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        http.post("/sleep", params={"level": "1"})
        assert http.post("/wake_up?tags=weights").json() == {
            "status": "sleeping",
            "tags": ["weights"],
        }
        assert http.get("/is_sleeping").json() == {"is_sleeping": True}
        assert http.post("/wake_up?tags=kv_cache").json() == {
            "status": "awake",
            "tags": ["kv_cache"],
        }
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}


def test_sleep_level_2_loses_the_weights_until_reloaded(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enable-sleep-mode", env=DEV_MODE).ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.post("/sleep?level=2").json() == {"status": "sleeping", "level": 2}
        metrics = http.get("/metrics").text
        assert metric(metrics, "engine_sleep_state", sleep_state="discard_all") == 1
        http.post("/wake_up")

        def reply() -> str:
            body = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}).json()
            return str(body["choices"][0]["message"]["content"])

        assert reply() == "!!!!"
        rpc = http.post("/collective_rpc", json={"method": "reload_weights"})
        assert rpc.json() == {"results": [None]}
        assert reply() == "fake reply from m"


def test_sleep_level_is_validated(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--enable-sleep-mode", env=DEV_MODE).ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        reply = http.post("/sleep?level=3")
        assert reply.status_code == 400
        assert reply.json()["error"]["param"] == "query.level"
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}


def test_api_key(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", "--api-key", "sekrit").ready()
    assert any("'api_key': '***'" in line for line in server.lines)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        refused = http.get("/v1/models")
        assert refused.status_code == 401
        assert refused.json() == {"error": "Unauthorized"}
        assert http.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        assert http.get("/health").status_code == 200
        assert http.get("/metrics").status_code == 200
        ok = http.get("/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200


def test_api_key_from_the_environment(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", env={"VLLM_API_KEY": "envkey"}).ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/models", headers={"Authorization": "Bearer envkey"}).status_code == 200


def test_first_request_kills_the_engine_when_asked(start: Callable[..., FakeServer]) -> None:
    server = start("m", "--port", "0", env={"FAKE_VLLM_FAIL_FIRST_REQUEST": "1"}).ready()
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200
    reply = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x"}, timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {
            "message": "EngineCore encountered an issue. See stack trace (above) for the root "
            "cause.",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert server.proc.wait(timeout=TIMEOUT) == 0
    in_order(
        "\n".join(server.drain()),
        [
            "RuntimeError: Unsupported CPU attention configuration: head_dim=16",
            "EngineCore encountered a fatal error.",
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
            '"POST /v1/completions HTTP/1.1" 500 Internal Server Error',
            "INFO:     Shutting down",
        ],
    )


def test_metrics_follow_in_flight_requests_and_disconnects_are_counted(
    start: Callable[..., FakeServer],
) -> None:
    server = start("m", "--port", "0", env={"FAKE_VLLM_TOKEN_DELAY": "0.05"}).ready()
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "a long answer please"}],
        "stream": True,
        "max_tokens": 500,
    }
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:

        def running() -> float:
            return metric(http.get("/metrics").text, "num_requests_running")

        assert running() == 0
        with http.stream("POST", "/v1/chat/completions", json=request) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk
            assert running() == 1
            assert metric(http.get("/metrics").text, "kv_cache_usage_perc") > 0
        # Leaving the block closed the connection mid-stream.
        wait_until(lambda: http.get("/fake/disconnects").json() == {"count": 1})
        wait_until(lambda: running() == 0)
        text = http.get("/metrics").text
        assert metric(text, "request_success_total", finished_reason="abort") == 1
        assert metric(text, "request_success_total", finished_reason="stop") == 0
