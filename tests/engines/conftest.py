"""Fixtures for tests that run Docker engines of their own (``ExtraDockerd``).

Every test here is marked ``engines``: it starts its own ``dockerd`` processes (root needed; CI
runs as root and installs ``docker.io`` and ``iproute2``), each with its own socket, data root
and bridge, and never touches the machine's engine or its containers. The engines are removed
after each test, and the test fails if ``docker0`` (the main engine's bridge) went missing.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ryx_desktop.config import Config
from tests.fake_vllm.image import ensure_fake_image
from tests.support.extra_dockerd import ExtraDockerd, link_exists
from tests.support.remote_host import RemoteHost
from tests.support.upstream import distinct_free_ports

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # for the tests that show the window
os.environ.setdefault("QT_NO_GLIB", "1")

_HERE = Path(__file__).resolve().parent

#: The model folder every test config serves (its ``config.json`` is all the fake reads).
MODEL_FOLDER = "small/general/qwen2.5-3b"
MODEL_PATH = f"/models/{MODEL_FOLDER}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.engines)


MakeEngine = Callable[..., ExtraDockerd]


def fake_image_on(engine: ExtraDockerd) -> str:
    """Import the fake vLLM image into ``engine`` through its socket (a fresh engine has no
    image at all); setup, not under test."""
    with contextlib.closing(engine.client()) as client:
        return ensure_fake_image(client)


async def health(url: str) -> int | None:
    """The status of ``url``'s ``/health`` (None: nothing answered)."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"{url}/health")).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_main_thread() -> Iterator[None]:
    """As in tests/gui: no automatic collection, which could run on one of the runtime's
    threads and collect a widget there (PySide crashes); collected here, after the test."""
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.enable()


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[MakeEngine]:
    """``make_engine(label, *, live_restore=False) -> ExtraDockerd``, started.

    ``label`` (one or two letters) plus this process's pid names the engine and its bridge, so
    that test runs in parallel never share one. Its workdir is a short folder in the system's
    temporary directory (socket paths are limited to 107 bytes); after the test every engine
    is closed, its log copied to ``tmp_path`` and its workdir removed.
    """
    docker0 = link_exists("docker0")
    made: list[ExtraDockerd] = []

    def make(label: str, *, live_restore: bool = False) -> ExtraDockerd:
        assert 1 <= len(label) <= 2 and label.isalpha(), label
        name = f"{label}{os.getpid()}"
        workdir = tempfile.mkdtemp(prefix=f"ryx-engine-{name}-")
        engine = ExtraDockerd(name, None, workdir, live_restore=live_restore)
        made.append(engine)
        engine.start()
        return engine

    yield make
    problems: list[str] = []
    for engine in reversed(made):
        try:
            engine.close()
        except Exception as exc:
            problems.append(str(exc))
        if engine.log_path.exists():
            shutil.copy(engine.log_path, tmp_path / f"dockerd-{engine.name}.log")
        shutil.rmtree(engine.workdir, ignore_errors=True)
    if docker0 and not link_exists("docker0"):
        problems.append("docker0, the main engine's bridge, is gone")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A factory of free TCP ports on 127.0.0.1 (never the same one twice in a test)."""
    return distinct_free_ports()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding :data:`MODEL_FOLDER` with a small ``config.json``."""
    root = tmp_path / "models"
    folder = root / MODEL_FOLDER
    folder.mkdir(parents=True)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "max_position_embeddings": 32768,
        "torch_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture
def engine_config(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> Callable[..., Config]:
    """``engine_config(engine, image, **model) -> Config``: one managed model ``m`` on the
    engine, the fake image, no GPU, a free port; the caches are temporary folders."""

    def make(engine: ExtraDockerd, image: str, **model: Any) -> Config:
        entry: dict[str, Any] = {
            "model": MODEL_PATH,
            "devices": "none",
            "port": free_port(),
            **model,
        }
        return Config.model_validate(
            {
                "docker": {
                    "host": engine.docker_host,
                    "image": image,
                    "models_dir": str(models_dir),
                    "hf_cache": str(tmp_path / "hf-cache"),
                    "vllm_cache": str(tmp_path / "vllm-cache"),
                    "stop_timeout": 5,
                },
                "proxy": {"port": free_port()},
                "models": {"m": entry},
            }
        )

    return make


MakeRemoteHost = Callable[..., RemoteHost]


@pytest.fixture
def make_remote_host(tmp_path: Path) -> Iterator[MakeRemoteHost]:
    """``make_remote_host(label, *, live_restore=False) -> RemoteHost``, started.

    A network namespace with its own engine and sshd (see ``tests.support.remote_host``).
    ``label`` (one or two letters) plus this process's pid names it, so that test runs in
    parallel never share one; its workdir is a short folder in the system's temporary
    directory. After the test every host is closed, its engine's and sshd's logs copied to
    ``tmp_path`` and its workdir removed.
    """
    docker0 = link_exists("docker0")
    made: list[RemoteHost] = []

    def make(label: str, *, live_restore: bool = False) -> RemoteHost:
        assert 1 <= len(label) <= 2 and label.isalpha(), label
        name = f"{label}{os.getpid()}"
        workdir = tempfile.mkdtemp(prefix=f"ryx-remote-{name}-")
        host = RemoteHost(name, workdir, live_restore=live_restore)
        made.append(host)
        host.start()
        return host

    yield make
    problems: list[str] = []
    for host in reversed(made):
        try:
            host.close()
        except Exception as exc:
            problems.append(str(exc))
        for log, kept in (
            (host.engine.log_path, "dockerd"),
            (host.workdir / "sshd" / "sshd.log", "sshd"),
        ):
            if log.exists():
                shutil.copy(log, tmp_path / f"{kept}-remote-{host.name}.log")
        shutil.rmtree(host.workdir, ignore_errors=True)
    if docker0 and not link_exists("docker0"):
        problems.append("docker0, the main engine's bridge, is gone")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
