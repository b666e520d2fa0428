"""Run the benchmark: the same workloads directly, through ``ryx-desktop serve`` and the bare proxy.

``python -m bench.run [--quick] [--rounds R] [--proxy NAME] [--pin] [--wait-quiet S]``

It starts ``bench.upstream``, ``ryx-desktop serve`` (with a temporary config that proxies the
upstream as an external model) and ``bench.bare_proxy`` as subprocesses, then for every round and
every workload runs the load against direct, ryx and bare one after the other (interleaved, so
that a slow phase of the machine hits all three alike). It prints a markdown table of medians over
the rounds and a PASS/FAIL line per target. Besides the four workloads of the issue it runs a
paced stream (``--no-paced`` leaves it out): the upstream spaces each stream's events 2 ms apart,
so that every event reaches the proxy on its own, as model output does.

Ratios and added times are medians of the per-round values (each round's proxied run against the
same round's direct run), not ratios of medians.

The proxies (``--proxy``, repeatable): ``ryx`` is ``serve`` as users run it (on uvloop where that
is installed), ``ryx-asyncio`` the same on asyncio's own loop (``RYX_EVENT_LOOP=asyncio``),
``bare`` the reference proxy on asyncio's loop and ``bare-uvloop`` on uvloop; ``both`` (the
default) is ryx and bare, ``all`` all four.

CPU time of a process is ``utime + stime`` from ``/proc/<pid>/stat`` (all its threads, plus any
child processes alive at both samples), read right before and right after each timed window, in
clock ticks (``os.sysconf('SC_CLK_TCK')``, usually 10 ms). The proxy's CPU per request is that
delta over the requests of the window, its CPU per chunk the same delta over the streamed chunks:
the per-request work (parsing, connecting, headers) is spread over the chunks too. The machine's
busy time from ``/proc/stat`` minus all of the benchmark's processes is reported as other load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import load
from bench.load import LoadResult, Workload

ROOT = Path(__file__).resolve().parents[1]
SERVED_NAME = "bench-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
STREAM_64 = "stream 256 c=64"
STREAM_PACED = "stream 256 c=64 paced"
PACED_MS = 2.0  # between two events of one paced stream: 64 streams make 32,000 events/s
NOISE_CPUS = 0.1  # other work on the machine above which a run counts as noisy
PROXIES = ("ryx", "ryx-asyncio", "bare", "bare-uvloop")
PROXY_SETS = {"both": ["ryx", "bare"], "all": list(PROXIES), **{p: [p] for p in PROXIES}}
#: Pairs compared round by round when both ran: (proxy, against).
VERSUS = (("ryx", "bare"), ("ryx", "bare-uvloop"), ("ryx", "ryx-asyncio"))

# The targets the proxy must meet.
MAX_ADDED_LATENCY_MS = 0.6  # p50, non-streaming, one client
MIN_RPS_RATIO_32 = 0.45  # requests/s at 32 clients, against direct
MAX_CPU_US_PER_CHUNK = 5.0  # proxy CPU per streamed chunk, 64 clients


def workloads(duration: float, warmup: float, paced: bool) -> list[Workload]:
    """The four workloads of the issue, and the paced stream unless ``paced`` is false."""

    def one(name: str, stream: bool, max_tokens: int, concurrency: int, ms: float = 0) -> Workload:
        return Workload(
            name, stream, max_tokens, concurrency, duration, None, warmup, SERVED_NAME, ms
        )

    chosen = [
        one("json c=1", False, 16, 1),
        one("json c=32", False, 16, 32),
        one("stream 128 c=1", True, 128, 1),
        one(STREAM_64, True, 256, 64),
    ]
    if paced:
        chosen.append(one(STREAM_PACED, True, 256, 64, PACED_MS))
    return chosen


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_ticks(pid: int) -> int:
    """``utime + stime`` of ``pid`` and its live descendants, in clock ticks."""
    total = 0
    for one in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += _own_ticks(one)
    return total


def _own_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5) (utime, stime); ``fields`` starts at field 3 (state).
    return int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    """The pids of all live descendants of ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Service:
    """A subprocess that serves HTTP on ``port``."""

    name: str
    argv: list[str]
    port: int
    log: Path
    cpus: set[int] | None = None
    env: dict[str, str] | None = None  # added to this process's environment
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        argv = self.argv
        if self.cpus is not None:
            argv = ["taskset", "-c", ",".join(map(str, sorted(self.cpus))), *argv]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **self.env} if self.env else None,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``GET /health`` until it answers 200; fail if the process exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(request)
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def ryx_available() -> bool:
    """Whether this checkout's ``ryx-desktop`` has the ``serve`` command."""
    exe = Path(sys.executable).with_name("ryx-desktop")
    if not exe.exists():
        return False
    done = subprocess.run(
        [str(exe), "serve", "--help"], capture_output=True, check=False, timeout=30
    )
    return done.returncode == 0


