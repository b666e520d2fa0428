"""A stand-in for the ``pynvml`` module (nvidia-ml-py) that needs no NVIDIA driver.

It is the real module minus the C library: the error classes (``NVMLError`` and the subclasses
``NVMLError(value)`` maps to), the ``NVML_*`` constants, the ctypes result structures and the
process objects all come from the installed nvidia-ml-py; only the functions that would call
``libnvidia-ml`` are replaced, with the same names and signatures. Like the real library, every
device call before ``nvmlInit`` (or after the last ``nvmlShutdown``) raises
``NVMLError_Uninitialized``.

Tests configure GPUs, their processes and failures (``fail`` maps a function name to the NVML
error code it raises, module-wide or per GPU), and read ``calls`` and ``threads`` to see what was
called and on which threads.
"""

from __future__ import annotations

import threading
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml as real

GiB = 1024**3

#: Names copied from the real module: errors, constants, structures, helpers.
_SHARED_PREFIXES = ("NVML_", "NVMLError", "c_nvml")
_SHARED_NAMES = (
    "NVMLLibraryMismatchError",
    "nvmlMemory_v2",
    "nvmlFriendlyObject",
    "nvmlExceptionClass",
)


@dataclass
class FakeProcess:
    """A process with a context on a GPU; ``used`` may be None (WDDM) or NOT_AVAILABLE."""

    pid: int
    used: int | None


@dataclass
class FakeGpu:
    """One GPU's answers. ``fail`` maps a function name to an NVML error code for this GPU."""

    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-5f3e8c1a-0000-0000-0000-000000000000"
    total: int = 24 * GiB
    used: int = 2 * GiB
    reserved: int = 0
    utilization: int = 37
    memory_utilization: int = 12
    compute: list[FakeProcess] = field(default_factory=list)
    graphics: list[FakeProcess] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.total - self.used - self.reserved


@dataclass(frozen=True)
class FakeHandle:
    """What ``nvmlDeviceGetHandleByIndex`` returns: opaque to callers, like ``c_nvmlDevice_t``."""

    index: int


class FakePynvml(types.ModuleType):
    """The ``pynvml`` module with the driver faked; pass it where the real module would go."""

    def __init__(self, gpus: list[FakeGpu] | None = None, *, old_memory_api: bool = False) -> None:
        super().__init__("pynvml")
        for name in dir(real):
            if name.startswith(_SHARED_PREFIXES) or name in _SHARED_NAMES:
                setattr(self, name, getattr(real, name))
        self.gpus: list[FakeGpu] = list(gpus or [])
        #: Module-wide failures: function name -> NVML error code (e.g. nvmlInit -> 12).
        self.fail: dict[str, int] = {}
        #: Drivers before 510 have no nvmlDeviceGetMemoryInfo_v2.
        self.old_memory_api = old_memory_api
        self.calls: Counter[str] = Counter()
        self.threads: set[int] = set()
        self._refcount = 0
        self._lock = threading.Lock()

    # -- bookkeeping ------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return self._refcount > 0

    def _enter(self, name: str, handle: FakeHandle | None = None) -> FakeGpu | None:
        """Count the call, apply configured failures and the library's init rule."""
        with self._lock:
            self.calls[name] += 1
            self.threads.add(threading.get_ident())
        if name in self.fail:
            raise real.NVMLError(self.fail[name])
        if name not in ("nvmlInit", "nvmlInitWithFlags", "nvmlErrorString") and not self._refcount:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        if not isinstance(handle, FakeHandle) or not 0 <= handle.index < len(self.gpus):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if name in gpu.fail:
            raise real.NVMLError(gpu.fail[name])
        return gpu

    # -- library ----------------------------------------------------------------------------

    def nvmlInitWithFlags(self, flags: int) -> None:
        self._enter("nvmlInitWithFlags")
        self._refcount += 1

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self._refcount += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._refcount -= 1

    def nvmlErrorString(self, result: int) -> str:
        self._enter("nvmlErrorString")
        return str(real.NVMLError._errcode_to_string.get(result, "Unknown Error"))

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "550.54.14"

    # -- devices ----------------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if "nvmlDeviceGetHandleByIndex" in gpu.fail:
            raise real.NVMLError(gpu.fail["nvmlDeviceGetHandleByIndex"])
        return FakeHandle(index)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        gpu = self._gpu("nvmlDeviceGetName", handle)
        return gpu.name

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: int | None = None) -> Any:
        if version and self.old_memory_api:
            # The real binding looks up nvmlDeviceGetMemoryInfo_v2, absent from old drivers.
            self._enter("nvmlDeviceGetMemoryInfo")
            raise real.NVMLError(real.NVML_ERROR_FUNCTION_NOT_FOUND)
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        if not version:
            # Version 1 counts the driver's reserved memory as used.
            return real.c_nvmlMemory_t(total=gpu.total, free=gpu.free, used=gpu.used + gpu.reserved)
        return real.c_nvmlMemory_v2_t(
            version=version, total=gpu.total, reserved=gpu.reserved, free=gpu.free, used=gpu.used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return real.c_nvmlUtilization_t(gpu=gpu.utilization, memory=gpu.memory_utilization)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses", handle, compute=True)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeHandle) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v2", handle, compute=True)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses", handle, compute=False)

    def nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: FakeHandle) -> list[Any]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses_v2", handle, compute=False)

    def _gpu(self, name: str, handle: FakeHandle) -> FakeGpu:
        gpu = self._enter(name, handle)
        assert gpu is not None
        return gpu

    def _processes(self, name: str, handle: FakeHandle, *, compute: bool) -> list[Any]:
        try:
            gpu = self._gpu(name, handle)
        except real.NVMLError_FunctionNotFound as exc:
            if name.endswith("_v2"):
                raise
            # What the real module's @throwOnVersionMismatch makes of a missing _v3 symbol.
            raise real.NVMLLibraryMismatchError(
                "Unversioned function called and the pyNVML version does not match the NVML lib "
                f"version. Either use matching pyNVML and NVML lib versions or use a versioned "
                f"function such as {name}_v2"
            ) from exc
        listed = gpu.compute if compute else gpu.graphics
        return [
            real.nvmlFriendlyObject(
                {"pid": p.pid, "usedGpuMemory": p.used, "gpuInstanceId": 0, "computeInstanceId": 0}
            )
            for p in listed
        ]
