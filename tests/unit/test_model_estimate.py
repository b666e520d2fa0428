"""The GPU memory estimate and the gpu_memory_utilization suggested from it."""

from __future__ import annotations

import pytest

from ryx_desktop.core.found_model import describe
from ryx_desktop.core.model_estimate import (
    CUDA_CONTEXT_BYTES,
    GIB,
    ModelShape,
    context_for,
    estimate_need,
    estimate_parameters,
    fits,
    gpu_weights_bytes,
    kv_cache_bytes,
    shape_of,
    suggest_share,
)

#: Qwen2.5-7B-Instruct's config.json (the fields that matter): 7.61 B parameters.
QWEN_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 152064,
}


def test_need_is_weights_and_kv_plus_a_fifth_plus_the_cuda_context() -> None:
    assert estimate_need(10 * GIB) == 12 * GIB + CUDA_CONTEXT_BYTES
    assert estimate_need(8 * GIB, 2 * GIB) == 12 * GIB + CUDA_CONTEXT_BYTES


def test_shapes_from_a_config() -> None:
    shape = shape_of(QWEN_7B)
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (28, 28, 4, 128)
    assert shape.max_position == 32768 and not shape.tied_embeddings


def test_shapes_from_a_multimodal_text_config_and_defaults() -> None:
    config = {
        "model_type": "llava",
        "text_config": {"hidden_size": 4096, "num_attention_heads": 32},
    }
    shape = shape_of(config)
    assert shape.kv_heads == 32  # no GQA given: every head has its own K and V
    assert shape.head_dim == 128


def test_kv_cache_for_the_default_context() -> None:
    shape = shape_of(QWEN_7B)
    context = context_for(shape)
    assert context == 8192  # 32768 declared, capped
    assert kv_cache_bytes(shape, context) == 2 * 28 * 4 * 128 * 2 * 8192
    assert kv_cache_bytes(ModelShape(layers=2), 8192) == 0  # shapes unknown
    assert kv_cache_bytes(shape, None) == 0
    assert context_for(ModelShape(max_position=2048)) == 2048
    assert context_for(ModelShape()) is None


def test_parameters_of_a_dense_model_from_its_shapes() -> None:
    parameters = estimate_parameters(shape_of(QWEN_7B), 0, "bfloat16", quantized=False)
    assert parameters is not None
    assert parameters == pytest.approx(7.61e9, rel=0.01)


def test_parameters_from_the_weights_when_the_shapes_do_not_tell() -> None:
    moe = shape_of({**QWEN_7B, "num_experts": 8})
    assert estimate_parameters(moe, 4 * 10**9, "bfloat16", quantized=False) == 2 * 10**9
    assert estimate_parameters(moe, 4 * 10**9, "float32", quantized=False) == 10**9
    assert estimate_parameters(moe, 4 * 10**9, "bfloat16", quantized=True) is None
    assert estimate_parameters(ModelShape(), 4 * 10**9, None, quantized=False) is None


def test_float32_weights_load_as_float16() -> None:
    assert gpu_weights_bytes(8 * GIB, "float32", quantized=False) == 4 * GIB
    assert gpu_weights_bytes(8 * GIB, "torch.float32", quantized=False) == 4 * GIB
    assert gpu_weights_bytes(8 * GIB, "bfloat16", quantized=False) == 8 * GIB
    assert gpu_weights_bytes(8 * GIB, "float32", quantized=True) == 8 * GIB


@pytest.mark.parametrize(
    ("need", "total", "share"),
    [
        (13 * GIB, 24 * GIB, 0.55),  # 0.54 rounded up to the next 0.05
        (12 * GIB, 24 * GIB, 0.5),  # exactly 0.5 stays 0.5
        (GIB // 10, 80 * GIB, 0.1),  # tiny: never below 0.1
        (40 * GIB, 24 * GIB, 0.95),  # too big: capped (and said not to fit)
        (13 * GIB, None, 0.9),  # no GPU known: vLLM's default
    ],
)
def test_suggested_share(need: int, total: int | None, share: float) -> None:
    assert suggest_share(need, total) == share


def test_fits() -> None:
    assert fits(20 * GIB, 24 * GIB) is True
    assert fits(23 * GIB, 24 * GIB) is False  # above the 0.95 share
    assert fits(23 * GIB, None) is None


def test_describe_a_7b_model() -> None:
    weights = 15 * GIB
    model = describe("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct", QWEN_7B, weights)
    kv = 2 * 28 * 4 * 128 * 2 * 8192
    assert model.need_bytes == estimate_need(weights, kv)
    assert model.architecture == "Qwen2ForCausalLM" and model.quantization == "bfloat16"
    assert suggest_share(model.need_bytes, 24 * GIB) == 0.85  # 19.5 GiB of 24


def test_quantisation_wording() -> None:
    awq = describe("a", "a", {"quantization_config": {"quant_method": "awq", "w_bit": 4}}, 1)
    fp8 = describe("b", "b", {"quantization_config": {"quant_method": "fp8"}}, 1)
    bnb = describe(
        "c", "c", {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, 1
    )
    new_dtype = describe("d", "d", {"dtype": "float16"}, 1)
    assert [m.quantization for m in (awq, fp8, bnb, new_dtype)] == [
        "awq 4-bit",
        "fp8",
        "bitsandbytes 4-bit",
        "float16",
    ]
    assert awq.quantized and not new_dtype.quantized
