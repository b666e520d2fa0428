"""Finding model directories on disk: the layouts that hold models, and the junk that does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ryx_desktop.adapters.model_scan import find_models, scan_models
from ryx_desktop.core.errors import RyxError
from tests.support.model_dirs import FOUND, LLAMA, make_index, make_model, model_tree


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return model_tree(tmp_path / "models")


def test_finds_every_layout_and_ignores_the_junk(models: Path) -> None:
    found = scan_models(models)
    assert [m.path for m in found] == list(FOUND)


def test_each_model_is_described_from_its_config_and_weights(models: Path) -> None:
    by_path = {m.path: m for m in scan_models(models)}

    tiny = by_path["tiny-llama"]
    assert (tiny.name, tiny.architecture, tiny.quantization) == (
        "tiny-llama",
        "LlamaForCausalLM",
        "bfloat16",
    )
    assert tiny.weights_bytes == 2000  # the tokenizer is not weights
    assert tiny.context == 8192  # 131072 declared, capped
    assert tiny.parameters is not None and 1.2e9 < tiny.parameters < 1.3e9

    # Only the shards the index names count; the consolidated copy beside them does not.
    assert by_path["org/sharded-model"].weights_bytes == 500

    gptq = by_path["Qwen/Qwen2.5-0.5B-GPTQ"]
    assert (gptq.name, gptq.quantization, gptq.weights_bytes) == (
        "Qwen2.5-0.5B-GPTQ",
        "gptq 4-bit",
        700,
    )
    assert gptq.quantized and not tiny.quantized

    custom = by_path["custom-code"]
    assert custom.architecture == "phi3"  # no architectures: the model type
    assert custom.weights_bytes == 300  # the gguf; training_args.bin is not weights
    assert custom.trust_remote_code and custom.parameters is None and custom.context is None

    # A Hugging Face cache snapshot is named after its repository, not its revision.
    assert by_path["models--meta-llama--Llama-3.2-1B/snapshots/abc123"].name == "Llama-3.2-1B"


def test_a_model_folder_chosen_itself_is_found_as_dot(models: Path) -> None:
    found = scan_models(models / "tiny-llama")
    assert [(m.path, m.name) for m in found] == [(".", "tiny-llama")]


def test_a_model_directory_is_not_searched_further(tmp_path: Path) -> None:
    outer = make_model(tmp_path, "outer", LLAMA)
    make_model(outer, "original", LLAMA, {"consolidated.pt": 10})
    assert [m.path for m in scan_models(tmp_path)] == ["outer"]


def test_a_model_reached_through_a_link_is_listed_once_by_its_real_place(tmp_path: Path) -> None:
    make_model(tmp_path, "real-model", LLAMA)
    (tmp_path / "a-link").symlink_to(tmp_path / "real-model")
    assert [m.path for m in scan_models(tmp_path)] == ["real-model"]


def test_shards_missing_from_their_index_fall_back_to_another_format(tmp_path: Path) -> None:
    both = make_model(tmp_path, "both", LLAMA, {"a.safetensors": 5, "pytorch_model.bin": 80})
    make_index(both, ["a.safetensors", "b.safetensors"])
    assert [(m.path, m.weights_bytes) for m in scan_models(tmp_path)] == [("both", 80)]


def test_depth_is_limited(tmp_path: Path) -> None:
    make_model(tmp_path, "a/b/model", LLAMA)
    assert scan_models(tmp_path, max_depth=2) == []
    assert [m.path for m in scan_models(tmp_path, max_depth=3)] == ["a/b/model"]


def test_a_missing_folder_says_so_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(RyxError) as info:
        scan_models(tmp_path / "nope")
    assert info.value.message == f"the models folder {tmp_path / 'nope'} does not exist"
    assert "Browse" in info.value.hint


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RyxError, match="is a file, not a folder"):
        scan_models(tmp_path / "file")


def test_find_models_runs_off_the_loop(models: Path) -> None:
    found = asyncio.run(find_models(models))
    assert [m.path for m in found] == list(FOUND)
