"""Models on other Docker engines (``hosts:`` and a model's ``host:``): not run by this version.

The config already describes hosts (and validates them), and the SSH tunnel, the engine over
SSH and the GPU reading over SSH exist as adapters; the supervisor still drives one engine.
Until it drives several, a model set to run elsewhere is refused with a sentence and a hint,
never started on the local engine by mistake.
"""

from __future__ import annotations

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.errors import ConfigError

LOCAL = "local"


def refuse_other_hosts(config: Config) -> None:
    """ConfigError when a model is set to run anywhere but on the local engine."""
    elsewhere = {
        key: model.host
        for key, model in config.models.items()
        if isinstance(model, ModelConfig) and model.host != LOCAL
    }
    if not elsewhere:
        return
    where = ", ".join(f"{key} on {host!r}" for key, host in sorted(elsewhere.items()))
    raise ConfigError(
        f"running models on other hosts is not in this version yet ({where})",
        "Remove `host:` from those models to run them on this machine's Docker engine, "
        "or run ryx-desktop on that host.",
    )
