"""GPU planning and vLLM log-progress parsing: pure functions."""

from __future__ import annotations

import pytest

from ryx_desktop.core.errors import BudgetExceededError
from ryx_desktop.core.planner import GpuClaim, gpus_of, plan_evictions
from ryx_desktop.core.progress import LoadPhase, LoadProgress, parse_load_progress
from ryx_desktop.core.states import InstanceState

READY = InstanceState.READY


def claim(key: str, gpus: set[int], share: float, **kw: object) -> GpuClaim:
    return GpuClaim(key, frozenset(gpus), share, **kw)  # type: ignore[arg-type]


def test_gpus_of_devices_settings() -> None:
    assert gpus_of("all", [0, 1]) == {0, 1}
    assert gpus_of("none", [0, 1]) == set()
    assert gpus_of((1,), [0, 1]) == {1}


def test_exclusive_evicts_holders_of_shared_gpus_only() -> None:
    target = claim("t", {0}, 0.3)
    others = [
        claim("a", {0}, 0.3, state=READY, in_flight=3),
        claim("b", {1}, 0.3, state=READY),
        claim("c", {0, 1}, 0.3, state=InstanceState.STOPPED),
        claim("d", {0, 1}, 0.3, state=InstanceState.STARTING),
    ]
    assert plan_evictions(target, others, "exclusive", 0.05) == ["a", "d"]


def test_fractional_evicts_lru_idle_per_gpu_until_it_fits() -> None:
    target = claim("t", {0}, 0.5)
    others = [
        claim("new", {0}, 0.3, state=READY, last_used=50.0),
        claim("old", {0}, 0.3, state=READY, last_used=10.0),
        claim("never", {0}, 0.1, state=READY, last_used=None),
    ]
    # 0.7 used + 0.5 > 0.95: drop "never" (0.1) then "old" (0.3) -> 0.3 + 0.5 fits.
    assert plan_evictions(target, others, "fractional", 0.05) == ["never", "old"]


def test_fractional_headroom_counts_and_busy_models_block() -> None:
    target = claim("t", {0}, 0.5)
    others = [claim("a", {0}, 0.5, state=READY, in_flight=1)]
    assert plan_evictions(target, others, "fractional", 0.0) == []
    with pytest.raises(BudgetExceededError) as caught:
        plan_evictions(target, others, "fractional", 0.05)
    assert "only 45% of its 95% budget" in caught.value.message


def engine(message: str, source: str = "core.py:133", proc: str = "EngineCore pid=14961") -> str:
    """A vLLM 0.32 log line as a container prints it."""
    return f"({proc}) INFO 12-01 11:41:44 [{source}] {message}"


def worker(message: str, source: str = "default_loader.py:501") -> str:
    return engine(message, source, "Worker pid=15333")


def api(message: str, source: str = "launcher.py:195") -> str:
    return engine(message, source, "APIServer pid=13151")


SHARDS = [
    f"Loading safetensors checkpoint shards: {pct:3d}% Completed | {done}/4 "
    f"[00:0{done}<00:01,  1.52it/s]"
    for done, pct in enumerate((0, 25, 50, 75, 100))
]

#: A GPU start of vLLM 0.32, line shapes from its source: weights, torch.compile, profiling,
#: KV cache, two CUDA-graph bars, the engine, the API server.
GPU_START = [
    api("vLLM API server version 0.32.0", "api_utils.py:347"),
    api("Using max model len 32768", "model.py:2152"),
    worker("Starting to load model /models/qwen...", "gpu_model_runner.py:5040"),
    *SHARDS,
    worker("Loading weights took 3.12 seconds"),
    worker("Model loading took 14.99 GiB memory and 4.2 seconds", "gpu_model_runner.py:5150"),
    worker(
        "Using cache directory: /root/.cache/vllm/torch_compile_cache/ab for vLLM's torch.compile"
    ),
    worker("Dynamo bytecode transform time: 6.51 s", "backends.py:1166"),
    worker("Compiling a graph for compile range (1, 8192) takes 21.07 s", "backends.py:398"),
    worker("torch.compile took 29.71 s in total", "monitor.py:62"),
    worker("Initial profiling/warmup run took 1.20 s", "monitor.py:91"),
    worker("Available KV cache memory: 40.12 GiB", "gpu_worker.py:760"),
    engine(
        "GPU KV cache size: 751,328 tokens, Maximum concurrency for 32,768 tokens per request: "
        "22.93x",
        "kv_cache_utils.py:2327",
    ),
    *[
        f"Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): {100 * n // 11:3d}%|"
        f"{'█' * n:<11}| {n}/11 [00:0{n % 10}<00:00,  4.83it/s]"
        for n in range(12)
    ],
    *[
        f"Capturing CUDA graphs (decode, FULL): {100 * n // 7:3d}%|{'█' * n:<7}| {n}/7 "
        "[00:01<00:00,  5.10it/s]"
        for n in range(8)
    ],
    worker("Graph capturing finished in 9 secs, took 0.52 GiB", "gpu_model_runner.py:6582"),
    engine("init engine (profile, create kv cache, warmup model) took 61.20 s", "core.py:402"),
    api("Starting vLLM server on http://0.0.0.0:8000", "entry.py:140"),
    api("Available routes are:", "launcher.py:186"),
    api("Route: /v1/models, Methods: GET"),
    "INFO:     Started server process [13151]",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
]


