"""The container spec built from config: vLLM's command line, mounts and environment."""

from __future__ import annotations

from pathlib import Path

from ryx_desktop.config import Config, DockerConfig, ModelConfig
from ryx_desktop.core.spec import Mount, build_spec, vllm_args


def _config(**model: object) -> Config:
    fields: dict[str, object] = {"model": "/models/m", "port": 8001, **model}
    return Config.model_validate(
        {
            "docker": DockerConfig(
                models_dir=Path("/srv/models"),
                hf_cache=Path("/srv/hf"),
                vllm_cache=Path("/srv/vllm"),
            ).model_dump(),
            "models": {"a": fields},
        }
    )


def test_the_model_comes_first_and_positionally() -> None:
    model = ModelConfig(
        model="/models/m",
        served_name="m",
        port=8001,
        max_model_len=2048,
        sleep_mode=True,
        extra_args=("--enforce-eager",),
    )
    assert vllm_args(model) == (
        "/models/m",
        "--served-model-name",
        "m",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--gpu-memory-utilization",
        "0.9",
        "--max-model-len",
        "2048",
        "--enable-sleep-mode",
        "--enforce-eager",
    )
    spec = build_spec("a", _config())
    assert spec.command[0] == "/models/m"
    assert "--model" not in spec.command


def test_every_container_mounts_the_three_folders() -> None:
    spec = build_spec("a", _config())
    assert spec.mounts == (
        Mount("/srv/models", "/models", read_only=True),
        Mount("/srv/hf", "/root/.cache/huggingface"),
        Mount("/srv/vllm", "/root/.cache/vllm"),
    )
    assert spec.host_model_path == "/srv/models/m"


def test_a_cpu_model_runs_on_vllms_cpu_platform_unless_its_env_says_otherwise() -> None:
    gpu = build_spec("a", _config(devices="all"))
    assert "VLLM_TARGET_DEVICE" not in gpu.env
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu.env
    cpu = build_spec("a", _config(devices="none"))
    assert cpu.env == {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "4"}
    assert cpu.ipc_mode == "host"  # the CPU build needs more than the default 64 MiB /dev/shm
    assert cpu.spec_hash != gpu.spec_hash
    own = build_spec("a", _config(devices="none", env={"VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert own.env == {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}


def test_sleep_mode_turns_on_the_dev_routes_unless_env_says_otherwise() -> None:
    assert build_spec("a", _config(sleep_mode=True)).env == {"VLLM_SERVER_DEV_MODE": "1"}
    own = build_spec("a", _config(sleep_mode=True, env={"VLLM_SERVER_DEV_MODE": "0"}))
    assert own.env == {"VLLM_SERVER_DEV_MODE": "0"}


def test_the_spec_hash_follows_the_vllm_cache_folder() -> None:
    moved = _config().model_copy(
        update={"docker": DockerConfig(models_dir=Path("/srv/models"), hf_cache=Path("/srv/hf"))}
    )
    assert build_spec("a", moved).spec_hash != build_spec("a", _config()).spec_hash