def ryx_config(path: Path, port: int, upstream: str) -> None:
    """The benchmark config: one external model ``bench`` that is the upstream."""
    path.write_text(
        f"proxy: {{host: 127.0.0.1, port: {port}}}\n"
        "default_model: bench\n"
        "models:\n"
        f'  bench: {{url: "{upstream}", served_name: {SERVED_NAME}}}\n'
    )


def upstream_service(log: Path, cpus: set[int] | None = None) -> Service:
    """``bench.upstream`` on a free port, serving ``SERVED_NAME`` (not started yet)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    return Service("upstream", [*argv, "--served-name", SERVED_NAME], port, log, cpus=cpus)


@contextlib.contextmanager
def services(
    proxies: list[str], pin: bool, workdir: Path
) -> Iterator[tuple[Service, dict[str, Service]]]:
    """Start the upstream and the proxies; stop them all on the way out."""
    python = sys.executable
    upstream = upstream_service(workdir / "upstream.log", cpus={0} if pin else None)
    started: dict[str, Service] = {}
    for name in proxies:
        port = free_port()
        env = None
        if name.startswith("ryx"):
            config = workdir / f"{name}.yaml"
            ryx_config(config, port, upstream.url)
            exe = str(Path(python).with_name("ryx-desktop"))
            argv = [exe, "serve", "--config", str(config), "--host", "127.0.0.1"]
            argv += ["--port", str(port)]
            env = {"RYX_EVENT_LOOP": "asyncio" if name == "ryx-asyncio" else "uvloop"}
        else:
            argv = [python, "-m", "bench.bare_proxy", "--port", str(port)]
            argv += ["--upstream", upstream.url]
            if name == "bare-uvloop":
                argv.append("--uvloop")
        cpus = {1} if pin else None
        started[name] = Service(name, argv, port, workdir / f"{name}.log", cpus, env)
    everything = [upstream, *started.values()]
    try:
        for service in everything:
            service.start()
        for service in everything:
            service.wait_ready()
        yield upstream, started
    finally:
        for service in reversed(everything):
            service.stop()


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Run:
    """One load against one target, with the CPU ticks its processes spent in the window."""

    target: str
    result: LoadResult
    proxy_ticks: int | None
    upstream_ticks: int
    load_seconds: float  # CPU of this process (the load generator)
    foreign: float  # CPUs' worth of busy time that none of the benchmark's processes used


@dataclass
class Table:
    """All runs, by workload name and target, in round order."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)

    def add(self, workload: str, run: Run) -> None:
        self.runs.setdefault((workload, run.target), []).append(run)

    def get(self, workload: str, target: str) -> list[Run]:
        return self.runs.get((workload, target), [])


def busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (``/proc/stat``), steal time included.

    ``softirq`` is left out: on loopback most of it is the benchmark's own network traffic.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, _softirq, steal = map(int, fields[:8])
    return user + nice + system + irq + steal


