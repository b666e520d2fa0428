"""Config: the typed models of what to run, and loading, checking and saving them."""

from ryx_desktop.config._schema import (
    AnyModelConfig,
    Config,
    DockerConfig,
    ExternalModelConfig,
    GpuConfig,
    ModelConfig,
    ProxyConfig,
    is_loopback,
)

__all__ = [
    "AnyModelConfig",
    "Config",
    "DockerConfig",
    "ExternalModelConfig",
    "GpuConfig",
    "ModelConfig",
    "ProxyConfig",
    "is_loopback",
]
