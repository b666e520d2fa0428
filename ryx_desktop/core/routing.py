"""Finds the model a user or a request means: by key, served name or alias."""

from __future__ import annotations

from ryx_desktop.config import Config, ModelConfig


def served_name(config: Config, key: str) -> str:
    """The name the model's server answers to (vLLM's ``--served-model-name``)."""
    model = config.models[key]
    if isinstance(model, ModelConfig):
        return model.effective_served_name
    return model.served_name or key


def resolve_model(config: Config, name: str) -> str | None:
    """The key of the model called ``name`` (key first, then served name, then alias)."""
    if name in config.models:
        return name
    for key in config.models:
        if served_name(config, key) == name:
            return key
    for key, model in config.models.items():
        if name in model.aliases:
            return key
    return None
