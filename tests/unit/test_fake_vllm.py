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
UVICORN = re.compile(r"Uvicorn running on http://[^\s]+:(\d+) \(Press CTRL\+C to quit\)")
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
        self.port = int(self.wait_line(UVICORN).group(1))
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
    """One ready server for the tests that only read: served as ``qwen`` and ``q-alias``."""
    server = FakeServer(
        "--model",
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
        "--some-unknown-flag",
        "x",
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


def metric(text: str, name: str) -> float:
    found = re.search(rf"^vllm:{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from:\n{text}"
    return float(found.group(1))


# --------------------------------------------------------------------------- startup


def test_startup_prints_vllm_lines_and_rising_progress(start: Callable[..., FakeServer]) -> None:
    server = start(
        "--model",
        "m",
        "--port",
        "0",
        env={"FAKE_VLLM_LOAD_SECONDS": "0.2", "FAKE_VLLM_SHARDS": "4"},
    ).ready()

    progress = [PROGRESS.search(line) for line in server.lines]
    steps = [(int(m.group(1)), int(m.group(2)), int(m.group(3))) for m in progress if m]
    assert steps == [(0, 0, 4), (25, 1, 4), (50, 2, 4), (75, 3, 4), (100, 4, 4)]
    text = "\n".join(server.lines)
    assert re.search(
        r"^INFO \d\d-\d\d \d\d:\d\d:\d\d api_server\.py:\d+\] vLLM API server", text, re.M
    )
    assert "args: Namespace(model='m', served_model_name=['m']" in text
    assert "Loading model weights took" in text
    order = [
        "Loading model weights took",
        "INFO:     Started server process",
        "INFO:     Waiting for application startup.",
        "INFO:     Application startup complete.",
        "INFO:     Uvicorn running on http://0.0.0.0:",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200


def test_port_is_bound_only_after_loading_and_sigterm_while_loading_exits_0(
    start: Callable[..., FakeServer],
) -> None:
    port = free_port()
    server = start("--model", "m", "--port", str(port), env={"FAKE_VLLM_LOAD_SECONDS": "60"})
    server.wait_line(PROGRESS)  # loading has begun

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT)

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=TIMEOUT) == 0


def test_missing_absolute_model_path_exits_1(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "/models/does/not/exist", "--port", "0")
    assert server.proc.wait(timeout=TIMEOUT) == 1
    lines = server.drain()
    assert "Traceback (most recent call last):" in lines
    assert (
        "OSError: Incorrect path_or_model_id: '/models/does/not/exist'. Please provide either "
        "the path to a local folder or the repo_id of a model on the Hub." in lines
    )


def test_crash_knob_exits_1_with_a_traceback(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0", env={"FAKE_VLLM_CRASH": "1"})
    assert server.proc.wait(timeout=TIMEOUT) == 1
    text = "\n".join(server.drain())
    assert "Traceback (most recent call last):" in text
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in text
    assert "Uvicorn running" not in text


def test_exit_code_knob_exits_silently_with_that_code(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0", env={"FAKE_VLLM_EXIT_CODE": "137"})
    assert server.proc.wait(timeout=TIMEOUT) == 137
    lines = server.drain()
    assert PROGRESS.search(lines[-1]), lines  # nothing printed after the first shard
    assert "1/4" in lines[-1]


def test_sigterm_shuts_down_gracefully(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0").ready()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=TIMEOUT) == 0
    assert "INFO:     Shutting down" in server.drain()


def test_sigint_shuts_down_gracefully(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0").ready()
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


def test_unknown_model_is_404_in_vllm_shape(http: httpx.Client) -> None:
    for path, extra in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
        ("/v1/embeddings", {"input": "x"}),
    ):
        reply = http.post(path, json={"model": "nope", **extra})
        assert reply.status_code == 404
        assert reply.json() == {
            "object": "error",
            "message": "The model `nope` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }


def test_malformed_json_is_400(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["object"] == "error"
    assert reply.json()["code"] == 400


def test_chunked_request_body_is_read(http: httpx.Client) -> None:
    payload = json.dumps({"model": "qwen", "prompt": "chunked"}).encode()

    def parts() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    reply = http.post("/v1/completions", content=parts())
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["text"].endswith("to: chunked")


def test_metrics_names(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"model": "qwen", "prompt": "count me"})
    text = http.get("/metrics").text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert f"# HELP vllm:{name} " in text
        assert f"# TYPE vllm:{name} gauge" in text
        assert f'vllm:{name}{{model_name="qwen"}} ' in text
    assert "# TYPE vllm:request_success_total counter" in text
    assert metric(text, "request_success_total") >= 1


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


# --------------------------------------------------------------------------- state changes


def test_health_status_can_be_set(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0").ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.post("/fake/health", json={"status": 500}).status_code == 200
        assert http.get("/health").status_code == 500
        assert http.post("/fake/health", json={"status": 200}).status_code == 200
        assert http.get("/health").status_code == 200


def test_sleep_and_wake(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0", "--enable-sleep-mode").ready()
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}
        assert http.post("/sleep?level=1").status_code == 200
        assert http.get("/is_sleeping").json() == {"is_sleeping": True}
        asleep = http.post("/v1/chat/completions", json=chat)
        assert asleep.status_code == 503
        assert asleep.json()["object"] == "error"
        assert http.get("/health").status_code == 200
        assert http.post("/wake_up").status_code == 200
        assert http.get("/is_sleeping").json() == {"is_sleeping": False}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200


def test_sleep_needs_the_flag(http: httpx.Client) -> None:
    assert http.post("/sleep?level=1").status_code == 400
    assert http.get("/is_sleeping").json() == {"is_sleeping": False}


def test_api_key(start: Callable[..., FakeServer]) -> None:
    server = start("--model", "m", "--port", "0", "--api-key", "sekrit").ready()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/health").status_code == 200
        ok = http.get("/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200


def test_metrics_follow_in_flight_requests_and_disconnects_are_counted(
    start: Callable[..., FakeServer],
) -> None:
    server = start("--model", "m", "--port", "0", env={"FAKE_VLLM_TOKEN_DELAY": "0.05"}).ready()
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
        assert metric(http.get("/metrics").text, "request_success_total") == 0
