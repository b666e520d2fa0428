"""The GPU probe over NVML (nvidia-ml-py): memory, utilisation and processes of each GPU.

NVML is loaded and initialised on the first read, never at import, and every NVML call runs on
the probe's own single worker thread, so the event loop (the Qt thread in the desktop app)
never waits on the driver. A field the GPU cannot report (not supported, no permission, ...) is
None; a machine without the NVIDIA driver gets a reading that says so instead of an error, and
the probe retries starting NVML only every ``retry_every`` reads after a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from typing import Any

from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus

log = logging.getLogger(__name__)

NO_GPU = "No NVIDIA GPU found"
NO_GPU_HINT = "Install the NVIDIA driver and check that `nvidia-smi` lists your GPU."
_NVML_HINT = "Check that `nvidia-smi` works for your user."
_NOT_AVAILABLE = (2**64 - 1, 2**32 - 1)  # NVML_VALUE_NOT_AVAILABLE as unsigned long long / int
_PROCESS_LISTS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")


class NvmlGpuProbe:
    """``GpuProbe`` on NVML.

    ``nvml`` is the ``pynvml`` module to use (default: imported on the first read); tests pass
    a fake one. After NVML fails to start, the next ``retry_every`` reads return the same
    answer without touching the driver; None never retries.
    """

    def __init__(self, nvml: Any | None = None, *, retry_every: int | None = 30) -> None:
        self._nvml: Any = nvml  # the pynvml module; None until the first read imports it
        self._retry_every = retry_every
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ryx-nvml"
        )
        self._closed = False
        # Touched only on the worker thread.
        self._initialised = False
        self._failure: GpuReading | None = None
        self._reads_since_failure = 0
        self._memory_v2 = True

    async def read(self) -> GpuReading:
        """Every GPU's memory, utilisation and processes; never raises for a missing driver."""
        if self._closed:
            return GpuReading(message="The GPU probe is closed.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read_sync)

    async def close(self) -> None:
        """Shut NVML down (when it was started) and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._shutdown_sync)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- worker thread -------------------------------------------------------------------

    def _read_sync(self) -> GpuReading:
        if not self._initialised:
            if self._failure is not None and not self._retry_due():
                self._reads_since_failure += 1
                return self._failure
            failure = self._init_sync()
            if failure is not None:
                return self._failed(failure)
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            self._shutdown_sync()
            return self._failed(_nvml_failure("NVML could not count the GPUs", exc))
        if count == 0:
            self._shutdown_sync()
            return self._failed(GpuReading(message=NO_GPU, hint=NO_GPU_HINT))
        self._failure = None
        return GpuReading(gpus=tuple(self._gpu_sync(index) for index in range(count)))

    def _retry_due(self) -> bool:
        return self._retry_every is not None and self._reads_since_failure >= self._retry_every

    def _failed(self, reading: GpuReading) -> GpuReading:
        self._failure = reading
        self._reads_since_failure = 0
        return reading

    def _init_sync(self) -> GpuReading | None:
        """Start NVML; the reading to return instead when it cannot start."""
        if self._nvml is None:
            try:
                import pynvml  # loaded on first use, never at import
            except ImportError:
                return GpuReading(
                    message="GPU monitoring is unavailable: the nvidia-ml-py package is missing",
                    hint="Install it with `pip install nvidia-ml-py`.",
                )
            self._nvml = pynvml
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            if isinstance(exc, nvml.NVMLError_LibraryNotFound | nvml.NVMLError_DriverNotLoaded):
                log.info("no NVIDIA driver: %s", exc)
                return GpuReading(message=NO_GPU, hint=NO_GPU_HINT)
            return _nvml_failure("NVML could not start", exc)
        except OSError as exc:  # a broken libnvidia-ml that loads but cannot be used
            return GpuReading(message=f"NVML could not start: {exc}", hint=_NVML_HINT)
        self._initialised = True
        return None

    def _shutdown_sync(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _gpu_sync(self, index: int) -> GpuStatus:
        handle = self._field("nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            return GpuStatus(index=index, name=f"GPU {index}")
        name = self._field("nvmlDeviceGetName", handle)
        uuid = self._field("nvmlDeviceGetUUID", handle)
        memory = self._memory_sync(handle)
        rates = self._field("nvmlDeviceGetUtilizationRates", handle)
        utilization = _known(rates.gpu) if rates is not None else None
        return GpuStatus(
            index=index,
            name=_text(name) if name is not None else f"GPU {index}",
            uuid=_text(uuid) if uuid is not None else None,
            total_bytes=_known(memory.total) if memory is not None else None,
            used_bytes=_known(memory.used) if memory is not None else None,
            free_bytes=_known(memory.free) if memory is not None else None,
            utilization_percent=float(utilization) if utilization is not None else None,
            processes=self._processes_sync(handle),
        )

    def _memory_sync(self, handle: Any) -> Any:
        # Version 2 leaves the driver's reserved memory out of "used", as nvidia-smi does.
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if self._memory_v2 and version is not None:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            except nvml.NVMLError_FunctionNotFound:
                self._memory_v2 = False  # a driver older than 510
            except nvml.NVMLError:
                pass
        return self._field("nvmlDeviceGetMemoryInfo", handle)

    def _processes_sync(self, handle: Any) -> tuple[GpuProcess, ...]:
        used: dict[int, int | None] = {}
        for listing in _PROCESS_LISTS:
            for process in self._process_list(listing, handle):
                pid = int(process.pid)
                if used.get(pid) is None:
                    used[pid] = _known(process.usedGpuMemory)
        return tuple(GpuProcess(pid=pid, used_bytes=b) for pid, b in sorted(used.items()))

    def _process_list(self, listing: str, handle: Any) -> list[Any]:
        nvml = self._nvml
        mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
        try:
            return list(getattr(nvml, listing)(handle))
        except nvml.NVMLError as exc:
            log.debug("%s: %s", listing, exc)
            return []
        except Exception as exc:
            if mismatch is None or not isinstance(exc, mismatch):
                raise
            # The driver predates the _v3 call the unversioned name maps to.
            return list(self._field(f"{listing}_v2", handle) or [])

    def _field(self, function: str, *args: Any) -> Any:
        """``nvml.<function>(*args)``, or None when NVML cannot tell."""
        nvml = self._nvml
        try:
            return getattr(nvml, function)(*args)
        except nvml.NVMLError as exc:
            log.debug("%s: %s", function, exc)
            return None


def _known(value: Any) -> int | None:
    """An NVML number, or None for NVML_VALUE_NOT_AVAILABLE (and None itself)."""
    if value is None:
        return None
    number = int(value)
    return None if number in _NOT_AVAILABLE else number


def _text(value: Any) -> str:
    """Old nvidia-ml-py versions return bytes for strings."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_failure(what: str, exc: Exception) -> GpuReading:
    return GpuReading(message=f"{what}: {exc}", hint=_NVML_HINT)
