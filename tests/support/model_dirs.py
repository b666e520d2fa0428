"""Model directories made on the spot: tiny ``config.json`` files and small fake weights.

``model_tree`` lays out a models folder holding the layouts "Find my models" must find (flat,
sharded with an index, ``org/name``, three levels deep, a Hugging Face cache snapshot) and the
junk it must ignore (an empty folder, a config without weights, a broken symlink, invalid JSON,
a hidden folder, ...). ``FOUND`` lists the paths the scan must report for it, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: A small Llama-shaped config (bfloat16, GQA).
LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "torch_dtype": "bfloat16",
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
}
#: A GPTQ-quantised Qwen2 config.
QWEN_GPTQ: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "torch_dtype": "float16",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "quantization_config": {"quant_method": "gptq", "bits": 4},
}
#: Only a model type, custom code, no shapes.
CUSTOM: dict[str, Any] = {"model_type": "phi3", "auto_map": {"AutoConfig": "x.Config"}}

#: What the scan must find in ``model_tree``, sorted by path.
FOUND = (
    "Qwen/Qwen2.5-0.5B-GPTQ",
    "custom-code",
    "medium/general/deep-model",
    "models--meta-llama--Llama-3.2-1B/snapshots/abc123",
    "org/sharded-model",
    "tiny-llama",
)


def make_model(
    root: Path,
    rel: str,
    config: dict[str, Any] | str | None = None,
    weights: dict[str, int] | None = None,
) -> Path:
    """A directory ``rel`` under ``root`` with ``config.json`` (a dict as JSON, a string as is,
    None: none) and weight files of the given sizes (default: one 1000-byte safetensors)."""
    directory = root / rel
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "config.json").write_text(text, encoding="utf-8")
    for name, size in (weights if weights is not None else {"model.safetensors": 1000}).items():
        (directory / name).write_bytes(b"\0" * size)
    return directory


def make_index(
    directory: Path, shards: list[str], name: str = "model.safetensors.index.json"
) -> None:
    """A weights index naming ``shards``."""
    weight_map = {f"layer.{i}.weight": shard for i, shard in enumerate(shards)}
    (directory / name).write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")


def model_tree(root: Path) -> Path:
    """The models folder described in the module docstring, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    make_model(root, "tiny-llama", LLAMA, {"model.safetensors": 2000, "tokenizer.json": 50})
    sharded = make_model(
        root,
        "org/sharded-model",
        LLAMA,
        {
            "model-00001-of-00002.safetensors": 300,
            "model-00002-of-00002.safetensors": 200,
            "consolidated.safetensors": 999,  # not in the index: not counted
        },
    )
    make_index(sharded, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    make_model(root, "Qwen/Qwen2.5-0.5B-GPTQ", QWEN_GPTQ, {"pytorch_model.bin": 700})
    make_model(root, "medium/general/deep-model", LLAMA, {"model.pt": 400})
    make_model(root, "custom-code", CUSTOM, {"model.gguf": 300, "training_args.bin": 9})
    make_model(root, "models--meta-llama--Llama-3.2-1B/snapshots/abc123", LLAMA)
    # Junk.
    (root / "empty").mkdir()
    make_model(root, "config-only", LLAMA, {})
    make_model(root, "no-config", None)
    make_model(root, "training-leftovers", LLAMA, {"training_args.bin": 10, "optimizer.pt": 10})
    make_model(root, "bad-json", "{not json", {"model.safetensors": 10})
    make_model(root, "list-json", "[1, 2]", {"model.safetensors": 10})
    make_model(root, ".hidden/secret-model", LLAMA)
    make_model(root, "a/b/c/too-deep", LLAMA)
    broken = make_model(root, "broken-weights", LLAMA, {})
    (broken / "model.safetensors").symlink_to(root / "nowhere.safetensors")
    (root / "dangling").symlink_to(root / "no-such-folder")
    (root / "loop").symlink_to(root)  # a symlink loop: followed once, never again
    incomplete = make_model(root, "incomplete", LLAMA, {"model-00001-of-00002.safetensors": 10})
    make_index(incomplete, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    unreadable = make_model(root, "config-is-a-folder", None)
    (unreadable / "config.json").mkdir()
    return root
