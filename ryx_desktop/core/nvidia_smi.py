"""GPU readings from ``nvidia-smi``'s CSV: the two commands to run and their output as a GpuReading.

For a machine whose GPUs NVML cannot reach from here (another host, over SSH), ``nvidia-smi``
answers the same questions: one query lists each GPU's memory, utilisation and temperature, the
other each compute process with its host PID and memory, which is how a model's VRAM is found
(its container's host PIDs, as with NVML). Both print MiB without units
(``--format=csv,noheader,nounits``). Pure parsing, no I/O: the probe in
``adapters/remote_gpu.py`` runs the commands.

A value nvidia-smi cannot give (``[N/A]``, ``[Not Supported]``, ``N/A``, any ``[...]``) is None,
as the NVML probe reports it; a line that cannot be read is skipped and kept with the reason; a
machine without GPUs or without ``nvidia-smi`` gets a reading that says so.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ryx_desktop.core.gpu import GpuProcess, GpuReading, GpuStatus

MIB = 1024**2
GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "temperature.gpu",
)
APP_FIELDS = ("gpu_uuid", "pid", "used_memory")
CSV_FORMAT = "--format=csv,noheader,nounits"
#: Every GPU: one line each, in GPU_FIELDS order.
GPU_QUERY: tuple[str, ...] = ("nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", CSV_FORMAT)
#: Every compute process on every GPU (host PIDs): one line each, in APP_FIELDS order.
APP_QUERY: tuple[str, ...] = (
    "nvidia-smi",
    f"--query-compute-apps={','.join(APP_FIELDS)}",
    CSV_FORMAT,
)

NO_GPU = "No NVIDIA GPU found"
NO_GPU_HINT = "Install the NVIDIA driver and check that `nvidia-smi` lists your GPU."
FAILED_HINT = "Check that `nvidia-smi` works for this user on that machine."
UNREADABLE_HINT = (
    "Check that `nvidia-smi --query-gpu=index,name --format=csv` prints one line per GPU there."
)
#: nvidia-smi's own words for "this machine has no GPU" (exit status 6).
NO_DEVICES = "no devices were found"
#: What a shell answers for a program it cannot find.
NOT_FOUND_STATUS = 127
#: Cells that mean "no such process", not a process.
NO_PROCESSES = "no running processes found"
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """What a command left: its exit status, standard output and standard error."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A line of nvidia-smi's output that could not be read, and why."""

    query: str  # "gpus" or "processes"
    number: int  # 1-based, in that query's output
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class SmiGpu:
    """One line of the GPU query; None where nvidia-smi printed N/A."""

    index: int
    uuid: str | None
    name: str
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    utilization_percent: float | None
    temperature_c: float | None

    def status(self, processes: tuple[GpuProcess, ...] = ()) -> GpuStatus:
        """This GPU as the NVML probe reports one."""
        return GpuStatus(
            index=self.index,
            name=self.name,
            uuid=self.uuid,
            total_bytes=self.total_bytes,
            used_bytes=self.used_bytes,
            free_bytes=self.free_bytes,
            utilization_percent=self.utilization_percent,
            processes=processes,
        )


@dataclass(frozen=True, slots=True)
class SmiApp:
    """One line of the process query: a host PID on the GPU ``gpu_uuid``."""

    gpu_uuid: str
    pid: int
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuRows:
    """The GPU query's lines read; ``no_devices`` when nvidia-smi said there is no GPU."""

    rows: tuple[SmiGpu, ...] = ()
    skipped: tuple[SkippedLine, ...] = ()
    no_devices: bool = False


@dataclass(frozen=True, slots=True)
class AppRows:
    """The process query's lines read."""

    rows: tuple[SmiApp, ...] = ()
    skipped: tuple[SkippedLine, ...] = ()


@dataclass(frozen=True, slots=True)
class SmiReading:
    """Both queries together: the reading for the gauge and the planner, and what was left out.

    ``processes_unknown`` says why the GPUs carry no processes although some may run (the
    process query failed); empty when it answered.
    """

    reading: GpuReading
    gpus: tuple[SmiGpu, ...] = ()
    skipped: tuple[SkippedLine, ...] = ()
    processes_unknown: str = ""


class _BadCell(ValueError):
    """A cell that is neither a value nor N/A; its message is the reason the line is skipped."""


def is_not_available(cell: str) -> bool:
    """True for what nvidia-smi prints instead of a value: ``[N/A]``, ``[Not Supported]``, ..."""
    return cell in ("", "N/A") or (cell.startswith("[") and cell.endswith("]"))


def parse_gpus(text: str) -> GpuRows:
    """The lines of ``GPU_QUERY``'s output, in index order."""
    rows: dict[int, SmiGpu] = {}
    skipped: list[SkippedLine] = []
    no_devices = False
    for number, line in _lines(text):
        if NO_DEVICES in line.lower():
            no_devices = True
            continue
        try:
            row = _gpu_row(_cells(line, len(GPU_FIELDS), name_at=2))
            if row.index in rows:
                raise _BadCell(f"GPU {row.index} is listed twice")
        except _BadCell as exc:
            skipped.append(SkippedLine("gpus", number, line, str(exc)))
            continue
        rows[row.index] = row
    return GpuRows(tuple(rows[i] for i in sorted(rows)), tuple(skipped), no_devices)


