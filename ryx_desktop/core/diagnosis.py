"""Why a vLLM container failed: the root cause found in its whole log, with a hint to fix it.

When vLLM's engine fails to start, its last lines are the API server's generic
``RuntimeError: Engine core initialization failed. See root cause above.``; the cause can be
hundreds of lines higher. ``diagnose`` reads the whole log once (linear, one cheap test per line,
a few milliseconds for 10 000 lines, fine on the event loop) and looks for, in this order:

1. a known failure (GPU out of memory, no C++ compiler for torch.compile, max_model_len too
   large, an unknown flag, ...): a sentence in our words and the specific fix;
2. else the last exception before the generic one (the engine's or a worker's), in vLLM's words;
3. else the last ``ERROR`` line;
4. else what the exit code says (signals get their names: 132 is SIGILL, 137 SIGKILL, ...).

Texts are vLLM's own, read in its source (0.6 to 0.32) and in real logs of the 0.32 CPU build.
Pure functions over lines: no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ryx_desktop.core.progress import LoadPhase, parse_load_step


class Cause(enum.StrEnum):
    """What kind of failure a diagnosis found."""

    NO_COMPILER = "no_compiler"  # torch.compile needs a C++ compiler the image lacks
    COMPILE_FAILED = "compile_failed"  # torch.compile (Inductor) failed otherwise
    MAX_MODEL_LEN = "max_model_len"  # max_model_len above what the model supports
    KV_CACHE_TOO_SMALL = "kv_cache_too_small"  # the KV cache cannot hold max_model_len tokens
    NO_KV_MEMORY = "no_kv_memory"  # nothing left for the KV cache after the weights
    GPU_OOM = "gpu_oom"  # CUDA out of memory
    GPU_MEMORY_TAKEN = "gpu_memory_taken"  # another process holds GPU memory
    CPU_MEMORY = "cpu_memory"  # CPU build: not enough free RAM for what it reserves
    SLEEP_MODE = "sleep_mode"  # --enable-sleep-mode on a platform without it
    UNKNOWN_FLAG = "unknown_flag"  # argparse: unrecognized arguments
    BAD_ARGUMENTS = "bad_arguments"  # argparse: any other refusal
    CPU_ATTENTION = "cpu_attention"  # the CPU backend cannot run this head size
    SHM = "shm"  # /dev/shm too small
    NO_SHELL = "no_shell"  # the image has no /bin/sh (the CPU build runs lscpu through it)
    NO_LSCPU = "no_lscpu"  # the image has no lscpu
    EXEC_FORMAT = "exec_format"  # the image is built for another architecture
    NO_DEVICE = "no_device"  # vLLM found no platform to run on
    MODEL_MISSING = "model_missing"  # no model at the given path
    DRIVER = "driver"  # the NVIDIA driver is too old for the image's CUDA
    OOM_KILLED = "oom_killed"  # the kernel killed it for memory (OOMKilled)
    EXCEPTION = "exception"  # an exception nothing above explains
    ERROR_LINE = "error_line"  # an ERROR log line, no exception
    EXIT = "exit"  # nothing in the log: only the exit code speaks


#: The causes that mean memory ran short (callers report them as out-of-memory errors).
MEMORY_CAUSES = frozenset(
    {
        Cause.KV_CACHE_TOO_SMALL,
        Cause.NO_KV_MEMORY,
        Cause.GPU_OOM,
        Cause.GPU_MEMORY_TAKEN,
        Cause.CPU_MEMORY,
        Cause.OOM_KILLED,
    }
)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Why a container ended, as far as its log and exit code tell.

    ``reason`` is a sentence fragment without the model's name ("CUDA out of memory while loading
    the weights"), None when neither the log nor the exit code says anything. ``hint`` is the
    specific fix when one is known. ``evidence`` is the log line (without vLLM's prefix) the
    reason comes from, at ``line_index`` in the lines given. ``exit`` describes the exit code
    ("exited with code 132 (SIGILL, illegal instruction)").
    """

    cause: Cause
    reason: str | None
    hint: str | None
    exit: str
    evidence: str | None = None
    line_index: int | None = None

    @property
    def memory(self) -> bool:
        """Whether memory ran short (GPU, KV cache, or the kernel's OOM killer)."""
        return self.cause in MEMORY_CAUSES


