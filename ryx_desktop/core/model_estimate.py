"""How much GPU memory a model needs, and the ``gpu_memory_utilization`` to give it.

Pure arithmetic on what a model folder tells (the weights' size on disk, ``config.json``'s
shapes). The estimate is deliberately simple, and errs on the generous side:

    need = W + KV + 20 % * (W + KV) + 1 GiB

* ``W``: the weights as they sit in GPU memory: their size on disk, halved for an unquantised
  float32 checkpoint (vLLM's ``dtype: auto`` loads those as float16);
* ``KV``: the KV cache for one sequence of ``context`` tokens, with a 16-bit cache:
  ``2 (K and V) * layers * kv_heads * head_dim * 2 bytes * context``; 0 when the config does
  not give the shapes (the 20 % then covers a short context);
* 20 %: activations, CUDA graphs and the allocator's slack;
* 1 GiB: the CUDA context and the libraries' workspaces.

``context`` is ``min(max_position_embeddings, DEFAULT_CONTEXT)``: vLLM refuses to start when one
whole ``max_model_len`` sequence does not fit, and many models declare 32k to 128k tokens, so
an imported model gets ``max_model_len`` = that context.

The share suggested for a GPU of ``total`` bytes is ``need / total``, rounded up to a multiple
of 0.05 and kept within [0.1, 0.95]; 0.9 (vLLM's own default) when no GPU size is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
#: The CUDA context and library workspaces, whatever the model.
CUDA_CONTEXT_BYTES = GIB
#: Activations, CUDA graphs and allocator slack, as a share of weights plus KV cache.
OVERHEAD = 0.20
#: The longest context an imported model is given (its ``max_model_len``).
DEFAULT_CONTEXT = 8192
#: Bytes per KV-cache element (vLLM's default cache dtype is 16-bit).
KV_ELEMENT_BYTES = 2
MIN_SHARE, MAX_SHARE, SHARE_STEP = 0.1, 0.95, 0.05
#: vLLM's default when nothing better is known.
DEFAULT_SHARE = 0.9

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "float8": 1}
_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The sizes ``config.json`` gives (None where it does not)."""

    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    intermediate: int | None = None
    vocab: int | None = None
    max_position: int | None = None
    tied_embeddings: bool = False
    mixture_of_experts: bool = False


def shape_of(config: Mapping[str, Any]) -> ModelShape:
    """The shapes in a ``config.json`` (a multimodal model's ``text_config`` fills the gaps)."""
    text = config.get("text_config")
    inner: Mapping[str, Any] = text if isinstance(text, Mapping) else {}

    def number(*names: str) -> int | None:
        for source in (config, inner):
            for name in names:
                value = source.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
        return None

    hidden = number("hidden_size", "d_model", "n_embd")
    heads = number("num_attention_heads", "n_head", "num_heads")
    head_dim = number("head_dim")
    if head_dim is None and hidden is not None and heads is not None and hidden % heads == 0:
        head_dim = hidden // heads
    tied = config.get("tie_word_embeddings", inner.get("tie_word_embeddings", False))
    return ModelShape(
        layers=number("num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=number("num_key_value_heads", "num_kv_heads") or heads,
        head_dim=head_dim,
        intermediate=number("intermediate_size", "ffn_dim", "n_inner"),
        vocab=number("vocab_size"),
        max_position=number("max_position_embeddings", "n_positions", "max_seq_len"),
        tied_embeddings=bool(tied),
        mixture_of_experts=any(number(key) for key in _MOE_KEYS),
    )


def context_for(shape: ModelShape) -> int | None:
    """The context an imported model is given: its own limit, at most ``DEFAULT_CONTEXT``."""
    if shape.max_position is None:
        return None
    return min(shape.max_position, DEFAULT_CONTEXT)


def kv_cache_bytes(shape: ModelShape, context: int | None) -> int:
    """Bytes of KV cache for one sequence of ``context`` tokens; 0 when the shapes are unknown."""
    if context is None or None in (shape.layers, shape.kv_heads, shape.head_dim):
        return 0
    assert shape.layers is not None and shape.kv_heads is not None and shape.head_dim is not None
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * KV_ELEMENT_BYTES
    return per_token * context


def dtype_bytes(dtype: str | None) -> int | None:
    """Bytes per parameter of a ``torch_dtype`` such as ``bfloat16``; None when unknown."""
    if not dtype:
        return None
    return _DTYPE_BYTES.get(dtype.removeprefix("torch.").lower())


def gpu_weights_bytes(disk_bytes: int, dtype: str | None, quantized: bool) -> int:
    """The weights' size in GPU memory: as on disk, but float32 checkpoints load as float16."""
    if not quantized and dtype_bytes(dtype) == 4:
        return disk_bytes // 2
    return disk_bytes


def estimate_need(weights_bytes: int, kv_bytes: int = 0) -> int:
    """GPU memory the model needs: ``(W + KV) * 1.2 + 1 GiB`` (see the module docstring)."""
    core = weights_bytes + kv_bytes
    return core + math.ceil(core * OVERHEAD) + CUDA_CONTEXT_BYTES


def suggest_share(need_bytes: int, gpu_total_bytes: int | None) -> float:
    """The ``gpu_memory_utilization`` for a model needing ``need_bytes`` on a GPU of that size.

    ``need / total`` rounded up to 0.05, within [0.1, 0.95]; 0.9 when the GPU's size is unknown.
    """
    if not gpu_total_bytes or gpu_total_bytes <= 0:
        return DEFAULT_SHARE
    steps = math.ceil(round(need_bytes / gpu_total_bytes / SHARE_STEP, 6))
    share = steps * SHARE_STEP
    return round(min(MAX_SHARE, max(MIN_SHARE, share)), 2)


def fits(need_bytes: int, gpu_total_bytes: int | None) -> bool | None:
    """Whether the need fits the largest share ever suggested; None when the GPU is unknown."""
    if not gpu_total_bytes or gpu_total_bytes <= 0:
        return None
    return need_bytes <= gpu_total_bytes * MAX_SHARE


def estimate_parameters(
    shape: ModelShape, disk_bytes: int, dtype: str | None, quantized: bool
) -> int | None:
    """The parameter count: from the shapes for a dense transformer, else from the weights'
    size for an unquantised checkpoint of known dtype; None when neither tells.

    A dense layer holds the attention projections (``hidden * (heads + 2 * kv_heads) * head_dim``
    for Q, K, V plus ``heads * head_dim * hidden`` for O) and a gated MLP (``3 * hidden *
    intermediate``); the embeddings add ``vocab * hidden``, twice when the output head is not tied.
    """
    s = shape
    if not s.mixture_of_experts and None not in (
        s.layers,
        s.hidden,
        s.heads,
        s.kv_heads,
        s.head_dim,
        s.intermediate,
        s.vocab,
    ):
        assert s.layers and s.hidden and s.heads and s.kv_heads and s.head_dim
        assert s.intermediate and s.vocab
        attention = s.hidden * (s.heads + 2 * s.kv_heads) * s.head_dim
        attention += s.heads * s.head_dim * s.hidden
        mlp = 3 * s.hidden * s.intermediate
        embeddings = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
        return s.layers * (attention + mlp) + embeddings
    size = dtype_bytes(dtype)
    if quantized or size is None or disk_bytes <= 0:
        return None
    return disk_bytes // size
