"""The benchmark's fast fake upstream (``bench/upstream.py``), run as a subprocess, and the load
generator (``bench/load.py``) against it."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import load
from bench.upstream import dechunk

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The base URL of a running ``python -m bench.upstream --port 0``."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "bench.upstream", "--port", "0", "--served-name", "bm"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")  # EOF

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=TIMEOUT)
        found = LISTENING.search(line)
        assert found, f"unexpected first line {line!r}"
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def chat(max_tokens: int, stream: bool, model: str = "bm") -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


@pytest.mark.parametrize("max_tokens", [1, 2, 7])
def test_stream_has_max_tokens_chunks_then_done(upstream: str, max_tokens: int) -> None:
    with (
        httpx.Client(base_url=upstream, timeout=TIMEOUT) as client,
        client.stream("POST", "/v1/chat/completions", json=chat(max_tokens, True)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert len(chunks) == max_tokens
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "bm" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (max_tokens - 1) + [
        "length"
    ]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == " tok" * max_tokens


def test_paced_stream_then_next_request_on_the_same_connection(upstream: str) -> None:
    with httpx.Client(base_url=upstream, timeout=TIMEOUT) as client:
        paced = {**chat(3, True), "bench_interval_ms": 1}
        first = client.post("/v1/chat/completions", json=paced)
        second = client.post("/v1/chat/completions", json=chat(2, False))
    events = first.text.split("\n\n")
    assert len(events) == 3 + 2
    assert events[-2:] == ["data: [DONE]", ""]
    assert second.json()["usage"]["completion_tokens"] == 2


def test_completion_json_shape(upstream: str) -> None:
    response = httpx.post(f"{upstream}/v1/chat/completions", json=chat(5, False), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["object"] == "chat.completion"
    assert document["model"] == "bm"
    (choice,) = document["choices"]
    assert choice["message"] == {"role": "assistant", "content": " tok" * 5}
    assert choice["finish_reason"] == "length"
    assert document["usage"]["completion_tokens"] == 5


def test_keep_alive_two_requests_on_one_connection(upstream: str) -> None:
    with httpx.Client(base_url=upstream, timeout=TIMEOUT) as client:
        peers = []
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json=chat(3, stream))
            assert response.status_code == 200
            peers.append(response.extensions["network_stream"].get_extra_info("client_addr"))
        assert peers[0] == peers[1]  # the same client port: the connection was kept


def test_pipelined_requests_answered_in_order(upstream: str) -> None:
    port = int(upstream.rsplit(":", 1)[1])
    body = json.dumps(chat(2, False)).encode()
    request_head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    request = request_head.encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + request)
        buf = b""
        responses: list[tuple[bytes, bytes]] = []
        while len(responses) < 3:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end]
                found = re.search(rb"Content-Length: (\d+)", head)
                assert found is not None
                length = int(found.group(1))
                if len(buf) >= head_end + 4 + length:
                    responses.append((head, buf[head_end + 4 : head_end + 4 + length]))
                    buf = buf[head_end + 4 + length :]
                    continue
            data = sock.recv(65536)
            assert data, "connection closed early"
            buf += data
    assert [head.split(b"\r\n")[0] for head, _ in responses] == [b"HTTP/1.1 200 OK"] * 3
    assert json.loads(responses[0][1])["choices"][0]["message"]["content"] == " tok tok"
    assert responses[1][1] == b""
    assert responses[2][1] == responses[0][1]


def test_request_pipelined_behind_a_paced_stream_waits_for_it(upstream: str) -> None:
    port = int(upstream.rsplit(":", 1)[1])
    body = json.dumps({**chat(3, True), "bench_interval_ms": 1}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    health = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + body + health)
        received = b""
        while data := sock.recv(65536):  # the server closes after the health answer
            received += data
    stream, _, rest = received.partition(b"0\r\n\r\n")
    assert stream.count(b"data: {") == 3
    assert stream.endswith(b"data: [DONE]\n\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"Content-Length: 0\r\n\r\n")


def test_chunked_request_body(upstream: str) -> None:
    pieces = [b'{"model": "bm", ', b'"max_tokens": 4, "stream": false', b"}"]
    response = httpx.post(
        f"{upstream}/v1/chat/completions",
        content=iter(pieces),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 4


def test_health_models_and_errors(upstream: str) -> None:
    with httpx.Client(base_url=upstream, timeout=TIMEOUT) as client:
        assert client.get("/health").status_code == 200
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["bm"]
        wrong = client.post("/v1/chat/completions", json=chat(1, False, model="other"))
        assert wrong.status_code == 404
        assert wrong.json()["error"]["type"] == "NotFoundError"
        assert "The model `other` does not exist." in wrong.json()["error"]["message"]
        assert client.post("/v1/chat/completions", content=b"{nope").status_code == 400
        assert client.get("/nowhere").status_code == 404


def test_dechunk() -> None:
    data = b"xx3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nTrailer: 1\r\n\r\nrest"
    assert dechunk(data, 2) == (b"abcd", len(data) - 4)
    assert dechunk(data[:-8], 2) is None
    with pytest.raises(ValueError, match="CRLF"):
        dechunk(b"1\r\nab\r\n", 0)


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
@pytest.mark.parametrize(
    ("stream", "interval_ms"),
    [(False, 0.0), (True, 0.0), (True, 0.5)],
    ids=["json", "burst", "paced"],
)
def test_load_generator_counts_requests_and_chunks(
    upstream: str, client: load.ClientKind, stream: bool, interval_ms: float
) -> None:
    workload = load.Workload(
        "t",
        stream,
        max_tokens=5,
        concurrency=3,
        duration=None,
        requests=12,
        warmup=0,
        model="bm",
        interval_ms=interval_ms,
    )
    result = asyncio.run(load.run(upstream, workload, client=client, sample=lambda: 1))
    assert (result.ok, result.errors, result.error_samples) == (12, 0, [])
    assert len(result.latencies) == 12
    assert result.chunks == (12 * 5 if stream else 0)
    assert len(result.ttfts) == (12 if stream else 0)
    assert all(0 < t <= lat for t, lat in zip(result.ttfts, result.latencies, strict=False))
    assert result.samples == (1, 1)


def test_load_generator_counts_wrong_answers_as_errors(upstream: str) -> None:
    workload = load.Workload("t", False, duration=None, requests=3, warmup=0, model="nope")
    result = asyncio.run(load.run(upstream, workload))
    assert (result.ok, result.errors) == (0, 3)
    assert result.error_samples[0].startswith("status 404")
