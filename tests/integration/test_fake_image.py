"""The fake vLLM image: built once, run like ``vllm/vllm-openai``, stopped gracefully."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import docker
import httpx
import pytest

from tests.fake_vllm import image as fake_image_module
from tests.fake_vllm.image import REPOSITORY, ensure_fake_image

SMALL = "/models/small/general/qwen2.5-3b"


def test_build_twice_reuses_the_image(
    docker_client: docker.DockerClient, fake_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_id = docker_client.images.get(fake_image).id

    def no_rebuild(*args: Any) -> str:
        raise AssertionError("the image was built again")

    monkeypatch.setattr(fake_image_module, "_build", no_rebuild)
    started = time.monotonic()
    again = ensure_fake_image(docker_client)
    elapsed = time.monotonic() - started

    assert again == fake_image
    assert again.startswith(f"{REPOSITORY}:")
    assert len(again.rsplit(":", 1)[1]) == 12
    assert docker_client.images.get(again).id == first_id
    assert docker_client.images.get(f"{REPOSITORY}:latest").id == first_id
    assert elapsed < 2.0


def test_image_is_small_with_the_server_as_entrypoint(
    docker_client: docker.DockerClient, fake_image: str
) -> None:
    attrs = docker_client.images.get(fake_image).attrs
    assert attrs["Config"]["Entrypoint"] == ["/usr/bin/python3", "/app/server.py"]
    assert "8000/tcp" in attrs["Config"]["ExposedPorts"]
    assert attrs["Size"] < 60 * 1024 * 1024


def test_container_becomes_healthy_and_lists_its_model(
    run_fake_vllm: Callable[..., Any],
) -> None:
    fake = run_fake_vllm(SMALL, "--port", "8000").wait_healthy()

    models = httpx.get(f"{fake.url}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == [SMALL]
    assert models["data"][0]["root"] == SMALL

    logs = fake.logs()
    assert "Loading safetensors checkpoint shards: 100% Completed | 4/4" in logs
    assert "Starting vLLM server on http://0.0.0.0:8000" in logs
    assert "INFO:     Application startup complete." in logs


def test_served_name_and_chat_in_a_container(run_fake_vllm: Callable[..., Any]) -> None:
    fake = run_fake_vllm(
        SMALL, "--served-model-name", "qwen-small", "--enable-sleep-mode"
    ).wait_healthy()

    reply = httpx.post(
        f"{fake.url}/v1/chat/completions",
        json={"model": "qwen-small", "messages": [{"role": "user", "content": "hello"}]},
        timeout=5,
    )
    assert reply.status_code == 200
    message = reply.json()["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "fake reply from qwen-small to: hello",
        "tool_calls": [],
    }


def test_docker_stop_is_graceful_and_prompt(run_fake_vllm: Callable[..., Any]) -> None:
    fake = run_fake_vllm(SMALL).wait_healthy()

    started = time.monotonic()
    fake.container.stop(timeout=10)
    elapsed = time.monotonic() - started

    fake.container.reload()
    assert fake.container.attrs["State"]["ExitCode"] == 0
    assert elapsed < 5.0
    assert "INFO:     Shutting down" in fake.logs()


def test_missing_model_path_exits_1_like_vllm(
    run_fake_vllm: Callable[..., Any], wait_until: Callable[..., Any]
) -> None:
    fake = run_fake_vllm("/models/nope/missing")

    def exited() -> bool:
        fake.container.reload()
        return fake.container.status == "exited"

    wait_until(exited, 30, what="the container to exit")
    assert fake.container.attrs["State"]["ExitCode"] == 1
    assert (
        "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
        "'/models/nope/missing'." in fake.logs()
    )


def test_exit_code_knob_in_a_container(
    run_fake_vllm: Callable[..., Any], wait_until: Callable[..., Any]
) -> None:
    fake = run_fake_vllm(SMALL, env={"FAKE_VLLM_EXIT_CODE": "137"})

    def exited() -> bool:
        fake.container.reload()
        return fake.container.status == "exited"

    wait_until(exited, 30, what="the container to exit")
    assert fake.container.attrs["State"]["ExitCode"] == 137


def test_make_config_points_at_the_fake_image(
    make_config: Callable[..., Any], fake_image: str, models_dir: Any
) -> None:
    config = make_config(
        {
            "small": {"model": SMALL, "served_name": "qwen-small"},
            "remote": {"url": "http://127.0.0.1:9/v1"},
        },
        idle_ttl=60,
    )
    assert config.docker.image == fake_image
    assert config.docker.models_dir == models_dir
    assert config.docker.stop_timeout == 5
    assert config.idle_ttl == 60
    small = config.models["small"]
    assert small.devices == "none"
    assert small.port != config.proxy.port
    assert config.models["remote"].external
    assert (models_dir / "small/general/qwen2.5-3b/config.json").is_file()