# ---- exit codes -------------------------------------------------------------------------------

#: Linux signal numbers a container's main process may die of: name and words.
_SIGNALS = {
    1: ("SIGHUP", "hang-up"),
    2: ("SIGINT", "interrupted"),
    4: ("SIGILL", "illegal instruction"),
    6: ("SIGABRT", "aborted"),
    7: ("SIGBUS", "bus error"),
    8: ("SIGFPE", "arithmetic error"),
    9: ("SIGKILL", "killed"),
    11: ("SIGSEGV", "segmentation fault"),
    15: ("SIGTERM", "asked to stop"),
}
SIGKILL_EXIT = 128 + 9


def signal_name(code: int | None) -> str | None:
    """``SIGILL`` for exit code 132 and so on; None for an exit that is not a known signal."""
    if code is None or code <= 128:
        return None
    named = _SIGNALS.get(code - 128)
    return named[0] if named else None


def describe_exit(code: int | None) -> str:
    """How a container ended, for a sentence that starts with its name.

    >>> describe_exit(132)
    'exited with code 132 (SIGILL, illegal instruction)'
    >>> describe_exit(137)
    'was killed (exit code 137, SIGKILL)'
    """
    if code is None:
        return "disappeared"
    if code == SIGKILL_EXIT:
        return f"was killed (exit code {code}, SIGKILL)"
    if code > 128 and code - 128 in _SIGNALS:
        name, words = _SIGNALS[code - 128]
        return f"exited with code {code} ({name}, {words})"
    if code == 126:
        return "exited with code 126 (its command could not be run)"
    if code == 127:
        return "exited with code 127 (its command was not found)"
    return f"exited with code {code}"


def _exit_hint(code: int | None, has_lines: bool) -> str | None:
    """The fix an exit code alone suggests, when no log line tells more."""
    name = signal_name(code)
    if name == "SIGILL":
        return (
            "The image uses processor instructions this machine lacks: a GPU build of vLLM on a "
            "machine without an NVIDIA GPU, or a build made for newer processors. Use the image "
            "built for this machine (the CPU build, with `devices: none`, where there is no GPU)."
        )
    if name == "SIGABRT":
        where = "the last log lines name the failed check" if has_lines else "it printed nothing"
        return (
            f"vLLM aborted in native code ({where}); a common cause is a GPU or NVIDIA driver "
            "the image was not built for."
        )
    if name == "SIGSEGV":
        return (
            "vLLM crashed in native code: usually an image built for other hardware or another "
            "driver. Try the image made for this machine, or `--enforce-eager` in extra_args."
        )
    if name == "SIGBUS":
        return "Often a too small /dev/shm: run the container with `ipc: host`."
    if name == "SIGKILL":
        return (
            "Something killed it from outside: `docker kill`, or the kernel when the machine ran "
            "short of memory (see `dmesg`); lower `max_model_len` if memory is tight."
        )
    if code == 127:
        return "The image has no `vllm` command: use a vLLM image whose entrypoint is `vllm serve`."
    if code == 126:
        return "The image's command cannot run here: check the image is built for this machine."
    return None


# ---- reading vLLM's lines ---------------------------------------------------------------------

#: ``(EngineCore pid=7) ERROR 12-01 10:21:22 [core.py:1510] `` and the like; both parts optional.
_PREFIX = re.compile(
    r"(?:\((?P<proc>[A-Za-z_][\w.-]*)(?:[ ,][^()]*)?\) )?"
    r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? "
    r"\[[^\]]*\] )?"
)
_ANSI = re.compile(r"\x1b\[[\d;]*[A-Za-z]")

