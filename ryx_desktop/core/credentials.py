"""The API key a model's own vLLM server requires, read from its config.

vLLM started with ``--api-key KEY`` (or ``VLLM_API_KEY`` in its environment) refuses every
``/v1/*`` request without ``Authorization: Bearer KEY``, ``/v1/models`` included. The probes and
the proxy send it; it never goes into an ``Instance`` snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

from ryx_desktop.config import Config, ModelConfig

API_KEY_FLAGS = ("--api-key", "--api_key")
API_KEY_ENV = "VLLM_API_KEY"


def model_api_key(model: ModelConfig) -> str | None:
    """The key ``model``'s server requires, or None when it requires none.

    vLLM takes ``--api-key`` first (it accepts several keys; any one is enough) and reads
    ``VLLM_API_KEY`` only when the flag is absent.
    """
    from_flag = _flag_value(model.extra_args)
    if from_flag is not None:
        return from_flag or None
    return model.env.get(API_KEY_ENV) or None


def api_key_of(config: Config, key: str) -> str | None:
    """The API key of model ``key`` in ``config``; None for external models and unknown keys."""
    model = config.models.get(key)
    return model_api_key(model) if isinstance(model, ModelConfig) else None


def _flag_value(args: Sequence[str]) -> str | None:
    """The first value of ``--api-key`` in ``args``: "" when the flag has none, None when absent."""
    for index, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in API_KEY_FLAGS:
            continue
        if eq:
            return value
        following = args[index + 1] if index + 1 < len(args) else ""
        return "" if following.startswith("-") else following
    return None
