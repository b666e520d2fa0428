"""The built-in config: the three models of the original setup (``compose/model-router.yml``)."""

from __future__ import annotations

from ryx_desktop.config._schema import Config, ModelConfig


def _model(name: str, path: str, alias: str, category: str, size: str, port: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        model=path,
        aliases=(alias,),
        category=category,
        size=size,
        port=port,
        gpu_memory_utilization=0.3,
        max_model_len=4096,
        devices="all",
        extra_args=("--trust-remote-code",),
    )


def default_config() -> Config:
    """The config used when no file exists: Qwen 2.5 7B, Qwen 2.5 Coder 7B and Qwen 2.5 3B."""
    return Config(
        default_model="medium-general",
        models={
            "medium-general": _model(
                "Qwen 2.5 7B GPTQ",
                "/models/medium/general/qwen2.5-7b-gptq",
                "general",
                "general",
                "medium",
                8001,
            ),
            "medium-coding": _model(
                "Qwen 2.5 Coder 7B GPTQ",
                "/models/medium/coding/qwen2.5-coder-7b-gptq",
                "coding",
                "coding",
                "medium",
                8002,
            ),
            "small-general": _model(
                "Qwen 2.5 3B",
                "/models/small/general/qwen2.5-3b",
                "small",
                "general",
                "small",
                8003,
            ),
        },
    )
