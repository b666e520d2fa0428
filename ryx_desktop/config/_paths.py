"""Where ryx-desktop keeps things: the config file (``--config``, then ``RYX_CONFIG``, then the
user config dir) and its caches (the user cache dir)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "ryx-desktop"
ENV_VAR = "RYX_CONFIG"
FILE_NAME = "config.yaml"


def config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path:
    """The config file to use: ``cli_path`` wins, then ``$RYX_CONFIG``, then the platform default.

    The default is ``~/.config/ryx-desktop/config.yaml`` on Linux.
    """
    if cli_path:
        return Path(cli_path).expanduser()
    from_env = environ.get(ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / FILE_NAME


def default_vllm_cache() -> Path:
    """Where vLLM's compile cache lives on the host: ``~/.cache/ryx-desktop/vllm`` on Linux."""
    return platformdirs.user_cache_path(APP_NAME, appauthor=False) / "vllm"