def follow(lines: list[str]) -> list[tuple[float, str]]:
    tracker = LoadProgress()
    steps = [tracker.feed(line) for line in lines]
    return [(s.percent, s.detail) for s in steps if s is not None]


def test_progress_moves_through_every_phase_of_a_gpu_start() -> None:
    steps = follow(GPU_START)
    percents = [p for p, _ in steps]
    assert percents == sorted(percents), steps
    assert percents[-1] == 100.0
    details = [d for _, d in steps]
    for detail in (
        "weights 2/4 shards",
        "weights loaded",
        "compiling (torch.compile)",
        "measuring memory",
        "sizing the KV cache",
        "KV cache sized (751,328 tokens)",
        "capturing CUDA graphs 5/11",
        "capturing CUDA graphs 3/7",
        "engine ready",
        "starting the API server",
        "API server up",
    ):
        assert detail in details, detail
    at = dict((d, p) for p, d in steps)
    # After the weights the figure keeps moving: it does not sit at 100 % until the end.
    assert at["weights 4/4 shards"] == 60.0
    assert 60 < at["compiling (torch.compile)"] < at["sizing the KV cache"] <= 80
    assert 80 < at["capturing CUDA graphs 5/11"] < at["capturing CUDA graphs 3/7"] < 95
    assert at["CUDA graphs captured"] < at["engine ready"] < at["starting the API server"] < 100
    assert len([p for p in percents if p == 100.0]) == 1


def test_cpu_build_order_keeps_the_percent_and_names_the_phase() -> None:
    # The CPU build sizes its KV cache, then compiles while it warms up.
    lines = [
        worker("Starting to load model /tmp/tiny64...", "cpu_model_runner.py:68"),
        *SHARDS,
        worker("Loading weights took 0.01 seconds"),
        worker("Explicitly set (1.0/9.59) GiB for KV cache on node 0.", "cpu_worker.py:260"),
        engine(
            "CPU KV cache size: 524,288 tokens, Maximum concurrency for 1,024 tokens per "
            "request: 512.00x",
            "kv_cache_utils.py:2327",
        ),
        worker("Warming up model for the compilation...", "cpu_model_runner.py:87"),
        worker("Dynamo bytecode transform time: 3.02 s", "backends.py:1166"),
        worker("Warming up done.", "cpu_model_runner.py:91"),
        engine("init engine (profile, create kv cache, warmup model) took 34.12 s", "core.py:402"),
    ]
    steps = follow(lines)
    percents = [p for p, _ in steps]
    assert percents == sorted(percents)
    assert (80.0, "compiling and warming up") in steps
    assert (80.0, "compiling (torch.compile)") in steps
    assert steps[-1] == (97.0, "engine ready")


def test_a_repeated_line_reports_nothing_new_and_an_earlier_phase_never_lowers_it() -> None:
    tracker = LoadProgress()
    first = tracker.feed(SHARDS[2])
    assert first is not None and first.percent == 30.0
    assert tracker.feed(SHARDS[2]) is None
    assert tracker.feed("(APIServer pid=1) INFO 12-01 11:41:16 [x.py:1] nothing here") is None
    tracker.feed(worker("Loading weights took 0.01 seconds"))
    late = tracker.feed(SHARDS[0])  # a second model's weights (a drafter): the figure holds
    assert late is not None and late.percent == 60.0 and late.detail == "weights 0/4 shards"
    assert tracker.percent == 60.0 and tracker.phase is LoadPhase.WEIGHTS


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Loading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]", 0.0),
        (
            "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01, 1.5it/s]",
            30.0,
        ),
        ("Loading pt checkpoint shards: 100% Completed | 1/1 [00:03<00:00,  3.01s/it]", 60.0),
        ("INFO:     Application startup complete.", 100.0),
        (
            "(APIServer pid=1) INFO 12-01 11:42:01 [entry.py:140] Starting vLLM server on http://x",
            99.0,
        ),
        ('INFO:     127.0.0.1:36566 - "GET /v1/models HTTP/1.1" 200 OK', None),
        ("(EngineCore pid=1) WARNING 12-01 11:41:32 [cpu.py:224] Triton is not installed.", None),
    ],
)
def test_parse_load_progress(line: str, expected: float | None) -> None:
    parsed = parse_load_progress(line)
    assert (parsed[0] if parsed else None) == expected
