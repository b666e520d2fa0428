"""The README's two-host config is one the checker takes, and it says what the README says."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.spec import build_spec

README = Path(__file__).resolve().parents[2] / "README.md"


def two_host_config() -> Config:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## More than one GPU box") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "the section has no yaml block"
    return Config.model_validate(yaml.safe_load(block.group(1)))


def test_the_readme_two_host_config_is_valid_and_places_each_model() -> None:
    config = two_host_config()
    assert list(config.hosts) == ["gpu2"]
    assert config.hosts["gpu2"].kind == "ssh"
    hosts = {k: m.host for k, m in config.models.items() if isinstance(m, ModelConfig)}
    assert hosts == {"qwen-coder": "local", "llama-70b": "gpu2", "mistral": "any"}
    spec = build_spec("llama-70b", config)
    assert spec.host == "gpu2" and spec.mounts[0].source == "/srv/vllm-models"
