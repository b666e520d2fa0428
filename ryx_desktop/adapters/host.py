"""Facts about this machine for the sleep planner: available RAM and the size of a model's weights.

Read from ``/proc/meminfo`` and the model folder on disk, off the event loop. Anything that
cannot be read is None, never an exception: the planner then plans without it.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from pathlib import Path

#: Files that hold a model's weights (Hugging Face layouts).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class LocalHostFacts:
    """``HostFacts`` of the machine this process runs on (a local Docker engine)."""

    def __init__(self, meminfo: Path = Path("/proc/meminfo"), executor: Executor | None = None):
        self._meminfo = meminfo
        self._executor = executor

    async def available_ram(self) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, read_available_ram, self._meminfo)

    async def weights_bytes(self, host_path: str) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, sum_weights, Path(host_path))


def read_available_ram(meminfo: Path) -> int | None:
    """``MemAvailable`` in bytes, or None when the file or the line is not there."""
    try:
        text = meminfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = 1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1
                return int(parts[1]) * unit
    return None


def sum_weights(folder: Path) -> int | None:
    """Total size of the weight files under ``folder``; None when there are none to read."""
    total, found = 0, False
    try:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                if name.endswith(_WEIGHT_SUFFIXES):
                    total += (Path(root) / name).stat().st_size
                    found = True
    except OSError:
        return None
    return total if found else None
