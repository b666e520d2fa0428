"""Fixtures for the real-vLLM tier: vLLM's CPU build in a container, serving a tiny local model.

Every test here is marked ``real_vllm`` (and ``docker``). Nothing skips: when the server cannot
be provisioned (no Docker engine, no venv, the image fails to build) the tests fail and say why.
``bash .ci/run`` provisions everything before the tests (``python -m tests.real_vllm.provision``),
so the tests' own time is the servers'. A start of the real server takes about a minute on two
cores: each test module starts as few as it can, and containers are removed by name.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import pytest_asyncio

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.config import Config
from ryx_desktop.core.clock import MonotonicClock
from ryx_desktop.core.supervisor import Supervisor
from tests.real_vllm import provision

_HERE = Path(__file__).resolve().parent
#: Flags every real server gets: float32 (the CPU build has no fast float16) and no torch.compile
#: (46 s to ready instead of 76-104 s on two cores); and a short context for a small KV cache.
REAL_FLAGS = ("--dtype", "float32", "--enforce-eager")
MAX_MODEL_LEN = 1024
#: The name the tiny model is served under.
SERVED = "tiny"
#: How long a real start may take here (two cores, other tests running beside it).
START_TIMEOUT = 420


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.real_vllm)
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.timeout(START_TIMEOUT + 180))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the local engine; fails (never skips) when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(
            f"The real-vLLM tests need a running Docker engine, and none answered ({exc}). "
            "`bash .ci/run` starts one.",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def real_image(docker_client: docker.DockerClient) -> str:
    """``ryx-test/vllm-cpu:<hash>``: vLLM's CPU build whose entrypoint is ``vllm serve``."""
    try:
        return provision.ensure_image(docker_client)
    except Exception as exc:  # a failed provisioning is a failed test, said plainly
        pytest.fail(f"could not provision the real vLLM image: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_model(real_image: str) -> provision.TinyModel:
    """The tiny Llama (head_dim 64) that vLLM's CPU backend loads and runs."""
    return provision.ensure_model(64)


@pytest.fixture(scope="session")
def tiny_model_h16(real_image: str) -> provision.TinyModel:
    """A tiny Llama with head_dim 16: vLLM loads it, then its first forward pass fails."""
    return provision.ensure_model(16)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_container(model: provision.TinyModel) -> str:
    """Where a container sees ``model`` (``docker.models_dir`` is the models' parent)."""
    return f"/models/{model.path.name}"


@pytest.fixture
def make_real_config(real_image: str, tmp_path: Path) -> Callable[..., Config]:
    """``make_real_config(models, **top) -> Config`` for the real image and the tiny models.

    Managed models default to ``devices: none``, a free port, the served name ``tiny``, the
    :data:`REAL_FLAGS` as ``extra_args`` and a generous ``start_timeout``; ``model`` may be a
    :class:`~tests.real_vllm.provision.TinyModel`.
    """

    def make(models: dict[str, dict[str, Any]], **top: Any) -> Config:
        caches = tmp_path / "caches"
        data: dict[str, Any] = dict(top)
        data["docker"] = {
            "image": real_image,
            "models_dir": str(provision.cache_root() / "models"),
            "hf_cache": str(caches / "hf"),
            "vllm_cache": str(caches / "vllm"),
            "stop_timeout": 20,
            **(top.get("docker") or {}),
        }
        data["proxy"] = {"port": free_port(), **(top.get("proxy") or {})}
        data.setdefault("start_timeout", START_TIMEOUT)
        entries: dict[str, dict[str, Any]] = {}
        for key, given in models.items():
            entry = dict(given)
            if isinstance(entry.get("model"), provision.TinyModel):
                entry["model"] = in_container(entry["model"])
            if "url" not in entry:
                entry.setdefault("devices", "none")
                entry.setdefault("port", free_port())
                entry.setdefault("served_name", SERVED)
                entry.setdefault("extra_args", list(REAL_FLAGS))
                entry.setdefault("max_model_len", MAX_MODEL_LEN)
            entries[key] = entry
        data["models"] = entries
        return Config.model_validate(data)

    return make


MakeSupervisor = Callable[[Config], Supervisor]


@pytest_asyncio.fixture
async def supervisor() -> AsyncIterator[MakeSupervisor]:
    """``supervisor(config)``: the real engine (Docker runtime, HTTP probe), closed after."""
    made: list[tuple[Supervisor, DockerRuntime, HttpHealthProbe]] = []

    def make(config: Config) -> Supervisor:
        runtime = DockerRuntime(config.docker.host)
        health = HttpHealthProbe()
        sup = Supervisor(config, runtime, health, MonotonicClock(), probe_interval=0.5)
        made.append((sup, runtime, health))
        return sup

    yield make
    for sup, runtime, health in made:
        await sup.close()
        await health.close()
        await runtime.close()


@pytest.fixture
def remove_after(docker_client: docker.DockerClient) -> Iterator[Callable[[str], str]]:
    """``remove_after(name)``: the container called ``name`` is force-removed after the test."""
    names: list[str] = []

    def register(name: str) -> str:
        names.append(name)
        return name

    yield register
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
