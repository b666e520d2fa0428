"""``ryx-desktop serve`` as a user runs it: a subprocess, a config file, the real engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from ryx_desktop.config import Config, dump_config

SMALL = "/models/small/general/qwen2.5-3b"
CODER = "/models/medium/coding/qwen2.5-coder-7b-gptq"


class Serve:
    """A running ``python -m ryx_desktop serve --config PATH``, its stderr in a file."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.log_file = log_file
        env = {**os.environ}
        env.pop("RYX_DEBUG", None)
        self.argv = [sys.executable, "-m", "ryx_desktop", "serve", "--config", str(config_file)]
        self.env = env
        with log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Config], Serve]]:
    """``serve(config)`` writes ``config`` to a file and starts ``serve`` on it."""
    started: list[Serve] = []

    def start(config: Config) -> Serve:
        n = len(started)
        path = tmp_path / f"config-{n}.yaml"
        path.write_text(dump_config(config), encoding="utf-8")
        server = Serve(path, tmp_path / f"serve-{n}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_healthy(server: Serve, base: str, wait_until: Callable[..., Any]) -> dict[str, Any]:
    """Poll ``GET /health`` until it answers 200; fail early if the process exits."""

    def healthy() -> dict[str, Any] | None:
        if server.process.poll() is not None:
            pytest.fail(f"serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            answer = httpx.get(f"{base}/health", timeout=1.0)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    found: dict[str, Any] = wait_until(healthy, 30, 0.05, "serve to answer /health")
    return found


def test_serve_answers_streams_and_stops_on_sigterm(
    serve: Callable[[Config], Serve],
    make_config: Callable[..., Config],
    docker_client: docker.DockerClient,
    wait_until: Callable[..., Any],
) -> None:
    config = make_config(
        {
            "coder": {"model": CODER, "served_name": "coder"},
            "small": {
                "model": SMALL,
                "aliases": ["tiny"],
                "env": {"FAKE_VLLM_TOKEN_DELAY": "0.05"},
            },
        },
        default_model="small",
    )
    base = f"http://127.0.0.1:{config.proxy.port}"
    server = serve(config)
    health = wait_healthy(server, base, wait_until)
    assert health["selected"] == "small"
    assert health["models"] == {"coder": "stopped", "small": "stopped"}

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Ryx-Model"] == "small"
    assert answer.json()["choices"][0]["message"]["content"] == f"fake reply from {SMALL} to: hi"

    # The done-criterion: `curl -N .../v1/chat/completions` with no model streams from the
    # selected one.
    request = {"messages": [{"role": "user", "content": "stream"}], "stream": True}
    curl = shutil.which("curl")
    if curl is not None:
        argv = [curl, "-sS", "-N", "--max-time", "60", f"{base}/v1/chat/completions"]
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(request)]
        streamed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        ).stdout
    else:  # curl is not everywhere; the bytes on the wire are what matters
        streamed = httpx.post(f"{base}/v1/chat/completions", json=request, timeout=60).text
    lines = streamed.splitlines()
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data:")]
    assert data[-1] == "[DONE]", streamed
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["model"] for c in chunks} == {SMALL}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == f"fake reply from {SMALL} to: stream"

    # SIGTERM with a long stream in flight: it gets a moment, then a clean end; serve exits 0.
    words = " ".join(["word"] * 400)  # about 20 s of tokens
    long = {"messages": [{"role": "user", "content": words}], "stream": True, "max_tokens": 999}
    cut: list[str] = []
    signalled = 0.0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=long, timeout=30) as stream:
        for line in stream.iter_lines():
            if line and not cut:
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
            if line:
                cut.append(line)
    assert server.process.wait(timeout=5) == 0, server.log()
    assert time.monotonic() - signalled < 5
    assert "data: [DONE]" not in cut
    assert cut[-2:-1] == ["event: error"], cut[-3:]
    assert json.loads(cut[-1].removeprefix("data: "))["error"]["code"] == "shutting_down"
    log = server.log()
    assert "Traceback" not in log, log
    changes = [line.split(" ", 1)[1] for line in log.splitlines() if " small: " in line]
    assert [line.split(" at ")[0] for line in changes] == ["small: starting", "small: ready"], log
    assert f"small: ready at http://127.0.0.1:{config.models['small'].port}" in log  # type: ignore[union-attr]
    assert " coder: " not in log
    assert "ryx-desktop: stopped; models keep running" in log
    container = docker_client.containers.get("ryx-vllm-small")
    assert container.status == "running"


def test_a_second_serve_on_the_same_port_exits_with_a_one_line_error(
    serve: Callable[[Config], Serve],
    make_config: Callable[..., Config],
    wait_until: Callable[..., Any],
) -> None:
    config = make_config({"small": {"model": SMALL}})
    first = serve(config)
    wait_healthy(first, f"http://127.0.0.1:{config.proxy.port}", wait_until)

    second = serve(config)
    assert second.process.wait(timeout=30) == 1
    lines = second.log().strip().splitlines()
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if line.startswith("ryx-desktop: ")]
    assert len(errors) == 1, lines
    assert "port is in use" in errors[0]
    assert f"127.0.0.1:{config.proxy.port}" in errors[0]
    assert lines[-1].startswith("hint: "), lines
    assert first.process.poll() is None  # the first one serves on