#: The last line of a Python traceback: ``pkg.mod.SomeError: message``.
_EXCEPTION = re.compile(
    r"(?P<type>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Fault))"
    r"(?:: (?P<message>.*))?$"
)
#: Lines that only report that something else failed (skipped as reasons).
_GENERIC = re.compile(
    r"Engine core initialization failed|EngineCore encountered an issue|"
    r"Frontend process failed during engine core initialization|EngineDeadError|"
    r"EngineCore failed to start|EngineCore encountered a fatal error"
)
#: Of those, the ones printed after the cause: the root exception comes before the first.
_AFTERMATH = re.compile(
    r"Engine core initialization failed|EngineCore encountered an issue|"
    r"Frontend process failed during engine core initialization|EngineDeadError"
)
_NOISE_TYPES = frozenset(
    {"KeyboardInterrupt", "SystemExit", "asyncio.exceptions.CancelledError", "CancelledError"}
)

#: Words one of which is in every line a failure can be read from (plain substring tests: much
#: cheaper than a regex over long lines).
_CANDIDATE_WORDS = (
    "rror",
    "ERROR",
    "xception",
    "memory",
    "max_model_len",
    "max seq len",
    "Sleep mode",
    "Unsupported CPU attention",
    "Insufficient space",
    "/bin/sh",
    "lscpu",
    "exec format",
    "device type",
    "Invalid repository",
    "driver",
    "C++ compiler",
)
#: ERROR lines about one request (a bad model name, a bad parameter), not about the server.
_REQUEST_ERROR = "ErrorInfo("


def _candidate(line: str) -> bool:
    return any(word in line for word in _CANDIDATE_WORDS)


def strip_prefix(line: str) -> tuple[str, str | None]:
    """A log line without vLLM's process/level prefix, and its level (None when it has none).

    >>> strip_prefix("(EngineCore pid=7) ERROR 12-01 10:21:22 [core.py:1510] ValueError: x")
    ('ValueError: x', 'ERROR')
    """
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    match = _PREFIX.match(line)
    if match is None or match.end() == 0:
        return line, None
    return line[match.end() :], match["level"]


# ---- known failures ---------------------------------------------------------------------------