def wait_quiet(limit: float, pids: list[int]) -> float:
    """Wait (at most ``limit`` seconds) for a second in which the machine does no other work than
    the idle ``pids`` beyond ``NOISE_CPUS``; return the other load of the last second measured."""
    deadline = time.monotonic() + limit
    while True:
        busy0, ours0 = busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
        time.sleep(1.0)
        busy1, ours1 = busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
        other = ((busy1 - busy0) - (ours1 - ours0)) / CLK_TCK
        if other <= NOISE_CPUS or time.monotonic() >= deadline:
            return other


def measure(
    target: str,
    url: str,
    workload: Workload,
    upstream: Service,
    proxies: dict[str, Service],
    client: load.ClientKind,
) -> Run:
    """Run ``workload`` against ``url`` and read the CPU time around its timed window."""
    proxy = proxies.get(target)

    def sample() -> tuple[int | None, int, float, int, int]:
        proxy_ticks = cpu_ticks(proxy.pid) if proxy is not None else None
        others = sum(cpu_ticks(p.pid) for p in proxies.values() if p is not proxy)
        times = os.times()
        return proxy_ticks, cpu_ticks(upstream.pid), times.user + times.system, others, busy_ticks()

    result = asyncio.run(load.run(url, workload, client=client, sample=sample))
    assert result.samples is not None
    (p0, u0, l0, o0, b0), (p1, u1, l1, o1, b1) = result.samples
    proxy_ticks = p1 - p0 if p0 is not None and p1 is not None else None
    ours = (proxy_ticks or 0) + (u1 - u0) + (o1 - o0) + (l1 - l0) * CLK_TCK
    foreign = max(0.0, ((b1 - b0) - ours) / CLK_TCK / result.elapsed) if result.elapsed else 0.0
    return Run(target, result, proxy_ticks, u1 - u0, l1 - l0, foreign)


def _cpu_us(ticks: int | None, count: int) -> float:
    if ticks is None or count == 0:
        return float("nan")
    return ticks / CLK_TCK / count * 1e6


def _median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def _spread(values: list[float]) -> float:
    """(max - min) / median, in percent: how much the rounds disagree."""
    clean = [v for v in values if v == v]
    if len(clean) < 2:
        return float("nan")
    middle = statistics.median(clean)
    return (max(clean) - min(clean)) / middle * 100 if middle else float("nan")


def headline(workload: Workload, runs: list[Run]) -> list[float]:
    """Per round: the latency figure at one client, requests/s else (for the spread)."""
    if workload.concurrency == 1:
        return [primary(workload, run.result) for run in runs]
    return [run.result.requests_per_s for run in runs]


def primary(workload: Workload, result: LoadResult) -> float:
    """The workload's latency figure in ms: TTFT p50 for a one-client stream, else p50."""
    if workload.stream and workload.concurrency == 1:
        return result.ttft(0.5) * 1e3
    return result.latency(0.5) * 1e3


# --- report ----------------------------------------------------------------------------------

Metric = Callable[[LoadResult], float]


def p50_ms(result: LoadResult) -> float:
    """Latency p50 in ms."""
    return result.latency(0.5) * 1e3


def rps(result: LoadResult) -> float:
    """Requests per second."""
    return result.requests_per_s


def _fmt(value: float, digits: int = 3, sign: str = "") -> str:
    """``value`` with fewer decimals the larger it is; ``sign="+"`` always shows the sign."""
    if value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:{sign},.0f}"
    if abs(value) >= 10:
        return f"{value:{sign}.{min(digits, 1)}f}"
    return f"{value:{sign}.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def per_round(
    table: Table, wl: Workload, proxy: str, metric: Metric, how: str, base: str = "direct"
) -> list[float]:
    """Per round, ``metric`` of the proxy run minus (``how="add"``) or over (``"ratio"``) that of
    the ``base`` run of the same round."""
    values: list[float] = []
    for b, p in zip(table.get(wl.name, base), table.get(wl.name, proxy), strict=False):
        mine, theirs = metric(p.result), metric(b.result)
        if how == "add":
            values.append(mine - theirs)
        elif theirs:
            values.append(mine / theirs)
    return values


