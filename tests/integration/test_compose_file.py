"""compose/model-router.yml works on its own: docker-compose accepts it as the original setup."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose" / "model-router.yml"


def test_docker_compose_accepts_the_three_model_setup(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: .ci/run installs Debian's docker-compose"
    env = {**os.environ, "RYX_MODELS_DIR": str(tmp_path)}
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    expected = {
        "vllm-medium-general": ("8001", "/models/medium/general/qwen2.5-7b-gptq"),
        "vllm-medium-coding": ("8002", "/models/medium/coding/qwen2.5-coder-7b-gptq"),
        "vllm-small-general": ("8003", "/models/small/general/qwen2.5-3b"),
    }
    assert set(services) == set(expected)
    for name, (port, model) in expected.items():
        service = services[name]
        assert service["image"] == "vllm/vllm-openai:latest"
        assert service["container_name"] == "ryx-vllm-" + name.removeprefix("vllm-")
        assert service["ports"] == [f"127.0.0.1:{port}:8000/tcp"]
        assert f"{tmp_path}:/models:ro" in service["volumes"]
        assert any(v.endswith(":/root/.cache/vllm:rw") for v in service["volumes"]), service
        assert service["ipc"] == "host"
        command = service["command"]
        assert command[0] == model  # `vllm serve MODEL`: the image's entrypoint is `vllm serve`
        assert "--model" not in command
        assert command[command.index("--gpu-memory-utilization") + 1] == "0.3"
        assert command[command.index("--max-model-len") + 1] == "4096"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"capabilities": ["gpu"], "count": "all", "driver": "nvidia"}]
