"""The fake vLLM server run as a plain subprocess on this host, for tests without Docker.

The same stdlib server the fake image runs (``tests/fake_vllm/server.py``): vLLM's flags,
endpoints and log lines, plus its ``/fake/*`` test hooks. Proxy tests use it behind an external
(``url:``) model; a managed model needs the image and a real Docker engine instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVER = Path(__file__).resolve().parents[1] / "fake_vllm" / "server.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distinct_free_ports() -> Callable[[], int]:
    """A factory of free ports on 127.0.0.1 that never gives the same one twice."""
    given: set[int] = set()

    def factory() -> int:
        for _ in range(100):
            port = free_port()
            if port not in given:
                given.add(port)
                return port
        raise RuntimeError("no free TCP port found")

    return factory


@dataclass
class FakeUpstream:
    """A running fake vLLM process and how to reach and steer it."""

    process: subprocess.Popen[bytes]
    port: int
    served_name: str
    log_path: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """What it received (``/fake/requests``): method, path, headers, json."""
        return list(self.client.get(f"{self.url}/fake/requests").json())

    def clear_requests(self) -> None:
        self.client.delete(f"{self.url}/fake/requests")

    def disconnects(self) -> int:
        """Generations whose client went away before the end."""
        return int(self.client.get(f"{self.url}/fake/disconnects").json()["count"])

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as a crashed vLLM would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_fake_upstream(
    workdir: Path,
    *,
    served_name: str = "fake-model",
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> FakeUpstream:
    """Start the fake on a free port and wait until ``/health`` answers 200."""
    model_dir = workdir / f"model-{served_name}"
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 32768}
    (model_dir / "config.json").write_text(json.dumps(config))
    port = free_port()
    log_path = workdir / f"fake-{served_name}-{port}.log"
    command = [
        sys.executable,
        str(SERVER),
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]
    environment = {**os.environ, "FAKE_VLLM_LOAD_SECONDS": "0", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    upstream = FakeUpstream(process, port, served_name, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the fake vLLM exited early:\n{upstream.log()}")
        try:
            if upstream.client.get(f"{upstream.url}/health", timeout=1.0).status_code == 200:
                return upstream
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            upstream.stop()
            raise RuntimeError(f"the fake vLLM did not answer in {timeout} s:\n{upstream.log()}")
        time.sleep(0.02)  # polling a subprocess's readiness; no event to wait on
