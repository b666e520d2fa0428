"""Is the GUI ever frozen? The event loop's worst stall while the desktop app works hard.

``python -m bench.stall [--quick] [--rounds R] [--duration S] [--runtime auto|docker|fake]``

The desktop app (the real ``start_desktop``: engine, GPU monitor, proxy and manager window, on a
qasync loop over an offscreen ``QApplication``) runs in a child process of this one
(``--child``), with a probe on its loop: a ``QTimer`` firing every 5 ms (Qt's precise timer) and
an asyncio ``call_at`` chain every 5 ms. A tick's lateness (how much later than due it ran) is
how long the loop could not run anything; the worst lateness in a window is the window's stall.

While the probe runs, the app

* starts and stops a model again and again from the window (``window.start`` / ``stop``): a
  container of the fake vLLM image on the real Docker engine, or ``FakeRuntime`` when no engine
  answers (``--runtime``);
* follows that model's log in the window's log view (each new container is followed);
* polls the GPU every 0.5 s through ``NvmlGpuProbe``: on the real driver when ``nvidia-smi``
  works, else on the fake ``pynvml`` module of the tests (one GPU with processes);
* proxies 32 concurrent streams from ``bench.upstream`` (``bench.load``'s raw client, in this
  process), burst (as fast as the upstream writes) and paced (one event every 10 ms per stream);
* proxies large requests: one client sending a 23 MiB chat body (700k messages) again and again,
  naming the model by its key, so that the proxy rewrites ``model`` (parsing that much JSON on
  the loop froze it for 300-750 ms).

The same loads also run through ``ryx-desktop serve`` (same upstream, external model), one after
the other with the app's run of each round (the order alternates between rounds), to compare
chunks per second. Targets: the worst stall over every window < 50 ms; the app's chunks/s at
least 0.90x serve's (median of the per-round ratios); no errors.

The child speaks JSON lines on stdout (``ready``, then one answer per ``take``) and reads
commands on stdin (``mark``: start a window; ``take``: report it; ``quit``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import load
from bench.load import LoadResult, Workload
from bench.run import (
    ROOT,
    SERVED_NAME,
    Service,
    free_port,
    ryx_available,
    ryx_config,
    upstream_service,
)

TICK_MS = 5.0
GPU_INTERVAL = 0.5
CHURN_MODEL = "stall-churn"
STREAMS = 32
MAX_TOKENS = 256
PACED_MS = 10.0
LARGE_MESSAGES = 700_000
CHILD_TIMEOUT = 120.0

# The targets.
MAX_STALL_MS = 50.0
MIN_CHUNKS_RATIO = 0.90


# --- measuring lateness ----------------------------------------------------------------------


@dataclass(frozen=True)
class Lateness:
    """How late the probe's ticks ran in one window, in ms."""

    ticks: int
    worst: float
    p99: float
    p50: float
    over_16: int  # ticks later than one 60 Hz frame

    @staticmethod
    def of(values: Sequence[float]) -> Lateness:
        if not values:
            return Lateness(0, float("nan"), float("nan"), float("nan"), 0)
        ordered = sorted(values)
        return Lateness(
            ticks=len(ordered),
            worst=ordered[-1],
            p99=ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            p50=statistics.median(ordered),
            over_16=sum(1 for v in ordered if v > 16.0),
        )


@dataclass(frozen=True)
class WindowReport:
    """What the child saw during one window."""

    timer: Lateness
    loop: Lateness
    worst_tick_cpu: float  # ms of main-thread CPU during the Qt timer's worst gap
    gc_worst: float  # ms: the longest garbage collection
    starts: int  # the model became ready
    stops: int
    gpu_reads: int
    log_lines: int  # lines the log view received
    seconds: float

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> WindowReport:
        return WindowReport(
            timer=Lateness(**data["timer"]),
            loop=Lateness(**data["loop"]),
            worst_tick_cpu=float(data["worst_tick_cpu"]),
            gc_worst=float(data["gc_worst"]),
            starts=int(data["starts"]),
            stops=int(data["stops"]),
            gpu_reads=int(data["gpu_reads"]),
            log_lines=int(data["log_lines"]),
            seconds=float(data["seconds"]),
        )


# --- the child: the desktop app with a probe on its loop -----------------------------------