def parse_apps(text: str, gpu_uuids: Collection[str] | None = None) -> AppRows:
    """The lines of ``APP_QUERY``'s output (none when no process uses a GPU).

    With ``gpu_uuids`` (the GPUs the GPU query listed), a process on another GPU is skipped.
    """
    rows: list[SmiApp] = []
    skipped: list[SkippedLine] = []
    for number, line in _lines(text):
        if NO_PROCESSES in line.lower():
            continue
        try:
            uuid, pid, used = _cells(line, len(APP_FIELDS))
            if is_not_available(uuid):
                raise _BadCell("the process has no GPU UUID")
            if gpu_uuids is not None and uuid not in gpu_uuids:
                raise _BadCell(f"no GPU listed has the UUID {uuid}")
            rows.append(SmiApp(uuid, _whole(pid, "pid"), _mib(used, "used_memory")))
        except _BadCell as exc:
            skipped.append(SkippedLine("processes", number, line, str(exc)))
    return AppRows(tuple(rows), tuple(skipped))


def build_reading(gpus: CommandOutput, apps: CommandOutput | None) -> SmiReading:
    """The reading from both commands' output; ``apps`` None when it was not run.

    The GPU query decides whether there is anything to read; the processes are joined to their
    GPU by UUID. When only the process query fails, the GPUs are read without processes and
    ``processes_unknown`` says why.
    """
    parsed = parse_gpus(gpus.stdout)
    if not parsed.rows:
        return SmiReading(_nothing_read(gpus, parsed), skipped=parsed.skipped)
    skipped = list(parsed.skipped)
    processes: dict[str, dict[int, int | None]] = {
        row.uuid: {} for row in parsed.rows if row.uuid is not None
    }
    unknown = ""
    if apps is None:
        unknown = "the process query was not run"
    elif apps.returncode != 0:
        unknown = f"nvidia-smi's process query failed (exit {apps.returncode}): {_reason(apps)}"
    else:
        app_rows = parse_apps(apps.stdout, processes.keys())
        skipped += app_rows.skipped
        for app in app_rows.rows:
            on_gpu = processes[app.gpu_uuid]
            if on_gpu.get(app.pid) is None:  # listed twice: keep the known amount
                on_gpu[app.pid] = app.used_bytes
    statuses = tuple(
        row.status(_processes(processes.get(row.uuid, {}) if row.uuid else {}))
        for row in parsed.rows
    )
    return SmiReading(GpuReading(gpus=statuses), parsed.rows, tuple(skipped), unknown)


def _nothing_read(gpus: CommandOutput, parsed: GpuRows) -> GpuReading:
    """Why the GPU query gave no GPU, as a reading for the gauge."""
    said = f"{gpus.stdout}\n{gpus.stderr}".lower()
    if parsed.no_devices or NO_DEVICES in said:
        return GpuReading(message=f"{NO_GPU} (nvidia-smi: No devices were found)", hint=NO_GPU_HINT)
    if gpus.returncode == NOT_FOUND_STATUS:
        return GpuReading(message=f"{NO_GPU} (nvidia-smi is not installed)", hint=NO_GPU_HINT)
    if gpus.returncode != 0:
        return GpuReading(
            message=f"nvidia-smi failed (exit {gpus.returncode}): {_reason(gpus)}",
            hint=FAILED_HINT,
        )
    if parsed.skipped:
        first = parsed.skipped[0]
        return GpuReading(
            message=f"nvidia-smi's GPU list could not be read (line {first.number}: "
            f"{first.reason})",
            hint=UNREADABLE_HINT,
        )
    return GpuReading(message=f"{NO_GPU} (nvidia-smi listed none)", hint=NO_GPU_HINT)


def _processes(used: dict[int, int | None]) -> tuple[GpuProcess, ...]:
    return tuple(GpuProcess(pid=pid, used_bytes=b) for pid, b in sorted(used.items()))


def _lines(text: str) -> list[tuple[int, str]]:
    """The non-blank lines of ``text`` with their 1-based numbers."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _cells(line: str, count: int, *, name_at: int | None = None) -> list[str]:
    """``count`` cells of a CSV line; extra commas belong to the cell at ``name_at``."""
    cells = [cell.strip() for cell in line.split(",")]
    if name_at is not None and len(cells) > count:
        extra = len(cells) - count
        cells[name_at : name_at + extra + 1] = [",".join(cells[name_at : name_at + extra + 1])]
    if len(cells) != count:
        raise _BadCell(f"expected {count} comma-separated values, got {len(cells)}")
    return cells


def _gpu_row(cells: Sequence[str]) -> SmiGpu:
    index_cell, uuid, name, total, used, free, utilization, temperature = cells
    index = _whole(index_cell, "index")
    return SmiGpu(
        index=index,
        uuid=None if is_not_available(uuid) else uuid,
        name=f"GPU {index}" if is_not_available(name) else name,
        total_bytes=_mib(total, "memory.total"),
        used_bytes=_mib(used, "memory.used"),
        free_bytes=_mib(free, "memory.free"),
        utilization_percent=_number(utilization, "utilization.gpu"),
        temperature_c=_number(temperature, "temperature.gpu"),
    )


def _whole(cell: str, field: str) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise _BadCell(f"{field} {cell!r} is not a whole number") from None
    if value < 0:
        raise _BadCell(f"{field} {cell!r} is negative")
    return value


def _number(cell: str, field: str) -> float | None:
    if is_not_available(cell):
        return None
    try:
        value = float(cell)
    except ValueError:
        raise _BadCell(f"{field} {cell!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise _BadCell(f"{field} {cell!r} is out of range")
    return value


def _mib(cell: str, field: str) -> int | None:
    value = _number(cell, field)
    return None if value is None else round(value * MIB)


def _reason(output: CommandOutput) -> str:
    """The line that says why a command failed: the last one of stderr, else of stdout."""
    for text in (output.stderr, output.stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            return last if len(last) <= MAX_REASON else last[: MAX_REASON - 1] + "…"
    return "it printed nothing"
