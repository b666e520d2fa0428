"""Config: the typed models of what to run, and loading, checking and saving them."""

from ryx_desktop.config._schema import (  # noqa: I001  (the schema first: core.spec imports it)
    AnyModelConfig,
    Config,
    DockerConfig,
    ExternalModelConfig,
    GpuConfig,
    ModelConfig,
    ProxyConfig,
    dotted,
    is_loopback,
)
from ryx_desktop.config._api_key import api_key_problem
from ryx_desktop.config._hosts import HostConfig
from ryx_desktop.config._compose import export_compose, import_compose
from ryx_desktop.config._compose_merge import Merged, merge_imported
from ryx_desktop.config._defaults import default_config
from ryx_desktop.config._fingerprint import (
    MISSING,
    ConfigChangedError,
    Fingerprint,
    fingerprint_of,
    read_config,
)
from ryx_desktop.config._loader import (
    ConfigFileError,
    load_config,
    parse_config,
    validation_problems,
)
from ryx_desktop.config._paths import config_path
from ryx_desktop.config._save import dump_config, save_config
from ryx_desktop.config._watch import ConfigWatcher, FileChange, WatchEvent

__all__ = [
    "MISSING",
    "AnyModelConfig",
    "Config",
    "ConfigChangedError",
    "ConfigFileError",
    "ConfigWatcher",
    "DockerConfig",
    "ExternalModelConfig",
    "FileChange",
    "Fingerprint",
    "GpuConfig",
    "HostConfig",
    "Merged",
    "ModelConfig",
    "ProxyConfig",
    "WatchEvent",
    "api_key_problem",
    "config_path",
    "default_config",
    "dotted",
    "dump_config",
    "export_compose",
    "fingerprint_of",
    "import_compose",
    "is_loopback",
    "load_config",
    "merge_imported",
    "parse_config",
    "read_config",
    "save_config",
    "validation_problems",
]