def child_main(args: argparse.Namespace) -> int:
    """``--child``: run the desktop app with the probe and the model churn until ``quit``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import qasync
    from PySide6.QtWidgets import QApplication

    from ryx_desktop.ui.event_loop import QtAsyncioLoop, use_qt_event_dispatcher

    if not args.glib:
        use_qt_event_dispatcher(os.environ)  # as ryx-desktop does
    app = QApplication(["ryx-desktop-stall"])
    loop = (qasync.QEventLoop if args.plain_qasync else QtAsyncioLoop)(app)
    with loop:
        code: int = loop.run_until_complete(_child(app, args))
    return code


async def _child(app: Any, args: argparse.Namespace) -> int:
    from PySide6.QtCore import Qt, QTimer

    from ryx_desktop.desktop import DesktopDeps, start_desktop
    from ryx_desktop.ui.main_thread_gc import MainThreadGarbageCollector

    loop = asyncio.get_running_loop()
    counting = _CountingProbe(_gpu_probe(args.gpu))
    deps = DesktopDeps(
        build_engine=_engine_factory(args.runtime, args.upstream),
        gpu_probe=lambda: counting,
        tray_available=lambda: False,
        dialogs=_StderrDialogs(),
        gpu_interval=GPU_INTERVAL,
    )
    # As ``ryx-desktop`` does (desktop.main): collect on the Qt thread, freeze what startup built.
    garbage = None if args.python_gc else MainThreadGarbageCollector()
    if garbage is not None:
        garbage.start()
    desktop = await start_desktop(app, Path(args.config), dict(os.environ), deps)
    if desktop.proxy is None:
        print(json.dumps({"error": desktop.proxy_note}), flush=True)
        await desktop.shutdown()
        return 1
    if garbage is not None:
        garbage.freeze()
    probe = _Probe(loop, TICK_MS / 1e3)
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(round(TICK_MS))
    timer.timeout.connect(probe.on_timer)
    timer.start()
    probe.start_chain()

    window = desktop.window
    churn = _Churn(window, desktop.bridge, CHURN_MODEL)
    stop_churn = asyncio.Event()
    churn_task = loop.create_task(churn.run(stop_churn) if not args.no_churn else stop_churn.wait())
    commands = _stdin_lines(loop)
    print(json.dumps({"ready": True}), flush=True)

    began = time.perf_counter()
    gpu_mark = counting.reads
    lines_mark = _shown_lines(window)
    try:
        while True:
            command = (await commands.get()).strip()
            if command == "mark":
                probe.reset()
                churn.starts = churn.stops = 0
                gpu_mark, lines_mark = counting.reads, _shown_lines(window)
                began = time.perf_counter()
            elif command == "take":
                report = WindowReport(
                    timer=Lateness.of(probe.timer_late),
                    loop=Lateness.of(probe.loop_late),
                    worst_tick_cpu=probe.worst_cpu,
                    gc_worst=probe.gc_worst,
                    starts=churn.starts,
                    stops=churn.stops,
                    gpu_reads=counting.reads - gpu_mark,
                    log_lines=_shown_lines(window) - lines_mark,
                    seconds=time.perf_counter() - began,
                )
                print(json.dumps(asdict(report)), flush=True)
            elif command in ("quit", ""):
                break
    finally:
        timer.stop()
        probe.close()
        stop_churn.set()
        with contextlib.suppress(Exception):
            await churn_task
        await desktop.shutdown(stop_all=True)
    if churn.error:
        print(f"churn: {churn.error}", file=sys.stderr)
    return 0


class _Probe:
    """Lateness of a Qt timer and of an asyncio ``call_at`` chain; what the worst gap was.

    For the Qt timer's worst gap it keeps the main thread's CPU time during that gap: close to
    the gap, the loop itself was busy (a real stall of the app's code); far below it, the thread
    waited (for the GIL held by a worker thread, or for a CPU the OS gave to another process).
    It also keeps the longest garbage collection pause (``gc.callbacks``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self.timer_late: list[float] = []
        self.loop_late: list[float] = []
        self.worst_cpu = 0.0
        self.gc_worst = 0.0
        self._worst = 0.0
        self._last: tuple[float, float] | None = None  # (perf_counter, thread_time)
        self._gc_began = 0.0
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.timer_late.clear()
        self.loop_late.clear()
        self.worst_cpu = self.gc_worst = self._worst = 0.0

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def on_timer(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self._last is not None:
            late = max(0.0, (now - self._last[0] - self._interval) * 1e3)
            if late >= self._worst:
                self._worst = late
                self.worst_cpu = (cpu - self._last[1]) * 1e3
            self.timer_late.append(late)
        self._last = (now, cpu)

    def start_chain(self) -> None:
        due = self._loop.time() + self._interval
        self._loop.call_at(due, self._on_call, due)

    def _on_call(self, due: float) -> None:
        now = self._loop.time()
        self.loop_late.append(max(0.0, (now - due) * 1e3))
        self._loop.call_at(now + self._interval, self._on_call, now + self._interval)

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self.gc_worst = max(self.gc_worst, (time.perf_counter() - self._gc_began) * 1e3)


class _Churn:
    """Starts and stops one model from the window, again and again, with its log followed."""

    def __init__(self, window: Any, bridge: Any, key: str, hold: float = 0.5) -> None:
        self._window = window
        self._bridge = bridge
        self._key = key
        self._hold = hold
        self.starts = 0
        self.stops = 0
        self.error = ""

    async def run(self, stop: asyncio.Event) -> None:
        from ryx_desktop.core.states import InstanceState

        self._window.show_logs(self._key)  # the log view follows each new container
        while not stop.is_set():
            task = self._window.start(self._key)
            if task is not None:
                await task
            inst = self._bridge.instance(self._key)
            if inst.state is not InstanceState.READY:
                self.error = f"{self._key} did not become ready: {inst.state.value} {inst.note}"
                return
            self.starts += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self._hold)
            task = self._window.stop(self._key)
            if task is not None:
                await task
            self.stops += 1


def _shown_lines(window: Any) -> int:
    """Lines the log view holds (its scrollback is bounded: 5,000 lines, far above a run's)."""
    return int(window.log_view.text_edit.document().blockCount())


class _CountingProbe:
    """A GPU probe that counts its reads (the monitor publishes only changes)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.reads = 0

    async def read(self) -> Any:
        self.reads += 1
        return await self._inner.read()

    async def close(self) -> None:
        await self._inner.close()


class _StderrDialogs:
    async def error(self, title: str, message: str, hint: str) -> None:
        print(f"dialog: {title}: {message} ({hint})", file=sys.stderr, flush=True)


def _gpu_probe(kind: str) -> Any:
    from ryx_desktop.adapters.nvml import NvmlGpuProbe

    if kind == "real":
        return NvmlGpuProbe()
    from tests.support.fake_pynvml import FakeGpu, FakeProcess, FakePynvml

    gib = 1024**3
    gpu = FakeGpu(compute=[FakeProcess(4242, 6 * gib), FakeProcess(4343, gib)])
    return NvmlGpuProbe(FakePynvml([gpu]))


def _engine_factory(runtime: str, upstream: str) -> Any:
    """The real engine (Docker) or the real supervisor over ``FakeRuntime``."""
    from ryx_desktop.app import Engine, build_engine

    if runtime == "docker":

        def real(config: Any, environ: Mapping[str, str], *, clock: Any, gpu_probe: Any) -> Engine:
            return build_engine(config, environ, clock=clock, gpu_probe=gpu_probe)

        return real

    def fake(config: Any, environ: Mapping[str, str], *, clock: Any, gpu_probe: Any) -> Engine:
        from ryx_desktop.core.supervisor import Supervisor
        from tests.support.fakes import FakeHealth, FakeRuntime

        fake_runtime = FakeRuntime()
        fake_runtime.live_logs = True
        health = FakeHealth(fake_runtime)
        health.external_up.add(upstream)
        supervisor = Supervisor(
            config, fake_runtime, health, clock, environ=environ, gpu_probe=gpu_probe
        )
        engine: Any = Engine(config, fake_runtime, health, supervisor)  # type: ignore[arg-type]
        return engine  # type: ignore[no-any-return]

    return fake


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    """Lines of stdin on the loop ("" at end of file), read by a daemon thread."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=read, name="stall-stdin", daemon=True).start()
    return queue


# --- the parent: services, loads, report ---------------------------------------------------


@dataclass
class Child:
    """The desktop app's process, driven over its stdin and stdout."""

    proc: subprocess.Popen[str]
    log: Path

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise SystemExit(f"the app did not answer in {timeout:.0f} s:\n{self.tail()}")
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"the app exited ({self.proc.wait()}):\n{self.tail()}")
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                if "error" in data:
                    raise SystemExit(f"the app could not start: {data['error']}\n{self.tail()}")
                return data

    def take(self) -> WindowReport:
        self.send("take")
        return WindowReport.from_json(self.answer())

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("quit")
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def docker_image() -> tuple[str | None, str]:
    """The fake vLLM image's tag when a Docker engine answers (built if needed), and a note."""
    try:
        import docker
        import docker.errors

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        return None, f"FakeRuntime (no Docker engine answered: {type(exc).__name__})"
    try:
        from tests.fake_vllm.image import ensure_fake_image

        tag = ensure_fake_image(client)
        version = client.version().get("Version", "?")
    finally:
        client.close()
    return tag, f"Docker engine {version}, image {tag}"


def gpu_kind() -> tuple[str, str]:
    """``real`` when ``nvidia-smi`` lists a GPU, else ``fake`` (the tests' pynvml)."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and "GPU" in done.stdout:
            return "real", "NVML on " + done.stdout.splitlines()[0]
    return "fake", "fake pynvml (no NVIDIA driver here): one GPU with two processes"


def app_config(
    path: Path, workdir: Path, port: int, upstream: str, image: str | None, churn_port: int
) -> None:
    """The app's config: the upstream as external model ``bench``, and the churned model."""
    models = workdir / "models"
    (models / "churn").mkdir(parents=True, exist_ok=True)
    (models / "churn" / "config.json").write_text('{"model_type": "qwen2"}\n')
    (workdir / "hf").mkdir(exist_ok=True)
    docker = f"docker: {{models_dir: {models}, hf_cache: {workdir / 'hf'}, stop_timeout: 5"
    docker += f", image: {image}}}\n" if image else "}\n"
    path.write_text(
        f"proxy: {{host: 127.0.0.1, port: {port}}}\n" + docker + "default_model: bench\n"
        "models:\n"
        f'  bench: {{url: "{upstream}", served_name: {SERVED_NAME}}}\n'
        f"  {CHURN_MODEL}: {{model: /models/churn, port: {churn_port}, devices: none,"
        ' env: {FAKE_VLLM_LOAD_SECONDS: "0.5", FAKE_VLLM_SHARDS: "5"}}\n'
    )


@contextlib.contextmanager
def running(
    workdir: Path,
    runtime: str,
    image: str | None,
    gpu: str,
    no_churn: bool,
    python_gc: bool,
    plain_qasync: bool,
    glib: bool,
) -> Iterator[tuple[Service, Service, Child, int]]:
    """The upstream, ``ryx-desktop serve`` and the app; stopped on the way out."""
    python = sys.executable
    serve_port, app_port = free_port(), free_port()
    upstream = upstream_service(workdir / "upstream.log")
    serve_config = workdir / "serve.yaml"
    ryx_config(serve_config, serve_port, upstream.url)
    exe = str(Path(python).with_name("ryx-desktop"))
    serve = Service(
        "serve",
        [exe, "serve", "--config", str(serve_config), "--port", str(serve_port)],
        serve_port,
        workdir / "serve.log",
    )
    config = workdir / "app.yaml"
    app_config(config, workdir, app_port, upstream.url, image, free_port())
    child_log = workdir / "app.log"
    services = [upstream, serve]
    child: Child | None = None
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        with child_log.open("w") as err:
            proc = subprocess.Popen(
                [
                    *(python, "-m", "bench.stall", "--child", "--config", str(config)),
                    *("--runtime", runtime, "--gpu", gpu, "--upstream", upstream.url),
                    *(("--no-churn",) if no_churn else ()),
                    *(("--python-gc",) if python_gc else ()),
                    *(("--plain-qasync",) if plain_qasync else ()),
                    *(("--glib",) if glib else ()),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=ROOT,
                env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
            )
        child = Child(proc, child_log)
        child.answer()  # {"ready": true}
        yield upstream, serve, child, app_port
    finally:
        if child is not None:
            child.stop()
        for service in reversed(services):
            service.stop()


@dataclass
class Window:
    """One timed load (or idle window) with what the app's probe saw meanwhile."""

    workload: str
    target: str  # app | serve | idle
    result: LoadResult | None
    app: WindowReport


@dataclass
class Results:
    windows: list[Window] = field(default_factory=list)

    def of(self, workload: str, target: str) -> list[Window]:
        return [w for w in self.windows if w.workload == workload and w.target == target]


@dataclass(frozen=True)
class LargeBody(Workload):
    """A chat body of ``messages`` short messages (700k: about 23 MiB)."""

    messages: int = LARGE_MESSAGES

    def body(self) -> bytes:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "hello"}] * self.messages,
            "max_tokens": self.max_tokens,
        }
        return json.dumps(body, separators=(",", ":")).encode()


