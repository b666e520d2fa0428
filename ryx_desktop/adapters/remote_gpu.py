"""The GPU probe for a machine NVML cannot reach from here: ``nvidia-smi`` run by a command runner.

``CommandGpuProbe`` is a ``GpuProbe`` that runs the two queries of ``core/nvidia_smi.py`` through
an injected async runner (argv in; exit status, stdout and stderr out): for another host, one
that runs them over that host's SSH connection; ``local_runner`` runs them here. PIDs in the
answer are that machine's host PIDs, so a model's VRAM is found from its container's PIDs on
that engine exactly as with NVML. A runner that fails, hangs past ``timeout`` or raises gives a
reading that says why; ``read`` never raises for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ryx_desktop.core.gpu import GpuReading
from ryx_desktop.core.nvidia_smi import (
    APP_QUERY,
    FAILED_HINT,
    GPU_QUERY,
    NOT_FOUND_STATUS,
    CommandOutput,
    SmiReading,
    build_reading,
)

log = logging.getLogger(__name__)

#: Runs argv; returns (exit status, standard output, standard error).
CommandRunner = Callable[[list[str]], Awaitable[tuple[int, str, str]]]


async def local_runner(argv: list[str]) -> tuple[int, str, str]:
    """Run ``argv`` on this machine (found on PATH); a missing program exits 127 like a shell's."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        return NOT_FOUND_STATUS, "", f"{argv[0]}: command not found"
    except PermissionError as exc:
        return 126, "", f"{argv[0]}: {exc.strerror or exc}"
    try:
        out, err = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    code = process.returncode if process.returncode is not None else -1
    return code, out.decode(errors="replace"), err.decode(errors="replace")


class CommandGpuProbe:
    """``GpuProbe`` on ``nvidia-smi``, run by ``run``; each command may take ``timeout`` seconds.

    The runner belongs to whoever built the probe: ``close`` only stops further reads.
    """

    def __init__(self, run: CommandRunner, *, timeout: float = 15.0) -> None:
        self._run = run
        self._timeout = timeout
        self._closed = False
        self._last_skipped: frozenset[str] = frozenset()
        self.last: SmiReading | None = None  # the latest answer, skipped lines included

    async def read(self) -> GpuReading:
        """Every GPU's memory, utilisation and processes; never raises for a missing GPU."""
        return (await self.read_smi()).reading

    async def read_smi(self) -> SmiReading:
        """The latest answer with what ``read`` leaves out (temperatures, skipped lines)."""
        if self._closed:
            return SmiReading(GpuReading(message="The GPU probe is closed."))
        gpus = await self._command(list(GPU_QUERY))
        if isinstance(gpus, GpuReading):
            smi = SmiReading(gpus)
        else:
            apps = await self._command(list(APP_QUERY)) if gpus.returncode == 0 else None
            smi = build_reading(gpus, apps if isinstance(apps, CommandOutput) else None)
            if isinstance(apps, GpuReading):
                smi = SmiReading(smi.reading, smi.gpus, smi.skipped, apps.message)
        self._log(smi)
        self.last = smi
        return smi

    async def close(self) -> None:
        """Stop reading; later reads say the probe is closed."""
        self._closed = True

    async def _command(self, argv: list[str]) -> CommandOutput | GpuReading:
        """What ``argv`` printed, or a reading that says why it could not be run."""
        try:
            code, out, err = await asyncio.wait_for(self._run(argv), self._timeout)
        except TimeoutError:
            return GpuReading(
                message=f"nvidia-smi did not answer within {self._timeout:g} s",
                hint=FAILED_HINT,
            )
        except Exception as exc:  # the runner's own failure (SSH down, ...): a reading, no raise
            log.debug("running %s failed", argv, exc_info=True)
            return GpuReading(message=f"nvidia-smi could not be run: {exc}", hint=FAILED_HINT)
        return CommandOutput(code, out, err)

    def _log(self, smi: SmiReading) -> None:
        """Say once (until it changes) which lines were skipped and why."""
        skipped = frozenset(f"{s.query} line {s.number}: {s.reason}" for s in smi.skipped)
        if skipped and skipped != self._last_skipped:
            log.warning("nvidia-smi lines skipped: %s", "; ".join(sorted(skipped)))
        if smi.processes_unknown:
            log.debug("GPU processes unknown: %s", smi.processes_unknown)
        self._last_skipped = skipped