_Explain = Callable[[re.Match[str], "_Context"], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Context:
    """What an explanation may use besides its own match."""

    phase: LoadPhase | None  # how far the start had come when the line was written
    next_line: str  # the line after (pydantic puts its message there)


@dataclass(frozen=True, slots=True)
class _Known:
    cause: Cause
    pattern: re.Pattern[str]
    explain: _Explain
    weak: bool = False  # a later strong match wins over an earlier weak one


def _text(reason: str, hint: str) -> _Explain:
    return lambda _match, _context: (reason, hint)


_PHASE_WORDS = {
    LoadPhase.ENGINE: "while loading the weights",
    LoadPhase.WEIGHTS: "while loading the weights",
    LoadPhase.WEIGHTS_DONE: "after loading the weights",
    LoadPhase.COMPILE: "while compiling",
    LoadPhase.PROFILE: "while measuring memory",
    LoadPhase.KV_CACHE: "while allocating the KV cache",
    LoadPhase.CUDA_GRAPHS: "while capturing CUDA graphs",
    LoadPhase.WARMUP: "while warming up",
    LoadPhase.ENGINE_READY: "while starting the API server",
    LoadPhase.SERVER: "while starting the API server",
    LoadPhase.UP: "while serving",
}


def _gpu_oom(_match: re.Match[str], context: _Context) -> tuple[str, str]:
    phase = context.phase
    words = _PHASE_WORDS.get(phase, "") if phase is not None else ""
    reason = f"CUDA out of memory {words}".rstrip()
    if phase in (LoadPhase.ENGINE, LoadPhase.WEIGHTS):
        hint = (
            "The weights do not fit in the GPU memory that is free: stop other models on this "
            "GPU, or use a smaller (quantized) model or more GPUs."
        )
    else:
        hint = (
            "Lower `gpu_memory_utilization` (it leaves room for CUDA graphs and warm-up) or "
            "`max_model_len`, or stop other models on this GPU."
        )
    return reason, hint


def _max_model_len(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    asked, limit = match["asked"], match["limit"]
    return (
        f"max_model_len {asked} is more than the model supports ({limit})",
        f"Lower `max_model_len` to {limit} or less.",
    )


def _kv_too_small(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    estimate = re.search(r"estimated maximum model length is (\d+)", match.string)
    fits = f" ({estimate[1]} fits)" if estimate else ""
    return (
        f"the KV cache cannot hold max_model_len ({match['len']}) tokens",
        f"Lower `max_model_len`{fits} or raise `gpu_memory_utilization`.",
    )


def _free_memory(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"only {match['free']} of {match['total']} GiB of GPU memory was free, less than "
        f"gpu_memory_utilization {match['util']} asks for ({match['want']} GiB)",
        "Another process holds GPU memory: stop it (`nvidia-smi` lists it) or lower "
        "`gpu_memory_utilization` to fit what is free.",
    )


def _unknown_flag(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    words = match["args"].split()
    flags = [w for w in words if w.startswith("-")]
    if not flags:
        named = " ".join(words)
        return (
            f"vLLM got arguments it does not take: {named}",
            "Check the model's extra_args and the image's entrypoint (`vllm serve`).",
        )
    named = " ".join(flags)
    plural = "s" if len(flags) > 1 else ""
    return (
        f"this vLLM does not know the flag{plural} {named}",
        f"Remove {named} from the model's extra_args (or use a vLLM version that has it).",
    )


def _bad_arguments(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"vLLM refused its arguments: {match['message'].strip()}",
        "Fix the model's extra_args (`vllm serve --help` lists the flags).",
    )


def _cpu_attention(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"the CPU backend cannot run this model's attention (head size {match['head']})",
        "Use a model whose head size the CPU build supports (32, 64, 80, 96, 112, 128, 160, "
        "192, 224, 256 or 512), or run it on a GPU.",
    )


def _shm(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"{match['path']} is too small ({match['need']} MiB required, {match['free']} MiB free)",
        "Run the container with `ipc: host` (ryx-desktop's own containers have it; a compose "
        "file needs `ipc: host` or a larger `shm_size`).",
    )


def _model_missing(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"vLLM found no model at {match['model']}",
        "Check `model:` and `docker.models_dir`: the folder needs the model's config.json.",
    )


def _cpu_memory(match: re.Match[str], _context: _Context) -> tuple[str, str]:
    return (
        f"only {match['free']} of {match['total']} GiB of memory was free, less than the CPU "
        "build reserves",
        "Set `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache) in the model's env, lower "
        "`gpu_memory_utilization` (the share of RAM the CPU build takes), or free memory.",
    )


def _validation(match: re.Match[str], context: _Context) -> tuple[str, str]:
    found = re.search(r"Value error, (.*?)(?: \[type=|$)", context.next_line)
    message = found[1] if found else match["message"] or "invalid settings"
    return (
        f"vLLM refused its settings: {_shorten(message)}",
        "Fix the setting it names in the model's config or extra_args.",
    )


_ENFORCE_EAGER = "add `--enforce-eager` to the model's extra_args"

#: Texts of failures with a known fix. Order does not matter: the earliest line wins.
_KNOWN: tuple[_Known, ...] = (
    _Known(
        Cause.NO_COMPILER,
        re.compile(r"InvalidCxxCompiler|No working C\+\+ compiler found"),
        _text(
            "torch.compile found no working C++ compiler in the image",
            f"Use an image with a C++ compiler (g++), or {_ENFORCE_EAGER} to skip torch.compile.",
        ),
    ),
    _Known(
        Cause.COMPILE_FAILED,
        re.compile(r"(?:InductorError|CppCompileError|BackendCompilerFailed): (?P<msg>.*)"),
        lambda m, _c: (
            f"torch.compile failed: {_shorten(m['msg'])}",
            f"{_ENFORCE_EAGER[0].upper()}{_ENFORCE_EAGER[1:]} to skip torch.compile.",
        ),
        weak=True,
    ),
    _Known(
        Cause.MAX_MODEL_LEN,
        re.compile(
            r"User-specified max_model_len \((?P<asked>\d+)\) is greater than the derived "
            r"max_model_len \((?:\w+=)?(?P<limit>\d+)"
        ),
        _max_model_len,
    ),
    _Known(
        Cause.KV_CACHE_TOO_SMALL,
        re.compile(r"To serve at least one request with the model's max seq len \((?P<len>\d+)\)"),
        _kv_too_small,
    ),
    _Known(
        Cause.KV_CACHE_TOO_SMALL,
        re.compile(
            r"The model's max seq len \((?P<len>\d+)\) is larger than the maximum number of "
            r"tokens that can be stored in KV cache"
        ),
        _kv_too_small,
    ),
    _Known(
        Cause.NO_KV_MEMORY,
        re.compile(r"No available memory for the cache blocks"),
        _text(
            "the weights left no memory for the KV cache",
            "Raise `gpu_memory_utilization` if the GPU has room, or use a smaller (quantized) "
            "model; lowering `max_model_len` does not help here.",
        ),
    ),
    _Known(
        Cause.GPU_MEMORY_TAKEN,
        re.compile(
            r"Free memory on device[^(]*\((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is "
            r"less than (?:desired GPU memory utilization|the engine's budget[^(]*)"
            r" \((?P<util>[\d.]+), (?P<want>[\d.]+) GiB\)"
        ),
        _free_memory,
    ),
    _Known(
        Cause.CPU_MEMORY,
        re.compile(
            r"Available memory on node \d+ \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on "
            r"(?:startup|kv cache allocation) is less than"
        ),
        _cpu_memory,
    ),
    _Known(
        Cause.GPU_OOM,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|not enough GPU memory|CUDA error: out of memory"
        ),
        _gpu_oom,
        weak=True,
    ),
    _Known(
        Cause.SLEEP_MODE,
        re.compile(r"Sleep mode is not supported on current platform"),
        _text(
            "this vLLM build has no sleep mode (the CPU build has none)",
            "Set `sleep_mode: false` for this model.",
        ),
    ),
    _Known(
        Cause.UNKNOWN_FLAG,
        re.compile(r"^\S+(?: serve)?: error: unrecognized arguments: (?P<args>.+)$"),
        _unknown_flag,
    ),
    _Known(
        Cause.BAD_ARGUMENTS,
        re.compile(r"^\S+(?: serve)?: error: (?P<message>.+)$"),
        _bad_arguments,
        weak=True,
    ),
    _Known(
        Cause.CPU_ATTENTION,
        re.compile(r"Unsupported CPU attention configuration: head_dim=(?P<head>\d+)"),
        _cpu_attention,
    ),
    _Known(
        Cause.SHM,
        re.compile(
            r"Insufficient space in (?P<path>\S+) for [^:]*: (?P<need>\d+) MiB required, "
            r"(?P<free>\d+) MiB free"
        ),
        _shm,
    ),
    _Known(
        Cause.NO_SHELL,
        re.compile(r"No such file or directory: '/bin/sh'"),
        _text(
            "the image has no /bin/sh (vLLM's CPU build runs `lscpu` through it)",
            "Use an image that has /bin/sh and lscpu (util-linux).",
        ),
    ),
    _Known(
        Cause.NO_LSCPU,
        re.compile(r"lscpu: (?:not found|command not found)|No such file or directory: 'lscpu'"),
        _text(
            "the image has no lscpu (vLLM's CPU build needs it to place its threads)",
            "Use an image that has lscpu (the util-linux package).",
        ),
    ),
    _Known(
        Cause.EXEC_FORMAT,
        re.compile(r"exec format error"),
        _text(
            "the image is built for another processor architecture",
            "Use an image built for this machine (`docker image inspect` shows its platform).",
        ),
    ),
    _Known(
        Cause.NO_DEVICE,
        re.compile(r"Failed to infer device type"),
        _text(
            "vLLM found no device to run on (no GPU, and not the CPU build)",
            "Use the GPU image on a machine with an NVIDIA GPU, or the CPU build with "
            "`devices: none`.",
        ),
    ),
    _Known(
        Cause.MODEL_MISSING,
        re.compile(r"Invalid repository ID or local directory specified: '(?P<model>[^']*)'"),
        _model_missing,
    ),
    _Known(
        Cause.DRIVER,
        re.compile(
            r"CUDA driver version is insufficient|NVIDIA driver on your system is too old|"
            r"forward compatibility was attempted on non supported HW"
        ),
        _text(
            "the NVIDIA driver is too old for the image's CUDA",
            "Update the NVIDIA driver, or use an older vLLM image.",
        ),
    ),
    _Known(
        Cause.BAD_ARGUMENTS,
        re.compile(r"^(?:pydantic_core\._pydantic_core\.)?ValidationError: (?P<message>.*)$"),
        _validation,
        weak=True,
    ),
)


def _phase_at(lines: Sequence[str], index: int) -> LoadPhase | None:
    """How far the start had come at line ``index``: the phase of the last line that tells."""
    for line in reversed(lines[:index]):
        step = parse_load_step(line)
        if step is not None:
            return step.phase
    return None


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---- the diagnosis ----------------------------------------------------------------------------


def diagnose(lines: Sequence[str], exit_code: int | None, *, oom_killed: bool = False) -> Diagnosis:
    """The root cause of a container's end, from its whole log (oldest line first).

    ``oom_killed`` is Docker's ``OOMKilled`` (or an ``oom`` event): the kernel killed it for
    memory, whatever the log says.
    """
    exit_words = describe_exit(exit_code)
    if oom_killed:
        return Diagnosis(
            Cause.OOM_KILLED,
            "it ran out of memory and was killed",
            "Lower `gpu_memory_utilization` or `max_model_len`, or stop other models first.",
            exit_words,
        )
    best: tuple[_Known, re.Match[str], int] | None = None
    last_exception: int | None = None
    first_generic: int | None = None
    last_error: int | None = None
    for index, line in enumerate(lines):
        if not _candidate(line):
            continue
        body, level = strip_prefix(line)
        if level == "ERROR" and body[:1].strip() and _REQUEST_ERROR not in body:
            last_error = index
        if _GENERIC.search(body):
            if first_generic is None and _AFTERMATH.search(body):
                first_generic = index
            continue
        if best is None or best[0].weak:
            for known in _KNOWN:
                if best is not None and known.weak:
                    continue
                match = known.pattern.search(body)
                if match is not None:
                    best = (known, match, index)
                    break
        if first_generic is None:
            exception = _EXCEPTION.match(body)
            if exception is not None and exception["type"] not in _NOISE_TYPES:
                last_exception = index
    has_lines = bool(lines)
    if best is not None:
        known, match, at = best
        following = strip_prefix(lines[at + 1])[0] if at + 1 < len(lines) else ""
        reason, hint = known.explain(match, _Context(_phase_at(lines, at), following))
        return Diagnosis(known.cause, reason, hint, exit_words, match.string.strip(), at)
    exit_hint = _exit_hint(exit_code, has_lines)
    signal = signal_name(exit_code)
    if signal in ("SIGKILL", "SIGTERM") or (signal is not None and last_exception is None):
        return Diagnosis(Cause.EXIT, None, exit_hint, exit_words)
    for cause, found in ((Cause.EXCEPTION, last_exception), (Cause.ERROR_LINE, last_error)):
        if found is not None:
            evidence = strip_prefix(lines[found])[0].strip()
            return Diagnosis(cause, _shorten(evidence), exit_hint, exit_words, evidence, found)
    return Diagnosis(Cause.EXIT, None, exit_hint, exit_words)
