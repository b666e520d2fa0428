"""Found models (and compose files) become config entries: unique keys, free ports, valid files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ryx_desktop.config import Config, ModelConfig, default_config, load_config, save_config
from ryx_desktop.core.errors import ConfigError, RyxError
from ryx_desktop.core.found_model import FoundModel
from ryx_desktop.core.model_estimate import GIB, suggest_share
from ryx_desktop.core.model_import import (
    add_compose_models,
    add_found_models,
    configured_key,
    example_keys,
    slug,
)
from ryx_desktop.core.routing import resolve_model

MODELS_DIR = Path("/data/models")


def found(path: str, *, need: int = 10 * GIB, **changes: Any) -> FoundModel:
    model = FoundModel(
        path=path,
        name=path.rsplit("/", 1)[-1],
        architecture="LlamaForCausalLM",
        weights_bytes=need // 2,
        quantization="bfloat16",
        parameters=8 * 10**9,
        context=8192,
        need_bytes=need,
    )
    return dataclasses.replace(model, **changes)


def config(models: dict[str, Any], **top: Any) -> Config:
    docker = {"models_dir": str(MODELS_DIR), **top.pop("docker", {})}
    return Config.model_validate({"models": models, "docker": docker, **top})


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct"),
        ("Meta Llama 3 (8B) GPTQ", "meta-llama-3-8b-gptq"),
        ("--weird__name..", "weird__name"),
        ("日本語", "model"),
        ("x" * 80, "x" * 60),
    ],
)
def test_slug(name: str, key: str) -> None:
    assert slug(name) == key


def test_keys_are_unique_and_ports_free() -> None:
    base = config(
        {
            "tiny": {"model": "/models/other", "port": 8001, "aliases": ["qwen2.5-7b"]},
            "b": {"model": "/models/b", "port": 8003},
        },
        proxy={"port": 8002},
    )
    models = [found("org1/Qwen2.5-7B"), found("org2/Qwen2.5-7B"), found("Tiny")]
    result = add_found_models(base, models, MODELS_DIR, gpu_total_bytes=24 * GIB)
    assert result.added == ("qwen2.5-7b-2", "qwen2.5-7b-3", "tiny-2")
    new = [result.config.models[k] for k in result.added]
    assert all(isinstance(m, ModelConfig) for m in new)
    managed = [m for m in new if isinstance(m, ModelConfig)]
    assert [m.port for m in managed] == [8004, 8005, 8006]  # 8001, 8003: models; 8002: proxy
    assert [m.served_name for m in managed] == ["Qwen2.5-7B", "org2/Qwen2.5-7B", "Tiny"]
    assert [m.model for m in managed] == [
        "/models/org1/Qwen2.5-7B",
        "/models/org2/Qwen2.5-7B",
        "/models/Tiny",
    ]
    ports = [m.port for m in result.config.models.values() if isinstance(m, ModelConfig)]
    assert len(ports) == len(set(ports)) and 8002 not in ports
    assert result.config.default_model is None  # there was none, and other models stay
    assert not result.models_dir_changed and result.removed_examples == ()


def test_the_entry_carries_the_estimate() -> None:
    model = found(
        "code/Coder-1B", need=13 * GIB, parameters=10**9, trust_remote_code=True, context=4096
    )
    result = add_found_models(config({}), [model], MODELS_DIR, gpu_total_bytes=24 * GIB)
    entry = result.config.models["coder-1b"]
    assert isinstance(entry, ModelConfig)
    assert entry.gpu_memory_utilization == 0.55 == suggest_share(13 * GIB, 24 * GIB)
    assert entry.max_model_len == 4096
    assert entry.extra_args == ("--trust-remote-code",)
    assert (entry.name, entry.category, entry.size, entry.devices) == (
        "Coder-1B",
        "coding",
        "small",
        "all",
    )
    assert result.config.default_model == "coder-1b"  # the first model of an empty config
    no_gpu = add_found_models(config({}), [model], MODELS_DIR, gpu_total_bytes=None)
    assert no_gpu.config.models["coder-1b"].gpu_memory_utilization == 0.9  # type: ignore[union-attr]


def test_a_folder_inside_the_models_folder_keeps_its_place() -> None:
    result = add_found_models(
        config({}), [found("org/m")], MODELS_DIR / "sub", gpu_total_bytes=None
    )
    assert result.config.models["m"].model == "/models/sub/org/m"  # type: ignore[union-attr]
    assert result.config.docker.models_dir == MODELS_DIR


def test_another_folder_becomes_the_models_folder_when_nothing_else_uses_it() -> None:
    elsewhere = Path("/srv/llm")
    base = config({"remote": {"url": "http://127.0.0.1:9000"}})
    result = add_found_models(base, [found("m")], elsewhere, gpu_total_bytes=None)
    assert result.models_dir_changed
    assert result.config.docker.models_dir == elsewhere
    assert result.config.models["m"].model == "/models/m"  # type: ignore[union-attr]


def test_another_folder_is_refused_while_other_models_use_the_old_one() -> None:
    base = config({"a": {"model": "/models/a", "port": 8001}})
    with pytest.raises(RyxError) as info:
        add_found_models(base, [found("m")], Path("/srv/llm"), gpu_total_bytes=None)
    assert info.value.message == (
        "/srv/llm is not inside the models folder /data/models, which a uses"
    )
    assert "choose that folder" in info.value.hint


def test_the_examples_are_replaced_when_asked() -> None:
    shipped = default_config()
    assert example_keys(shipped) == ("medium-general", "medium-coding", "small-general")
    result = add_found_models(
        shipped, [found("m")], Path("/srv/llm"), gpu_total_bytes=None, replace_examples=True
    )
    assert list(result.config.models) == ["m"]
    assert result.removed_examples == example_keys(shipped)
    assert result.config.default_model == "m"  # the selected example went with them
    assert result.models_dir_changed  # no model uses the old folder any more


def test_examples_edited_by_the_user_are_not_examples() -> None:
    data = default_config().model_dump()
    data["models"]["medium-general"]["port"] = 8101
    edited = Config.model_validate(data)
    assert example_keys(edited) == ("medium-coding", "small-general")


def test_a_model_configured_already_is_left_out() -> None:
    base = config({"have": {"model": "/models/org/m", "port": 8001}}, default_model="have")
    model = found("org/m")
    assert configured_key(base, MODELS_DIR, model) == "have"
    assert configured_key(base, MODELS_DIR, found("org/other")) is None
    result = add_found_models(base, [model, found("org/other")], MODELS_DIR, gpu_total_bytes=None)
    assert result.added == ("other",)
    assert result.config.default_model == "have"


def test_the_saved_config_is_valid_and_loads_back(tmp_path: Path) -> None:
    base = default_config()
    models = [found("org1/Qwen2.5-7B"), found("org2/Qwen2.5-7B", trust_remote_code=True)]
    result = add_found_models(
        base, models, tmp_path / "models", gpu_total_bytes=24 * GIB, replace_examples=True
    )
    path = tmp_path / "config.yaml"
    save_config(result.config, path)
    loaded = load_config(path)
    assert loaded == result.config
    assert list(loaded.models) == ["qwen2.5-7b", "qwen2.5-7b-2"]
    assert resolve_model(loaded, "org2/Qwen2.5-7B") == "qwen2.5-7b-2"
    assert loaded.docker.models_dir == tmp_path / "models"


def test_compose_models_are_added_and_a_replaced_key_is_said() -> None:
    base = config(
        {
            "a": {"model": "/models/a", "port": 8001},
            "keep": {"model": "/models/keep", "port": 8002},
        },
        default_model="keep",
        docker={"hf_cache": "/hf"},
    )
    imported = Config.model_validate(
        {
            "docker": {"image": "vllm/vllm-openai:v0.6.4"},
            "default_model": "a",
            "models": {
                "a": {"model": "/models/a2", "port": 8003},
                "c": {"model": "/models/c", "port": 8004},
            },
        }
    )
    result = add_compose_models(base, imported)
    assert result.added == ("a", "c") and result.replaced == ("a",)
    assert result.config.models["a"].model == "/models/a2"  # type: ignore[union-attr]
    assert result.config.docker.image == "vllm/vllm-openai:v0.6.4"
    assert result.config.docker.hf_cache == Path("/hf")  # not set by the compose file: kept
    assert result.config.docker.models_dir == MODELS_DIR
    assert result.config.default_model == "keep"


def test_a_compose_import_that_clashes_is_refused_in_one_sentence() -> None:
    base = config({"a": {"model": "/models/a", "port": 8001}})
    imported = Config.model_validate({"models": {"c": {"model": "/models/c", "port": 8001}}})
    with pytest.raises(ConfigError) as info:
        add_compose_models(base, imported)
    assert "port 8001 is already used by model 'a'" in info.value.message
    assert info.value.hint
