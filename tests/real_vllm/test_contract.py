"""One contract, two servers: the fake vLLM must answer as the real vLLM 0.32 does.

The same checks run against the fake image and the real server (vLLM's CPU build), started
alike: the command line ryx-desktop gives a container (positional model, ``vllm serve`` as the
entrypoint), the same tiny model folder, the same environment. What the fake shows that the CPU
build cannot (GPU memory, sleep, CUDA errors) is checked against vLLM's source elsewhere; what
both can show is held equal here, so the fake cannot drift from the real server again:

* nothing listens while the model loads, then ``/health`` answers 200;
* ``/v1/models``, a chat, a stream and a completion have vLLM's shapes;
* errors are vLLM's nested ``{"error": {message, type, param, code}}``, word for word;
* ``/metrics`` has the names and labels ryx-desktop reads, and not the retired ones;
* the log lines ryx-desktop parses (process prefixes, shard progress, startup) are there;
* an unknown flag exits 2 naming it; SIGTERM ends the server cleanly and quickly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from ryx_desktop.adapters.health import parse_metrics
from ryx_desktop.core.progress import LoadPhase, LoadProgress
from ryx_desktop.core.readiness import parse_startup_complete
from tests.fake_vllm.image import ensure_fake_image
from tests.real_vllm import provision
from tests.real_vllm.conftest import (
    MAX_MODEL_LEN,
    REAL_FLAGS,
    SERVED,
    START_TIMEOUT,
    free_port,
    in_container,
    unique,
)

#: The fake's load takes a few seconds, so that "nothing listens while loading" is observable.
FAKE_ENV = {"FAKE_VLLM_LOAD_SECONDS": "3", "FAKE_VLLM_SHARDS": "4"}
CPU_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
#: Metric names ryx-desktop reads (and the token counters a user's dashboard reads).
METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)
#: Names of vLLM's V0 engine, gone from 0.3x: a fake that serves them has drifted.
RETIRED = ("vllm:gpu_cache_usage_perc", "vllm:num_requests_swapped")


@dataclass
class Server:
    """A vLLM server (fake or real) in a container, and what was seen while it started."""

    kind: str
    container: Any  # docker.models.containers.Container
    port: int
    refused_while_loading: int  # /health attempts that found nothing listening
    answered_while_loading: list[int]  # status codes before the first 200 (must stay empty)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list[str]:
        return bytes(self.container.logs()).decode("utf-8", "replace").splitlines()


def _image(kind: str, client: docker.DockerClient) -> str:
    return ensure_fake_image(client) if kind == "fake" else provision.ensure_image(client)


def _command(model: provision.TinyModel, *extra: str) -> list[str]:
    """What ryx-desktop passes after ``vllm serve`` for the tiny model (see ``vllm_args``)."""
    return [
        in_container(model),
        "--served-model-name",
        SERVED,
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        *REAL_FLAGS,
        *extra,
    ]


def _run(
    client: docker.DockerClient, kind: str, model: provision.TinyModel, *extra: str
) -> tuple[Any, int]:
    port = free_port()
    container = client.containers.run(
        _image(kind, client),
        _command(model, *extra),
        name=unique(f"ryx-contract-{kind}"),
        detach=True,
        environment={**CPU_ENV, **(FAKE_ENV if kind == "fake" else {})},
        volumes={str(model.path.parent): {"bind": "/models", "mode": "ro"}},
        ports={"8000/tcp": ("127.0.0.1", port)},
        ipc_mode="host",
    )
    return container, port


def _start(client: docker.DockerClient, kind: str, model: provision.TinyModel) -> Server:
    container, port = _run(client, kind, model)
    refused, answered = 0, []
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=5) as http:
        while True:
            try:
                status = http.get(f"http://127.0.0.1:{port}/health").status_code
            except httpx.TransportError:
                refused += 1
            else:
                if status == 200:
                    break
                answered.append(status)
            container.reload()
            if container.status != "running":
                log = bytes(container.logs()).decode("utf-8", "replace")
                pytest.fail(f"the {kind} server exited while starting:\n{log[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the {kind} server was not up after {START_TIMEOUT} s")
            time.sleep(0.05)
    return Server(kind, container, port, refused, answered)


@pytest.fixture(params=["fake", "real"])
def server(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    tiny_model: provision.TinyModel,
) -> Iterator[Server]:
    started = _start(docker_client, request.param, tiny_model)
    try:
        yield started
    finally:
        started.container.remove(force=True, v=True)


def _nested_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def test_the_server_speaks_vllm_0_32(server: Server, tiny_model: provision.TinyModel) -> None:
    assert server.refused_while_loading > 0, "something listened before the engine was built"
    assert server.answered_while_loading == []
    with httpx.Client(base_url=server.url, timeout=120) as http:
        # /v1/models: the served name, its root and context length
        listed = http.get("/v1/models").json()
        assert listed["object"] == "list"
        [entry] = listed["data"]
        assert entry["id"] == SERVED
        assert entry["object"] == "model"
        assert entry["owned_by"] == "vllm"
        assert entry["root"] == in_container(tiny_model)
        assert entry["max_model_len"] == MAX_MODEL_LEN

        # errors, word for word
        chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
        missing = http.post("/v1/chat/completions", json={**chat, "model": "nope"})
        assert missing.status_code == 404
        assert _nested_error(missing) == {
            "message": f"The model `nope` does not exist. Valid aliases: {SERVED}.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
        too_long = http.post(
            "/v1/chat/completions", json={**chat, "model": SERVED, "max_tokens": 5000}
        )
        assert too_long.status_code == 400
        assert _nested_error(too_long) == {
            "message": f"max_tokens=5000 cannot be greater than max_model_len={MAX_MODEL_LEN}. "
            "Please request fewer output tokens. (parameter=max_tokens, value=5000)",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }

        # a chat, a completion and a stream have vLLM's shapes
        answer = http.post("/v1/chat/completions", json={**chat, "model": SERVED})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == SERVED
        assert body["id"].startswith("chatcmpl-")
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("length", "stop")
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert 0 < usage["completion_tokens"] <= 3

        text = http.post("/v1/completions", json={"model": SERVED, "prompt": "a", "max_tokens": 2})
        assert text.json()["object"] == "text_completion"
        assert text.json()["choices"][0]["finish_reason"] == "length"

        with http.stream(
            "POST", "/v1/chat/completions", json={**chat, "model": SERVED, "stream": True}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [line for line in stream.iter_lines() if line]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")

        # metrics: today's names with vLLM's labels, read by ryx-desktop's parser
        metrics = http.get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line[:1] != "#"}
    for name in METRICS:
        assert name in names, f"{server.kind} lacks {name}"
        labelled = [line for line in metrics.splitlines() if line.startswith(name + "{")]
        assert labelled and all(
            f'model_name="{SERVED}"' in line and 'engine="0"' in line for line in labelled
        ), labelled
    for name in RETIRED:
        assert name not in names, f"{server.kind} still serves {name}"
    parsed = parse_metrics(metrics)
    assert parsed is not None
    assert parsed.requests_running == 0
    assert parsed.requests_waiting == 0
    assert parsed.kv_cache_usage is not None

    # the log lines ryx-desktop parses
    lines = server.log()
    assert any(line.startswith("(APIServer pid=") for line in lines)
    assert any(line.startswith("(EngineCore pid=") for line in lines)
    assert any(parse_startup_complete(line) for line in lines)
    progress = LoadProgress()
    phases = set()
    for line in lines:
        step = progress.feed(line)
        if step is not None:
            phases.add(step.phase)
    assert LoadPhase.WEIGHTS in phases, phases
    weights = [line for line in lines if "Loading safetensors checkpoint shards: 100%" in line]
    assert weights, "no shard progress line"
    assert "Loading weights took" in "\n".join(lines)

    # SIGTERM: a clean, quick end with vLLM's shutdown lines
    began = time.monotonic()
    server.container.stop(timeout=20)
    took = time.monotonic() - began
    server.container.reload()
    assert took < 15, f"{server.kind} took {took:.1f} s to stop"
    assert server.container.attrs["State"]["ExitCode"] == 0
    assert server.container.attrs["State"]["OOMKilled"] is False
    after = "\n".join(server.log()).split("Application startup complete.", 1)[1]
    assert "Shutting down" in after, after[-3000:]


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_an_unknown_flag_exits_2_naming_it(
    kind: str, docker_client: docker.DockerClient, tiny_model: provision.TinyModel
) -> None:
    container, _ = _run(docker_client, kind, tiny_model, "--no-such-flag")
    try:
        result = container.wait(timeout=START_TIMEOUT)
        log = bytes(container.logs()).decode("utf-8", "replace")
        assert result["StatusCode"] == 2, log[-2000:]
        assert "error: unrecognized arguments: --no-such-flag" in log, log[-2000:]
    finally:
        container.remove(force=True, v=True)
