"""Gathering the setup facts: Docker through the runtime, GPUs through NVML, the models folder.

The probe runs over a fake engine and the fake NVML module; ``DockerRuntime``'s two new calls
(``engine_info``, ``image_present``) are checked against a stand-in docker client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import pytest_asyncio

from ryx_desktop.adapters.docker_runtime import DockerRuntime, engine_info_of
from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.adapters.setup_probe import SetupProbe
from ryx_desktop.config import Config
from ryx_desktop.core.errors import DockerPermissionError
from ryx_desktop.core.ports import PullProgress
from ryx_desktop.core.setup_checks import EngineInfo, GpuFact, ImageFact
from tests.support.fake_pynvml import FakeGpu, FakePynvml, GiB
from tests.support.model_dirs import FOUND, model_tree
from tests.support.setup_fakes import ADDRESS, FakeSetupDocker

IMAGE = "vllm/vllm-openai:latest"


Nvml = Callable[[list[FakeGpu]], NvmlGpuProbe]


@pytest_asyncio.fixture
async def nvml() -> AsyncIterator[Nvml]:
    """Makes NVML probes over fake GPUs; closes them after the test."""
    made: list[NvmlGpuProbe] = []

    def make(gpus: list[FakeGpu]) -> NvmlGpuProbe:
        made.append(NvmlGpuProbe(FakePynvml(gpus)))
        return made[-1]

    yield make
    for probe in made:
        await probe.close()


def config_for(models_dir: Path, models: dict[str, Any] | None = None) -> Config:
    return Config.model_validate(
        {"docker": {"models_dir": str(models_dir), "image": IMAGE}, "models": models or {}}
    )


@pytest.mark.asyncio
async def test_facts_of_a_ready_machine(tmp_path: Path, nvml: Nvml) -> None:
    folder = model_tree(tmp_path / "models")
    gpus = nvml([FakeGpu(name="NVIDIA GeForce RTX 4090", total=24 * GiB)])
    probe = SetupProbe(FakeSetupDocker(images={IMAGE}), gpus, environ={})
    facts = await probe.facts(config_for(folder))
    assert facts.docker_ok and facts.docker_address == ADDRESS
    assert facts.engine == EngineInfo(version="27.3.1", runtimes=("nvidia", "runc"))
    assert facts.gpus == (GpuFact("NVIDIA GeForce RTX 4090", 24 * GiB),)
    assert facts.images == (ImageFact(IMAGE, True),)
    assert (facts.models_dir, facts.models_dir_exists, facts.models_dir_readable) == (
        folder,
        True,
        True,
    )
    assert facts.model_count == len(FOUND)
    assert facts.needs_gpu


@pytest.mark.asyncio
async def test_facts_when_docker_is_down_and_there_is_no_gpu(tmp_path: Path, nvml: Nvml) -> None:
    probe = SetupProbe(FakeSetupDocker("no-socket"), nvml([]), environ={})
    facts = await probe.facts(config_for(tmp_path / "missing"))
    assert not facts.docker_ok and facts.docker_missing and not facts.docker_permission_denied
    assert facts.docker_error.endswith("(socket file not found)")
    assert facts.images == (ImageFact(IMAGE, None),)  # cannot tell
    assert facts.gpus == () and facts.gpu_error == "No NVIDIA GPU found" and facts.gpu_hint
    assert not facts.models_dir_exists and facts.model_count is None


@pytest.mark.asyncio
async def test_permission_denied_and_a_chosen_folder(tmp_path: Path, nvml: Nvml) -> None:
    chosen = model_tree(tmp_path / "elsewhere")
    probe = SetupProbe(FakeSetupDocker("denied"), nvml([]), environ={})
    cpu_only = {"a": {"model": "/models/a", "port": 8001, "devices": "none"}}
    facts = await probe.facts(config_for(tmp_path / "configured", cpu_only), chosen)
    assert facts.docker_permission_denied and not facts.docker_missing
    assert facts.models_dir == chosen and facts.model_count == len(FOUND)
    assert not facts.needs_gpu


@pytest.mark.asyncio
async def test_pull_passes_the_progress_on(nvml: Nvml) -> None:
    engine = FakeSetupDocker()
    step = PullProgress(IMAGE, 10, 100, 0, 3, "Downloading")
    engine.steps = [step]
    probe = SetupProbe(engine, nvml([]), environ={})
    seen: list[PullProgress] = []
    await probe.pull(IMAGE, seen.append)
    assert seen == [step] and IMAGE in engine.images


@pytest.mark.asyncio
async def test_scan_and_compose_run_off_the_loop(tmp_path: Path, nvml: Nvml) -> None:
    folder = model_tree(tmp_path / "models")
    compose = tmp_path / "compose.yml"
    compose.write_text(
        "services:\n"
        "  vllm-small-general:\n"
        "    image: vllm/vllm-openai:v0.6.4\n"
        "    ports: ['127.0.0.1:8011:8000']\n"
        "    volumes: ['${MODELS}:/models:ro']\n"
        "    command: --model /models/small\n",
        encoding="utf-8",
    )
    probe = SetupProbe(FakeSetupDocker(), nvml([]), environ={"MODELS": "/m"})
    assert [m.path for m in await probe.scan(folder)] == list(FOUND)
    imported = await probe.load_compose(compose)
    assert list(imported.models) == ["small-general"]
    assert imported.docker.models_dir == Path("/m")


# ---- DockerRuntime's two calls for the setup page --------------------------------------------


class _Images:
    def __init__(self, present: set[str]) -> None:
        self._present = present

    def get(self, name: str) -> object:
        if name not in self._present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return object()


class _Client:
    """The docker client calls the setup page makes."""

    def __init__(self, info: dict[str, Any], present: set[str]) -> None:
        self._info = info
        self.images = _Images(present)

    def info(self) -> dict[str, Any]:
        return self._info

    def close(self) -> None:
        pass


def test_engine_info_of_docker_info() -> None:
    raw = {
        "ServerVersion": "27.3.1",
        "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
        "DiscoveredDevices": [
            {"Source": "cdi", "ID": "nvidia.com/gpu=0"},
            {"Source": "other", "ID": "x"},
            "junk",
        ],
    }
    assert engine_info_of(raw) == EngineInfo("27.3.1", ("nvidia", "runc"), ("nvidia.com/gpu=0",))
    assert engine_info_of({}) == EngineInfo()


@pytest.mark.asyncio
async def test_runtime_engine_info_and_image_present(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client({"ServerVersion": "20.10", "Runtimes": {"runc": {}}}, {IMAGE})
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # no unix socket to check first
    monkeypatch.setattr(docker, "from_env", lambda: client)
    runtime = DockerRuntime()
    try:
        assert await runtime.engine_info() == EngineInfo("20.10", ("runc",))
        assert await runtime.image_present(IMAGE) is True
        assert await runtime.image_present("not/there:1") is False
    finally:
        await runtime.close()


@pytest.mark.asyncio
async def test_runtime_errors_arrive_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Any:
        raise docker.errors.DockerException(
            "Error while fetching server API version: ('Connection aborted.', "
            "PermissionError(13, 'Permission denied'))"
        )

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    monkeypatch.setattr(docker, "from_env", refuse)
    runtime = DockerRuntime()
    with pytest.raises(DockerPermissionError):
        await runtime.engine_info()
    await runtime.close()
