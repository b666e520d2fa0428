"""Adapters: the only code that talks to the outside world (Docker, HTTP health probes).

Each implements a Protocol of ``ryx_desktop.core.ports`` and raises ``ryx_desktop.core.errors``
types only.
"""

from ryx_desktop.adapters.docker_runtime import DockerRuntime
from ryx_desktop.adapters.health import HttpHealthProbe
from ryx_desktop.adapters.nvml import NvmlGpuProbe

__all__ = ["DockerRuntime", "HttpHealthProbe", "NvmlGpuProbe"]
