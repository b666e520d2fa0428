"""Fixtures for the integration tests, which run against a real Docker engine.

Every test here is marked ``docker``. The engine is required: when none answers the tests fail
with a clear message (CI provides one), they never skip. Tests own the engine's ``ryx-vllm-*``
containers: every container named ``ryx-vllm-*`` or labelled ``io.ryx.managed`` is force-removed
after each test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from ryx_desktop.config import Config
from tests.fake_vllm.image import ensure_fake_image
from tests.support.upstream import distinct_free_ports

_HERE = Path(__file__).resolve().parent
CONTAINER_PREFIX = "ryx-vllm-"
MANAGED_LABEL = "io.ryx.managed"

#: Model folders in ``models_dir`` (relative to it); the container sees them under /models.
MODEL_FOLDERS = (
    "medium/general/qwen2.5-7b-gptq",
    "medium/coding/qwen2.5-coder-7b-gptq",
    "small/general/qwen2.5-3b",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.docker)


# --------------------------------------------------------------------------- engine and image


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the local engine (``DOCKER_HOST`` etc. honoured); fails when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(
            "The Docker integration tests need a running Docker engine, and none answered "
            f"({exc}). Start one (CI does) or point DOCKER_HOST at it.",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_image(docker_client: docker.DockerClient) -> str:
    """The fake vLLM image's tag (``ryx-test/fake-vllm:<hash>``), built on first use."""
    return ensure_fake_image(docker_client)


def remove_test_containers(client: docker.DockerClient) -> list[str]:
    """Force-remove every ``ryx-vllm-*`` or ``io.ryx.managed`` container; return their names."""
    found: dict[str, Any] = {}
    for filters in ({"name": CONTAINER_PREFIX}, {"label": MANAGED_LABEL}):
        for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
            if container.name.startswith(CONTAINER_PREFIX) or MANAGED_LABEL in (
                container.labels or {}
            ):
                found[container.id] = container
    for container in found.values():
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise
    return [c.name for c in found.values()]


@pytest.fixture(autouse=True)
def _remove_containers_after(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    remove_test_containers(docker_client)


# --------------------------------------------------------------------------- files and ports


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding :data:`MODEL_FOLDERS`, each with a small ``config.json``."""
    root = tmp_path / "models"
    for folder in MODEL_FOLDERS:
        path = root / folder
        path.mkdir(parents=True)
        config = {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "max_position_embeddings": 32768,
            "torch_dtype": "float16",
        }
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    root.chmod(0o755)
    return root


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A factory of free TCP ports on 127.0.0.1 (never the same one twice in a test)."""
    return distinct_free_ports()


@pytest.fixture
def make_config(
    fake_image: str, models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> Callable[..., Config]:
    """``make_config(models, **top) -> Config`` for tests.

    ``docker.image`` is the fake image, ``docker.models_dir`` is :func:`models_dir`,
    ``docker.hf_cache`` a temporary folder and ``docker.stop_timeout`` 5 (a ``docker=`` mapping
    overrides any of them). Each managed model (no ``url:``) defaults to ``devices: "none"`` and a
    free ``port``; ``proxy.port`` defaults to a free port too. Other keyword arguments are the
    file's other top-level keys (``gpu=``, ``idle_ttl=``, ``default_model=`` ...).
    """

    def make(models: dict[str, dict[str, Any]] | None = None, **top: Any) -> Config:
        hf_cache = tmp_path / "hf-cache"
        hf_cache.mkdir(exist_ok=True)
        data: dict[str, Any] = dict(top)
        data["docker"] = {
            "image": fake_image,
            "models_dir": str(models_dir),
            "hf_cache": str(hf_cache),
            "stop_timeout": 5,
            **(top.get("docker") or {}),
        }
        proxy = dict(top.get("proxy") or {})
        proxy.setdefault("port", free_port())
        data["proxy"] = proxy
        entries: dict[str, dict[str, Any]] = {}
        for key, model in (models or {}).items():
            entry = dict(model)
            if "url" not in entry:
                entry.setdefault("devices", "none")
                entry.setdefault("port", free_port())
            entries[key] = entry
        data["models"] = entries
        return Config.model_validate(data)

    return make


# --------------------------------------------------------------------------- running the fake


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(predicate, timeout=30, interval=0.05, what="")``: poll until truthy."""
    return wait_until


@dataclass
class FakeContainer:
    """A running fake vLLM container and where the host reaches it."""

    container: Any  # docker.models.containers.Container
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return bytes(self.container.logs()).decode("utf-8", "replace")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> FakeContainer:
        def ready() -> bool:
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                pytest.fail(f"fake vLLM container exited:\n{self.logs()}")
            return self.healthy()

        wait_until(ready, timeout, what=f"{self.container.name} to answer /health")
        return self


@pytest.fixture
def run_fake_vllm(
    docker_client: docker.DockerClient,
    fake_image: str,
    models_dir: Path,
    free_port: Callable[[], int],
) -> Callable[..., FakeContainer]:
    """``run_fake_vllm(*flags, env=None, name=None, labels=None) -> FakeContainer``.

    Starts a detached container of the fake image with vLLM ``flags`` (``--port 8000`` is added
    when absent), ``models_dir`` mounted read-only at ``/models`` and port 8000 published on a
    free 127.0.0.1 port. Its name starts with ``ryx-vllm-test-`` so it is removed after the test.
    """

    def run(
        *flags: str,
        env: dict[str, str] | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> FakeContainer:
        command = list(flags)
        if "--port" not in command:
            command += ["--port", "8000"]
        container_port = int(command[command.index("--port") + 1])
        host_port = free_port()
        container = docker_client.containers.run(
            fake_image,
            command,
            name=name or f"{CONTAINER_PREFIX}test-{uuid.uuid4().hex[:8]}",
            detach=True,
            environment=env or {},
            labels=labels or {},
            volumes={str(models_dir): {"bind": "/models", "mode": "ro"}},
            ports={f"{container_port}/tcp": ("127.0.0.1", host_port)},
        )
        return FakeContainer(container, host_port)

    return run