def added(table: Table, wl: Workload, proxy: str, metric: Metric) -> float:
    """Median over rounds of ``metric(proxy run) - metric(direct run)``."""
    return _median(per_round(table, wl, proxy, metric, "add"))


def ratio(table: Table, wl: Workload, proxy: str, metric: Metric) -> float:
    """Median over rounds of ``metric(proxy run) / metric(direct run)``."""
    return _median(per_round(table, wl, proxy, metric, "ratio"))


def cpu_rounds(table: Table, wl: Workload, target: str, unit: str) -> list[float]:
    """Per round, the proxy's CPU µs per request or per chunk."""
    runs = table.get(wl.name, target)
    if unit == "chunk":
        return [_cpu_us(r.proxy_ticks, r.result.chunks) for r in runs]
    return [_cpu_us(r.proxy_ticks, r.result.ok) for r in runs]


def cpu_per(table: Table, wl: Workload, target: str, unit: str) -> float:
    """Median over rounds of the proxy's CPU µs per request or per chunk."""
    return _median(cpu_rounds(table, wl, target, unit))


def _range(values: list[float], digits: int) -> str:
    clean = [v for v in values if v == v]
    if len(clean) < 2:
        return ""
    return f" [rounds {_fmt(min(clean), digits)} .. {_fmt(max(clean), digits)}]"


def report(table: Table, wls: list[Workload], targets: list[str], rounds: int) -> str:
    """The markdown tables and the verdict lines."""
    proxies = [t for t in targets if t != "direct"]
    lines = [
        _row(["workload", "metric", *targets, *(f"{p} vs direct" for p in proxies)]),
        "|" + "---|" * (2 + len(targets) + len(proxies)),
    ]
    for wl in wls:
        rows: list[tuple[str, Metric, bool]] = [
            (
                "TTFT p50 ms" if wl.stream and wl.concurrency == 1 else "latency p50 ms",
                functools.partial(primary, wl),
                True,
            ),
            ("requests/s", lambda r: r.requests_per_s, False),
        ]
        if wl.stream:
            rows.append(("chunks/s", lambda r: r.chunks_per_s, False))
        for label, metric, additive in rows:
            cells = [wl.name, label]
            cells += [
                _fmt(_median([metric(r.result) for r in table.get(wl.name, t)])) for t in targets
            ]
            for proxy in proxies:
                if additive:
                    cells.append(f"{_fmt(added(table, wl, proxy, metric), sign='+')} ms")
                else:
                    cells.append(f"{_fmt(ratio(table, wl, proxy, metric), 2)}x")
            lines.append(_row(cells))

    lines += ["", _row(["workload", "CPU µs", *targets]), "|" + "---|" * (2 + len(targets))]
    for wl in wls:
        for unit in ["request", "chunk"] if wl.stream else ["request"]:
            cells = [wl.name, f"proxy per {unit}"]
            cells += [
                "-" if t == "direct" else _fmt(cpu_per(table, wl, t, unit), 2) for t in targets
            ]
            lines.append(_row(cells))
        cells = [wl.name, "upstream per request"]
        for t in targets:
            runs = table.get(wl.name, t)
            cells.append(_fmt(_median([_cpu_us(r.upstream_ticks, r.result.ok) for r in runs]), 2))
        lines.append(_row(cells))
        cells = [wl.name, "load generator per request"]
        for t in targets:
            runs = table.get(wl.name, t)
            per = [r.load_seconds / r.result.ok * 1e6 for r in runs if r.result.ok]
            cells.append(_fmt(_median(per), 2))
        lines.append(_row(cells))

    lines.append("")
    errors = {t: sum(r.result.errors for wl in wls for r in table.get(wl.name, t)) for t in targets}
    lines.append(
        f"Errors (all {rounds} rounds): " + ", ".join(f"{t} {n}" for t, n in errors.items())
    )
    samples = [
        s
        for wl in wls
        for t in targets
        for r in table.get(wl.name, t)
        for s in r.result.error_samples
    ]
    if samples:
        lines.append(f"Error samples: {samples[:5]}")
    spreads = [
        f"{wl.name}: "
        + ", ".join(
            f"{t} {_fmt(_spread(headline(wl, table.get(wl.name, t))), 0)} %" for t in targets
        )
        for wl in wls
    ]
    lines.append(
        "Spread over rounds, (max - min) / median of latency at 1 client, of requests/s else: "
        + "; ".join(spreads)
    )
    foreign = [r.foreign for runs in table.runs.values() for r in runs]
    if foreign:
        lines.append(
            f"Other load on the machine during the timed windows: median "
            f"{statistics.median(foreign):.2f}, max {max(foreign):.2f} CPUs"
            + (
                f" - NOISY: {sum(f > NOISE_CPUS for f in foreign)} of {len(foreign)} runs "
                f"shared the machine with more than {NOISE_CPUS} CPUs of other work"
                if max(foreign) > NOISE_CPUS
                else ""
            )
        )
    lines.append("")
    lines.extend(verdicts(table, wls, proxies))
    return "\n".join(lines)


