"""Make a tiny causal language model on disk, with random weights: no hub, no download.

Run by the real-vLLM test tier with the vLLM venv's Python (it has ``transformers``, ``tokenizers``
and ``torch``)::

    python make_model.py OUT_DIR [--head-dim 64] [--shards 4] [--seed 0]

The model is a Llama (hidden 128, 2 layers, 2 heads: head_dim 64, which vLLM's CPU attention
supports) with a byte-level BPE tokenizer trained here on generated text, a chat template, and its
weights saved as several safetensors shards so that vLLM prints shard-by-shard load progress.
``--head-dim 16`` makes one that vLLM's CPU backend loads but cannot run (its first forward pass
fails), for the tests of readiness. Writes ``OUT_DIR`` atomically (a temporary folder renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = [
    "the",
    "a",
    "model",
    "answers",
    "quickly",
    "slowly",
    "tray",
    "proxy",
    "docker",
    "engine",
    "vllm",
    "token",
    "cache",
    "gpu",
    "memory",
    "hello",
    "world",
    "switch",
    "sleep",
    "wake",
    "ready",
    "loading",
    "failed",
    "health",
    "metrics",
    "request",
    "stream",
    "chat",
]


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) for _ in range(lines)]


def make_tokenizer(out: Path, seed: int, vocab_size: int) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    return int(tok.get_vocab_size())


def make_model(out: Path, *, head_dim: int, shards: int, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = make_tokenizer(out, seed, vocab_size=2048)
    heads = 2
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=head_dim * heads,
        intermediate_size=head_dim * heads * 2,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    # A shard limit a little above an even split gives `shards` files (never fewer than one).
    limit = max(1, total // max(1, shards) + 1)
    model.save_pretrained(str(out), max_shard_size=limit, safe_serialization=True)
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 16}) + "\n"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: Path = args.out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        make_model(tmp, head_dim=args.head_dim, shards=args.shards, seed=args.seed)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