def workloads(duration: float, warmup: float) -> list[Workload]:
    def stream(name: str, interval_ms: float) -> Workload:
        return Workload(
            name, True, MAX_TOKENS, STREAMS, duration, None, warmup, SERVED_NAME, interval_ms
        )

    # By the model's key ("bench"), not its served name: the proxy rewrites ``model``.
    large = LargeBody("json 23 MiB c=1", False, 16, 1, duration, None, warmup, "bench")
    return [
        stream(f"stream {MAX_TOKENS} c={STREAMS}", 0.0),
        stream(f"stream {MAX_TOKENS} c={STREAMS} paced {PACED_MS:g} ms", PACED_MS),
        large,
    ]


def measure(
    child: Child, url: str | None, workload: Workload | None, duration: float
) -> tuple[LoadResult | None, WindowReport]:
    """Run ``workload`` against ``url`` (or just wait ``duration``) inside one probe window."""
    child.send("mark")
    result = None
    if url is not None and workload is not None:
        result = asyncio.run(load.run(url, workload))
    else:
        time.sleep(duration)
    return result, child.take()


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def _fmt(value: float, digits: int = 1) -> str:
    if value != value:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def report(results: Results, wls: list[Workload], rounds: int) -> str:
    """The markdown table: per workload and target, medians over rounds and the worst stall."""
    head = [
        "workload",
        "through",
        "chunks/s",
        "errors",
        "app stall worst ms (timer)",
        "p99 ms (timer)",
        "worst ms (asyncio)",
        ">16 ms ticks",
        "CPU in worst gap ms",
        "worst GC ms",
        "model starts",
        "GPU reads",
        "log lines",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: list[tuple[str, str]] = [("idle (churn only)", "idle")]
    rows += [(wl.name, target) for wl in wls for target in ("app", "serve")]
    for name, target in rows:
        windows = results.of(name, target)
        if not windows:
            continue
        loads = [w.result for w in windows if w.result is not None]
        chunks = _fmt(_median([r.chunks_per_s for r in loads])) if loads else "-"
        errors = str(sum(r.errors for r in loads)) if loads else "-"
        out.append(
            "| "
            + " | ".join(
                [
                    name,
                    "app (idle)" if target == "idle" else target,
                    chunks,
                    errors,
                    _fmt(max(w.app.timer.worst for w in windows)),
                    _fmt(max(w.app.timer.p99 for w in windows)),
                    _fmt(max(w.app.loop.worst for w in windows)),
                    str(sum(w.app.timer.over_16 for w in windows)),
                    _fmt(max(windows, key=lambda w: w.app.timer.worst).app.worst_tick_cpu),
                    _fmt(max(w.app.gc_worst for w in windows)),
                    str(sum(w.app.starts for w in windows)),
                    str(sum(w.app.gpu_reads for w in windows)),
                    str(sum(w.app.log_lines for w in windows)),
                ]
            )
            + " |"
        )
    out.append("")
    out.append(
        f"{rounds} round(s); stall columns are the app's loop during the window (also while "
        "serve carries the load); chunks/s is a median over the rounds."
    )
    return "\n".join(out)


def verdicts(results: Results, wls: list[Workload]) -> list[str]:
    """PASS/FAIL per target; the stall target counts the windows in which the app itself works
    (idle with the model churn, and proxying); the windows in which serve carries the load show
    as info (there the app competes for the CPUs with a saturated machine)."""
    lines = []

    def worst_of(target: Sequence[str]) -> tuple[float, str, str, float]:
        return max(
            (max(w.app.timer.worst, w.app.loop.worst), w.workload, w.target, w.app.worst_tick_cpu)
            for w in results.windows
            if w.target in target
        )

    worst = worst_of(("app", "idle"))
    ok = worst[0] < MAX_STALL_MS
    lines.append(
        f"app: {'PASS' if ok else 'FAIL'}  worst event-loop stall: {worst[0]:.1f} ms "
        f"(during {worst[1]}, {worst[2]}; main thread CPU in that gap {worst[3]:.1f} ms) "
        f"(target < {MAX_STALL_MS:.0f} ms)"
    )
    if any(w.target == "serve" for w in results.windows):
        other = worst_of(("serve",))
        lines.append(
            f"app: info  worst stall while serve carried the load: {other[0]:.1f} ms "
            f"(during {other[1]}; main thread CPU in that gap {other[3]:.1f} ms)"
        )
    for wl in wls:
        if not wl.stream:  # the large body: only its stall counts
            continue
        app_runs, serve_runs = results.of(wl.name, "app"), results.of(wl.name, "serve")
        ratios = [
            a.result.chunks_per_s / s.result.chunks_per_s
            for a, s in zip(app_runs, serve_runs, strict=True)
            if a.result is not None and s.result is not None and s.result.chunks_per_s
        ]
        ratio = _median(ratios)
        spread = f"[rounds {min(ratios):.2f} .. {max(ratios):.2f}]" if ratios else ""
        ok = ratio >= MIN_CHUNKS_RATIO
        lines.append(
            f"app: {'PASS' if ok else 'FAIL'}  chunks/s at {wl.name}: {ratio:.2f}x serve "
            f"{spread} (target >= {MIN_CHUNKS_RATIO:.2f}x)"
        )
    errors = sum(w.result.errors for w in results.windows if w.result is not None)
    lines.append(f"all: {'PASS' if errors == 0 else 'FAIL'}  errors: {errors} (target 0)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="default 3, --quick 1")
    parser.add_argument("--duration", type=float, default=None, help="seconds per window")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s windows")
    parser.add_argument("--runtime", choices=["auto", "docker", "fake"], default="auto")
    parser.add_argument(
        "--no-churn", action="store_true", help="no model starts and stops (to compare)"
    )
    parser.add_argument(
        "--glib",
        action="store_true",
        help="Qt's GLib event dispatcher instead of its own (to compare)",
    )
    parser.add_argument(
        "--plain-qasync",
        action="store_true",
        help="qasync's own loop instead of the app's batching one (to compare)",
    )
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="Python's own garbage collection instead of the app's (to compare)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every window")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--gpu", choices=["real", "fake"], default="fake", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 3.0)
    warmup = 0.2 if args.quick else 0.3
    if not ryx_available():
        raise SystemExit("`ryx-desktop serve` is not installed in this venv (pip install -e .)")
    image, runtime_note = (None, "FakeRuntime (--runtime fake)")
    if args.runtime != "fake":
        image, runtime_note = docker_image()
        if image is None and args.runtime == "docker":
            raise SystemExit(f"--runtime docker, but: {runtime_note}")
    runtime = "docker" if image is not None else "fake"
    gpu, gpu_note = gpu_kind()
    print(f"models: {runtime_note}", file=sys.stderr)
    print(f"GPU: {gpu_note}", file=sys.stderr)

    wls = workloads(duration, warmup)
    results = Results()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="ryx-stall-") as tmp,
        running(
            Path(tmp),
            runtime,
            image,
            gpu,
            args.no_churn,
            args.python_gc,
            args.plain_qasync,
            args.glib,
        ) as (
            _upstream,
            serve,
            child,
            app_port,
        ),
    ):
        app_url = f"http://127.0.0.1:{app_port}"
        for index in range(rounds):
            _, idle = measure(child, None, None, duration)
            results.windows.append(Window("idle (churn only)", "idle", None, idle))
            order = ["app", "serve"] if index % 2 == 0 else ["serve", "app"]
            for wl in wls:
                for target in order:
                    url = app_url if target == "app" else serve.url
                    result, seen = measure(child, url, wl, duration)
                    results.windows.append(Window(wl.name, target, result, seen))
                    if args.verbose and result is not None:
                        print(
                            f"{target}: {result.summary()}; app stall {seen.timer.worst:.1f} ms",
                            file=sys.stderr,
                        )
            print(f"round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    print(f"\nmodels: {runtime_note}\nGPU: {gpu_note}")
    load1, _, _ = os.getloadavg()
    print(
        f"{time.monotonic() - started:.0f} s, {rounds} rounds x {duration:g} s windows, "
        f"{os.cpu_count()} CPUs, load average {load1:.1f} at the end\n"
    )
    print(report(results, wls, rounds))
    lines = verdicts(results, wls)
    print("\n```\n" + "\n".join(lines) + "\n```")
    return 0 if not any(" FAIL " in line for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