def verdicts(table: Table, wls: list[Workload], proxies: list[str]) -> list[str]:
    """One PASS/FAIL line per target and proxy, with the range over rounds in brackets; then,
    when both proxies ran, ryx against bare on the same figures."""
    by_name = {wl.name: wl for wl in wls}
    one, many, stream = by_name.get("json c=1"), by_name.get("json c=32"), by_name.get(STREAM_64)
    out: list[str] = []
    for proxy in proxies:
        checks: list[tuple[bool, str]] = []
        if one is not None:
            rounds = per_round(table, one, proxy, p50_ms, "add")
            value = _median(rounds)
            checks.append(
                (
                    value <= MAX_ADDED_LATENCY_MS,
                    f"added latency p50 at {one.name}: {_fmt(value, sign='+')} ms"
                    f"{_range(rounds, 3)} (target <= {MAX_ADDED_LATENCY_MS} ms)",
                )
            )
        if many is not None:
            rounds = per_round(table, many, proxy, rps, "ratio")
            value = _median(rounds)
            checks.append(
                (
                    value >= MIN_RPS_RATIO_32,
                    f"requests/s at {many.name}: {_fmt(value, 2)}x direct{_range(rounds, 2)} "
                    f"(target >= {MIN_RPS_RATIO_32}x)",
                )
            )
        if stream is not None:
            rounds = cpu_rounds(table, stream, proxy, "chunk")
            value = _median(rounds)
            checks.append(
                (
                    value <= MAX_CPU_US_PER_CHUNK,
                    f"proxy CPU per chunk at {stream.name}: {_fmt(value, 2)} µs"
                    f"{_range(rounds, 2)} (target <= {MAX_CPU_US_PER_CHUNK} µs)",
                )
            )
        errors = sum(r.result.errors for wl in wls for r in table.get(wl.name, proxy))
        checks.append((errors == 0, f"errors: {errors} (target 0)"))
        out += [f"{proxy}: {'PASS' if ok else 'FAIL'}  {text}" for ok, text in checks]
        paced = by_name.get(STREAM_PACED)
        if paced is not None:
            rounds = cpu_rounds(table, paced, proxy, "chunk")
            out.append(
                f"{proxy}: info  proxy CPU per chunk at {paced.name} (one event per read, no "
                f"target): {_fmt(_median(rounds), 2)} µs{_range(rounds, 2)}"
            )
    if "bare" in proxies and any(
        line.startswith("bare: FAIL") and "errors" not in line for line in out
    ):
        out.append(
            "note: the bare reference fails a target in this harness too, so that target is not "
            "reachable here as calibrated (see bench/README.md)"
        )
    for mine, theirs in VERSUS:
        if mine not in proxies or theirs not in proxies:
            continue
        parts: list[str] = []
        if one is not None:
            rounds = per_round(table, one, mine, p50_ms, "add", base=theirs)
            parts.append(
                f"latency p50 at {one.name} {_fmt(_median(rounds), sign='+')} ms{_range(rounds, 3)}"
            )
        if many is not None:
            rounds = per_round(table, many, mine, rps, "ratio", base=theirs)
            parts.append(
                f"requests/s at {many.name} {_fmt(_median(rounds), 2)}x{_range(rounds, 2)}"
            )
        if stream is not None:
            a, b = (
                cpu_rounds(table, stream, mine, "chunk"),
                cpu_rounds(table, stream, theirs, "chunk"),
            )
            rounds = [x / y for x, y in zip(a, b, strict=False) if y]
            parts.append(
                f"CPU per chunk at {stream.name} {_fmt(_median(rounds), 2)}x{_range(rounds, 2)}"
            )
        out.append(f"{mine} against {theirs}, same rounds: " + "; ".join(parts))
    return out


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description="Benchmark ryx-desktop serve against direct.")
    parser.add_argument("--quick", action="store_true", help="2 short rounds (~40 s)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5, or 2 with --quick")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--proxy",
        action="append",
        choices=sorted(PROXY_SETS),
        help="which proxies run next to direct (repeatable; default both: ryx and bare; "
        "all: ryx, ryx-asyncio, bare, bare-uvloop)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxy to CPU 1, upstream and load generator to CPU 0",
    )
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="aiohttp")
    parser.add_argument(
        "--no-paced", action="store_true", help=f"leave out the {STREAM_PACED!r} workload"
    )
    parser.add_argument("--workload", action="append", help="only these (by name), repeatable")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each round, wait up to S seconds for a second without other work on the "
        "machine (it is shared)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)

    rounds = args.rounds or (2 if args.quick else 5)
    duration = args.duration or (0.7 if args.quick else 1.5)
    warmup = 0.15 if args.quick else 0.3
    wls = workloads(duration, warmup, paced=not args.no_paced)
    if args.workload:
        wls = [wl for wl in wls if wl.name in args.workload]
        if not wls:
            raise SystemExit(f"no workload named {args.workload}")

    proxies: list[str] = []
    for chosen in args.proxy or ["both"]:
        proxies += [p for p in PROXY_SETS[chosen] if p not in proxies]
    proxies.sort(key=PROXIES.index)
    if any(p.startswith("ryx") for p in proxies) and not ryx_available():
        print("note: `ryx-desktop serve` is not there (yet); running without it", file=sys.stderr)
        proxies = [p for p in proxies if not p.startswith("ryx")]
    if args.pin:
        if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
            raise SystemExit("--pin needs taskset and two CPUs")
        os.sched_setaffinity(0, {0})
    targets = ["direct", *proxies]

    table = Table()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="ryx-bench-") as tmp,
        services(proxies, args.pin, Path(tmp)) as (upstream, running),
    ):
        for index in range(rounds):
            if args.wait_quiet > 0:
                pids = [upstream.pid, *(p.pid for p in running.values())]
                other = wait_quiet(args.wait_quiet, pids)
                if other > NOISE_CPUS:
                    print(
                        f"round {index + 1}: still {other:.2f} CPUs of other work", file=sys.stderr
                    )
            for wl in wls:
                for target in targets:
                    proxy = running.get(target)
                    url = proxy.url if proxy is not None else upstream.url
                    run = measure(target, url, wl, upstream, running, args.client)
                    table.add(wl.name, run)
                    if args.verbose:
                        print(
                            f"round {index + 1} {target:6} {run.result.summary()}; "
                            f"other load {run.foreign:.2f} CPUs",
                            flush=True,
                        )
            if not args.verbose:
                print(f"round {index + 1}/{rounds} done", file=sys.stderr, flush=True)

    cpu_note = "pinned: proxy on CPU 1, upstream + load on CPU 0" if args.pin else "not pinned"
    print(
        f"\n{rounds} rounds x {duration:g} s per run (+{warmup:g} s warm-up), "
        f"{args.client} client, {cpu_note}, {os.cpu_count()} CPUs, "
        f"{time.monotonic() - started:.0f} s in all\n"
    )
    print(report(table, wls, targets, rounds))


if __name__ == "__main__":
    main()
