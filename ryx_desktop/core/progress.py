"""Reads vLLM's log lines for how far a model has loaded, through every phase of a start.

A vLLM (V1 engine) start goes: weights, then (on a GPU) torch.compile, a memory-profiling run,
KV-cache sizing and CUDA-graph capture, then (on the CPU build) compile/warm-up after the KV
cache, then the API server. Each phase owns a band of the percent so that the figure keeps
moving after the weights instead of sitting at 100 % for tens of seconds:

==================================  ========  ==========================================
phase                               percent   detail
==================================  ========  ==========================================
engine starts loading the model     1         loading the weights
weights (checkpoint shards n/m)     0-60      weights 2/4 shards
weights loaded                      60        weights loaded
torch.compile                       63-70     compiling (torch.compile)
compiled graph from the cache       68        loading compiled graphs from the cache
memory profiling run                73        measuring memory
KV cache                            76-80     sizing the KV cache
CUDA graphs (n/m)                   80-95     capturing CUDA graphs 5/11
warm-up (CPU build)                 80-95     compiling and warming up
engine built                        97        engine ready
API server                          99        starting the API server
startup complete                    100       API server up
==================================  ========  ==========================================

``parse_load_progress`` reads one line on its own; ``LoadProgress`` follows a whole log and
never goes backwards (the CPU build sizes its KV cache before it compiles, so phases can come
in another order: the percent then holds while the detail names the phase).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass


class LoadPhase(enum.StrEnum):
    """Which part of a vLLM start a log line belongs to."""

    ENGINE = "engine"  # the engine is starting, before the weights
    WEIGHTS = "weights"
    WEIGHTS_DONE = "weights_done"
    COMPILE = "compile"
    PROFILE = "profile"
    KV_CACHE = "kv_cache"
    CUDA_GRAPHS = "cuda_graphs"
    WARMUP = "warmup"
    ENGINE_READY = "engine_ready"
    SERVER = "server"
    UP = "up"


@dataclass(frozen=True, slots=True)
class LoadStep:
    """What one log line says about a start: a percent, a short detail and the phase."""

    percent: float
    detail: str
    phase: LoadPhase


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], LoadStep]]


def _fixed(percent: float, detail: str, phase: LoadPhase) -> Callable[[re.Match[str]], LoadStep]:
    step = LoadStep(percent, detail, phase)
    return lambda _match: step


def _shards(match: re.Match[str]) -> LoadStep:
    percent = min(100.0, float(match["pct"]))
    detail = f"weights {match['done']}/{match['total']} shards"
    return LoadStep(round(percent * 0.6, 1), detail, LoadPhase.WEIGHTS)


def _kv_size(match: re.Match[str]) -> LoadStep:
    tokens = match["tokens"]
    detail = f"KV cache sized ({tokens} tokens)" if tokens else "sizing the KV cache"
    return LoadStep(80.0, detail, LoadPhase.KV_CACHE)


def _cuda_graphs(match: re.Match[str]) -> LoadStep:
    done, total = int(match["done"]), int(match["total"])
    fraction = min(1.0, done / total) if total else 1.0
    # A PIECEWISE (mixed prefill-decode) bar comes first, a FULL decode-only bar may follow.
    decode_only = (match["kind"] or "").startswith("decode")
    low, width = (88.0, 7.0) if decode_only else (80.0, 8.0)
    return LoadStep(
        round(low + width * fraction, 1),
        f"capturing CUDA graphs {done}/{total}",
        LoadPhase.CUDA_GRAPHS,
    )


_COMPILING = "compiling (torch.compile)"
_SERVER = "starting the API server"

#: Checked in order; the first that matches a line decides. Texts from vLLM 0.6 to 0.32.
_RULES: tuple[_Rule, ...] = (
    (
        re.compile(
            r"Loading (?:safetensors |pt |)checkpoint shards:\s*(?P<pct>\d{1,3})% Completed\s*\|\s*"
            r"(?P<done>\d+)/(?P<total>\d+)"
        ),
        _shards,
    ),
    (
        re.compile(
            r"Capturing CUDA graphs(?: \((?P<kind>[^)]*)\))?:\s*\d{1,3}%\|[^|]*\|\s*"
            r"(?P<done>\d+)/(?P<total>\d+)"
        ),
        _cuda_graphs,
    ),
    (
        re.compile(r"Starting to load model "),
        _fixed(1.0, "loading the weights", LoadPhase.ENGINE),
    ),
    (
        re.compile(r"Loading weights took |Model loading took |Loading model weights took "),
        _fixed(60.0, "weights loaded", LoadPhase.WEIGHTS_DONE),
    ),
    (
        re.compile(r"Starting torch\.compile|Dynamo bytecode transform time"),
        _fixed(63.0, _COMPILING, LoadPhase.COMPILE),
    ),
    (
        re.compile(r"Compiling a graph for |Cache the graph of compile range"),
        _fixed(67.0, _COMPILING, LoadPhase.COMPILE),
    ),
    (
        re.compile(r"Directly load (?:the compiled graph|AOT compilation)"),
        _fixed(68.0, "loading compiled graphs from the cache", LoadPhase.COMPILE),
    ),
    (
        re.compile(r"torch\.compile took [\d.]+ s in total"),
        _fixed(70.0, "compiled", LoadPhase.COMPILE),
    ),
    (
        re.compile(r"Initial profiling/warmup run took|Memory profiling takes"),
        _fixed(73.0, "measuring memory", LoadPhase.PROFILE),
    ),
    (
        re.compile(r"Available KV cache memory: |GiB for KV cache on node "),
        _fixed(76.0, "sizing the KV cache", LoadPhase.KV_CACHE),
    ),
    (
        re.compile(r"\b[GC]PU KV cache size: (?P<tokens>[\d,]+) tokens|# [GC]PU blocks: "),
        _kv_size,
    ),
    (
        re.compile(
            r"Warming up model for the compilation|Compile and warming up model|"
            r"Capturing cudagraphs for decoding"
        ),
        _fixed(80.0, "compiling and warming up", LoadPhase.WARMUP),
    ),
    (
        re.compile(r"Graph capturing finished in "),
        _fixed(95.0, "CUDA graphs captured", LoadPhase.CUDA_GRAPHS),
    ),
    (re.compile(r"Warming up done\."), _fixed(95.0, "warmed up", LoadPhase.WARMUP)),
    (
        re.compile(r"init engine \(profile, create kv cache, warmup model\) took"),
        _fixed(97.0, "engine ready", LoadPhase.ENGINE_READY),
    ),
    (
        re.compile(
            r"Starting vLLM (?:API )?server on |Available routes are:|Route: /|"
            r"Started server process|Waiting for application startup"
        ),
        _fixed(99.0, _SERVER, LoadPhase.SERVER),
    ),
    (
        re.compile(r"Application startup complete\.|Uvicorn running on "),
        _fixed(100.0, "API server up", LoadPhase.UP),
    ),
)

#: Words every line that a rule matches contains: one cheap test rules most lines out.
_HINTS = re.compile(
    r"Load|load|Capturing|torch\.compile|Dynamo|Compil|Cache the graph|profiling|KV cache|"
    r"blocks|Warming|warming|Graph capturing|init engine|Start|routes|Route|startup|Uvicorn"
)


def parse_load_step(line: str) -> LoadStep | None:
    """The phase, percent and detail one log line tells, or None when it tells nothing.

    >>> parse_load_step("(Worker pid=7) INFO 12-01 10:21:22 [x.py:9] Loading weights took 2 s")
    LoadStep(percent=60.0, detail='weights loaded', phase=<LoadPhase.WEIGHTS_DONE: 'weights_done'>)
    """
    if _HINTS.search(line) is None:
        return None
    for pattern, step in _RULES:
        match = pattern.search(line)
        if match is not None:
            return step(match)
    return None


def parse_load_progress(line: str) -> tuple[float, str] | None:
    """Percent loaded and a short detail from one log line, or None when the line says nothing.

    One line on its own: a caller that follows a log keeps the highest percent so far, or uses
    ``LoadProgress``, which does.

    >>> parse_load_progress("Loading safetensors checkpoint shards:  50% Completed | 2/4")
    (30.0, 'weights 2/4 shards')
    """
    step = parse_load_step(line)
    return None if step is None else (step.percent, step.detail)


class LoadProgress:
    """Follows a start's log: the percent only grows; the detail names the latest phase."""

    def __init__(self) -> None:
        self.percent: float | None = None
        self.detail = ""
        self.phase: LoadPhase | None = None

    def feed(self, line: str) -> LoadStep | None:
        """Read one line; the new state when the percent or the detail changed, else None."""
        step = parse_load_step(line)
        if step is None:
            return None
        self.phase = step.phase
        percent = step.percent if self.percent is None else max(self.percent, step.percent)
        if percent == self.percent and step.detail == self.detail:
            return None
        self.percent, self.detail = percent, step.detail
        return LoadStep(percent, step.detail, step.phase)
