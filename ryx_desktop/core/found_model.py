"""A model directory found on disk, described from its ``config.json`` and its weights' size.

``describe`` is pure: the scanner (``adapters/model_scan.py``) reads the folder and hands over
the parsed ``config.json`` and the weights' total size; this module reads the architecture,
the quantisation, the shapes, and estimates the parameters and the GPU memory it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ryx_desktop.core.model_estimate import (
    context_for,
    estimate_need,
    estimate_parameters,
    gpu_weights_bytes,
    kv_cache_bytes,
    shape_of,
)


@dataclass(frozen=True, slots=True)
class FoundModel:
    """One model directory in the Hugging Face layout (``config.json`` plus weights)."""

    path: str  # relative to the models folder, with "/" ("." for the folder itself)
    name: str  # the directory's own name
    architecture: str  # "Qwen2ForCausalLM"; the model_type when no architectures; "" unknown
    weights_bytes: int  # the weight files' size on disk
    quantization: str  # "gptq 4-bit", "awq", "fp8", or the dtype ("bfloat16"); "" unknown
    parameters: int | None  # estimated parameter count; None when nothing tells
    context: int | None  # the max_model_len an import gives it; None: vLLM's default
    need_bytes: int  # estimated GPU memory (see core/model_estimate.py)
    trust_remote_code: bool = False  # config.json maps its classes to the repo's own code
    quantized: bool = False


def describe(path: str, name: str, config: Mapping[str, Any], weights_bytes: int) -> FoundModel:
    """The model in directory ``path`` (named ``name``) from its ``config.json`` contents."""
    quant = _quantization(config)
    dtype = _dtype(config)
    shape = shape_of(config)
    context = context_for(shape)
    gpu_weights = gpu_weights_bytes(weights_bytes, dtype, quantized=bool(quant))
    return FoundModel(
        path=path,
        name=name,
        architecture=_architecture(config),
        weights_bytes=weights_bytes,
        quantization=quant or dtype or "",
        parameters=estimate_parameters(shape, weights_bytes, dtype, quantized=bool(quant)),
        context=context,
        need_bytes=estimate_need(gpu_weights, kv_cache_bytes(shape, context)),
        trust_remote_code=isinstance(config.get("auto_map"), Mapping),
        quantized=bool(quant),
    )


def _architecture(config: Mapping[str, Any]) -> str:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else ""


def _quantization(config: Mapping[str, Any]) -> str:
    """``gptq 4-bit`` from ``quantization_config`` (or the older ``compression_config``)."""
    for field in ("quantization_config", "compression_config"):
        section = config.get(field)
        if not isinstance(section, Mapping):
            continue
        method = section.get("quant_method") or section.get("format") or "quantized"
        bits = section.get("bits") or section.get("w_bit")
        if section.get("load_in_4bit") is True:
            bits = 4
        elif section.get("load_in_8bit") is True:
            bits = 8
        if isinstance(bits, int) and not isinstance(bits, bool):
            return f"{method} {bits}-bit"
        return str(method)
    return ""


def _dtype(config: Mapping[str, Any]) -> str | None:
    """``torch_dtype`` (called ``dtype`` by newer transformers), else the text config's."""
    text = config.get("text_config")
    for source in (config, text if isinstance(text, Mapping) else {}):
        for field in ("torch_dtype", "dtype"):
            value = source.get(field)
            if isinstance(value, str) and value:
                return value.removeprefix("torch.")
    return None
