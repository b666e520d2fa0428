"""The first-run checklist from typed facts: a green or red line each, with a one-line fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ryx_desktop.config import Config
from ryx_desktop.core.model_estimate import GIB
from ryx_desktop.core.setup_checks import (
    DOCKER,
    FIX_DOCKER_FIRST,
    FIX_INSTALL_DOCKER,
    FIX_PERMISSION,
    FIX_START_DOCKER,
    FIX_TOOLKIT,
    GPUS,
    IMAGE,
    MODELS,
    NOT_NEEDED,
    RUNTIME,
    TOOLKIT_URL,
    CheckResult,
    EngineInfo,
    GpuFact,
    ImageFact,
    SetupFacts,
    images_of,
    needs_gpu,
    run_checks,
)

IMAGE_NAME = "vllm/vllm-openai:v0.6.4"
GOOD = SetupFacts(
    docker_address="unix:///var/run/docker.sock",
    docker_ok=True,
    engine=EngineInfo(version="27.3.1", runtimes=("nvidia", "runc")),
    gpus=(GpuFact("NVIDIA GeForce RTX 4090", 24 * GIB),),
    images=(ImageFact(IMAGE_NAME, True),),
    models_dir=Path("/home/me/vllm-models"),
    models_dir_exists=True,
    models_dir_readable=True,
    model_count=3,
)
DOCKER_DOWN = dataclasses.replace(
    GOOD,
    docker_ok=False,
    docker_error="no Docker engine answers at unix:///var/run/docker.sock (connection refused)",
    engine=None,
    images=(ImageFact(IMAGE_NAME, None),),
)


def lines(facts: SetupFacts) -> dict[str, CheckResult]:
    return {r.name: r for r in run_checks(facts)}


def with_(**changes: Any) -> SetupFacts:
    return dataclasses.replace(GOOD, **changes)


def test_all_green_in_the_order_a_user_fixes_things() -> None:
    results = run_checks(GOOD)
    assert [r.name for r in results] == [DOCKER, RUNTIME, GPUS, IMAGE, MODELS]
    assert all(r.ok and r.fix == "" for r in results)
    found = {r.name: r.text for r in results}
    assert found[DOCKER] == "answers at unix:///var/run/docker.sock (version 27.3.1)"
    assert found[GPUS] == "1 GPU: NVIDIA GeForce RTX 4090 (24 GiB)"
    assert found[IMAGE] == f"{IMAGE_NAME} is on this machine"
    assert found[MODELS] == "/home/me/vllm-models holds 3 model directories"


def test_docker_unreachable_is_red_with_a_fix_and_what_depends_on_it_cannot_tell() -> None:
    found = lines(DOCKER_DOWN)
    assert not found[DOCKER].ok
    assert found[DOCKER].text == DOCKER_DOWN.docker_error
    assert found[DOCKER].fix == FIX_START_DOCKER
    for name in (RUNTIME, IMAGE):
        assert not found[name].ok
        assert found[name].text == "cannot tell: Docker does not answer"
        assert found[name].fix == FIX_DOCKER_FIRST
    assert found[GPUS].ok and found[MODELS].ok  # NVML and the folder do not need Docker


def test_no_docker_socket_at_all_suggests_installing_docker() -> None:
    found = lines(dataclasses.replace(DOCKER_DOWN, docker_missing=True))
    assert found[DOCKER].fix == FIX_INSTALL_DOCKER
    assert "https://docs.docker.com/engine/install/" in found[DOCKER].fix


def test_permission_denied_on_the_socket() -> None:
    found = lines(dataclasses.replace(DOCKER_DOWN, docker_permission_denied=True))
    assert found[DOCKER].text == (
        "permission denied on the Docker socket at unix:///var/run/docker.sock"
    )
    assert found[DOCKER].fix == FIX_PERMISSION
    assert "sudo usermod -aG docker $USER" in found[DOCKER].fix


def test_no_nvidia_runtime_points_at_the_container_toolkit() -> None:
    found = lines(with_(engine=EngineInfo(runtimes=("io.containerd.runc.v2", "runc"))))
    assert not found[RUNTIME].ok
    assert (
        found[RUNTIME].text
        == "Docker has no NVIDIA runtime (runtimes: io.containerd.runc.v2, runc)"
    )
    assert found[RUNTIME].fix == FIX_TOOLKIT and TOOLKIT_URL in found[RUNTIME].fix


def test_nvidia_cdi_devices_count_as_a_runtime() -> None:
    engine = EngineInfo(runtimes=("runc",), cdi_devices=("nvidia.com/gpu=0", "nvidia.com/gpu=all"))
    found = lines(with_(engine=engine))
    assert found[RUNTIME].ok
    assert found[RUNTIME].text == "NVIDIA CDI devices: nvidia.com/gpu=0, nvidia.com/gpu=all"
    other = lines(with_(engine=EngineInfo(runtimes=("runc",), cdi_devices=("vendor.com/x=1",))))
    assert not other[RUNTIME].ok


def test_no_gpu_shows_nvmls_reason_and_hint() -> None:
    found = lines(with_(gpus=(), gpu_error="No NVIDIA GPU found", gpu_hint="Install the driver."))
    assert not found[GPUS].ok
    assert (found[GPUS].text, found[GPUS].fix) == ("No NVIDIA GPU found", "Install the driver.")


def test_several_gpus_are_listed() -> None:
    gpus = (GpuFact("A100", 80 * GIB), GpuFact("A100", None))
    assert lines(with_(gpus=gpus))[GPUS].text == "2 GPUs: A100 (80 GiB), A100"


def test_a_cpu_only_config_needs_no_nvidia_runtime_and_no_gpu() -> None:
    facts = with_(needs_gpu=False, engine=EngineInfo(runtimes=("runc",)), gpus=(), gpu_error="x")
    found = lines(facts)
    assert found[RUNTIME] == CheckResult(RUNTIME, True, NOT_NEEDED)
    assert found[GPUS] == CheckResult(GPUS, True, NOT_NEEDED)
    assert all(r.ok for r in found.values())


def test_a_missing_image_says_press_pull() -> None:
    facts = with_(images=(ImageFact(IMAGE_NAME, False),))
    assert facts.missing_images == (IMAGE_NAME,)
    found = lines(facts)
    assert not found[IMAGE].ok
    assert found[IMAGE].text == f"{IMAGE_NAME} is not on this machine"
    assert found[IMAGE].fix == f"Press Pull to download {IMAGE_NAME} (several GB)."


def test_each_of_several_images_has_its_line() -> None:
    facts = with_(images=(ImageFact("a:1", True), ImageFact("b:2", False)))
    names = [r.name for r in run_checks(facts)]
    assert names == [DOCKER, RUNTIME, GPUS, f"{IMAGE} a:1", f"{IMAGE} b:2", MODELS]
    assert facts.missing_images == ("b:2",)


def test_models_folder_missing_unreadable_empty() -> None:
    missing = lines(with_(models_dir_exists=False, models_dir_readable=False, model_count=None))
    assert missing[MODELS].text == "/home/me/vllm-models does not exist"
    assert "mkdir -p /home/me/vllm-models" in missing[MODELS].fix
    unreadable = lines(with_(models_dir_readable=False, model_count=None))
    assert unreadable[MODELS].text == "/home/me/vllm-models cannot be read by this user"
    assert "chmod u+rx /home/me/vllm-models" in unreadable[MODELS].fix
    empty = lines(with_(model_count=0))
    assert not empty[MODELS].ok
    assert "holds no model directory" in empty[MODELS].text
    assert "huggingface-cli download" in empty[MODELS].fix
    one = lines(with_(model_count=1))
    assert one[MODELS].ok and one[MODELS].text.endswith("holds 1 model directory")


def test_gpu_total_is_the_first_gpus() -> None:
    assert GOOD.gpu_total_bytes == 24 * GIB
    assert with_(gpus=()).gpu_total_bytes is None


def cfg(models: dict[str, Any], **docker: Any) -> Config:
    return Config.model_validate({"models": models, "docker": docker})


def test_needs_gpu_from_the_config() -> None:
    assert needs_gpu(cfg({}))  # no model yet: the models to come will want one
    assert not needs_gpu(cfg({"a": {"model": "/models/a", "port": 8001, "devices": "none"}}))
    assert needs_gpu(
        cfg(
            {
                "a": {"model": "/models/a", "port": 8001, "devices": "none"},
                "b": {"model": "/models/b", "port": 8002, "devices": [0]},
            }
        )
    )
    assert needs_gpu(cfg({"r": {"url": "http://127.0.0.1:9000"}}))  # only remote ones


def test_images_of_the_config() -> None:
    assert images_of(cfg({}, image="x:1")) == ("x:1",)
    models = {
        "a": {"model": "/models/a", "port": 8001},
        "b": {"model": "/models/b", "port": 8002, "image": "cpu:2"},
        "c": {"model": "/models/c", "port": 8003},
    }
    assert images_of(cfg(models, image="x:1")) == ("x:1", "cpu:2")
