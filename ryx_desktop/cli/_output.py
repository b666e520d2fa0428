"""How the command line shows snapshots: the status and hosts tables, and start progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.gpu import NO_GPU, gpu_budget
from ryx_desktop.core.host_report import HostReport, docker_summary, gpu_summary
from ryx_desktop.core.states import Instance, InstanceState, ProgressPhase

_MARK = {
    InstanceState.READY: "●",
    InstanceState.STARTING: "◐",
    InstanceState.UNHEALTHY: "▲",
    InstanceState.FAILED: "✖",
    InstanceState.UNREACHABLE: "✖",
}


def status_table(instances: list[Instance], config: Config) -> str:
    """A fixed-width table, one model a row, with failures spelled out below it.

    The HOST column says which engine each model runs on (``any``: not placed yet, ``-``: an
    external server)."""
    rows = [("MODEL", "HOST", "STATE", "PORT", "GPU BUDGET", "SERVED AS", "NOTE")]
    for inst in instances:
        model = config.models[inst.key]
        budget = _budget(model) if isinstance(model, ModelConfig) else "external"
        state = f"{_MARK.get(inst.state, '○')} {inst.state.value}"
        if inst.progress is not None and inst.progress.percent is not None:
            state += f" {inst.progress.percent:.0f}%"
        note = inst.note
        if inst.failure is not None:
            note = inst.failure.message
        rows.append(
            (
                inst.key,
                inst.host or "-",
                state,
                str(inst.port or "-"),
                budget,
                inst.served_name,
                note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    if config.default_model:
        lines.append(f"selected: {config.default_model}")
    return "\n".join(line.rstrip() for line in lines)


def hosts_table(reports: Sequence[HostReport], *, anywhere: Sequence[str] = ()) -> str:
    """One engine a row (HOST, ENGINE, STATE, DOCKER, GPUS, MODELS); why a host is unreachable,
    and its hint, below the table (a long reason would push the columns apart). ``anywhere``
    are the models with ``host: any``."""
    rows = [("HOST", "ENGINE", "STATE", "DOCKER", "GPUS", "MODELS")]
    for report in reports:
        state = "\u25cf reachable" if report.reachable else "\u2716 unreachable"
        rows.append(
            (
                report.name,
                report.url,
                state,
                docker_summary(report),
                gpu_summary(report),
                _host_models(report),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    if anywhere:
        lines.append(f"placed on any host with room: {', '.join(anywhere)}")
    for report in reports:
        if not report.reachable:
            lines.append(f"{report.name}: {report.reason}")
            if report.hint:
                lines.append(f"  hint: {report.hint}")
    return "\n".join(line.rstrip() for line in lines)


def _host_models(report: HostReport) -> str:
    models = ", ".join(report.models) or "-"
    if report.containers_running:
        models += f" ({report.containers_running} running)"
    return models


def _budget(model: ModelConfig) -> str:
    share = gpu_budget(model)
    if share is None:
        return NO_GPU
    gpus = "all GPUs" if model.devices == "all" else "GPU " + ",".join(map(str, model.devices))
    return f"{share:.0%} of {gpus}"


class ProgressPrinter:
    """Prints one line per visible change while ``start`` waits, e.g. ``loading 50%``."""

    def __init__(self, key: str, out: TextIO) -> None:
        self._key = key
        self._out = out
        self._last: dict[str, str] = {}

    def __call__(self, inst: Instance) -> None:
        line = self._describe(inst)
        if line and self._last.get(inst.key) != line:
            self._last[inst.key] = line
            self._out.write(line + "\n")
            self._out.flush()

    def _describe(self, inst: Instance) -> str:
        if inst.key != self._key:  # other models matter only when they change state
            note = f" ({inst.note})" if inst.note else ""
            return f"{inst.key}: {inst.state.value}{note}"
        if inst.state is InstanceState.STARTING and inst.progress is not None:
            p = inst.progress
            pct = f" {p.percent:.0f}%" if p.percent is not None else ""
            detail = f" ({p.detail})" if p.detail else ""
            return f"{inst.key}: {_PHASE[p.phase]}{pct}{detail}"
        return f"{inst.key}: {inst.state.value}"


_PHASE = {
    ProgressPhase.PULL: "pulling image",
    ProgressPhase.CREATE: "creating container",
    ProgressPhase.LOAD: "loading",
    ProgressPhase.WAKE: "waking",
}
