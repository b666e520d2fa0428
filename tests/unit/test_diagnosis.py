"""The real cause of a failed vLLM start, read from logs shaped like vLLM 0.32's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.diagnosis import Cause, describe_exit, diagnose, signal_name, strip_prefix
from ryx_desktop.core.errors import ContainerExitedError, OutOfMemoryError
from ryx_desktop.core.failures import LOG_TAIL, exit_error
from ryx_desktop.core.states import InstanceState
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock

API = "APIServer pid=13151"
CORE = "EngineCore pid=14961"
WORKER = "Worker pid=15333"


def line(proc: str, message: str, level: str = "INFO", source: str = "core.py:133") -> str:
    return f"({proc}) {level} 12-01 11:41:44 [{source}] {message}"


def traceback(proc: str, frames: int, last: str, *, level: str | None = None) -> list[str]:
    """A Python traceback as vLLM prints it: through its logger (``level``) or raw (decorated)."""
    body = ["Traceback (most recent call last):"]
    for n in range(frames):
        body += [
            f'  File "/usr/lib/python3.12/site-packages/vllm/mod{n}.py", line {100 + n}, in f{n}',
            f"    result = step_{n}(config)",
        ]
    body.append(last)
    if level is None:
        return [f"({proc}) {text}" for text in body]
    return [line(proc, text, level, "core.py:1510") for text in body]


def startup(extra_info: int = 120) -> list[str]:
    """What a start prints before anything goes wrong: banner, args, config, chatter."""
    lines = [
        "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
        line(API, "non-default args: {'model_tag': '/models/qwen', 'max_model_len': 32768}"),
        line(API, "Resolved architecture: Qwen2ForCausalLM", source="model.py:733"),
        line(API, "Using max model len 32768", source="model.py:2152"),
        line(CORE, "Initializing a V1 LLM engine (v0.32.0) with config: model='/models/qwen'"),
        line(WORKER, "Starting to load model /models/qwen...", source="gpu_model_runner.py:5040"),
    ]
    lines += [
        line(CORE, f"detail {n}: nothing of interest", source="x.py:1") for n in range(extra_info)
    ]
    return lines


def weights(done: int = 4) -> list[str]:
    shards = [
        f"Loading safetensors checkpoint shards: {100 * n // 4:3d}% Completed | {n}/4 "
        "[00:01<00:01,  1.50it/s]"
        for n in range(done + 1)
    ]
    if done == 4:
        shards.append(line(WORKER, "Loading weights took 3.10 seconds", source="loader.py:501"))
    return shards


def engine_failed(cause: str, frames: int = 40) -> list[str]:
    """The engine core's error (logged, then printed again by multiprocessing), then the API
    server's long traceback ending in the generic line: the cause ends up far above the tail."""
    return [
        line(CORE, "EngineCore failed to start.", "ERROR", "core.py:1510"),
        *traceback(CORE, frames, cause, level="ERROR"),
        f"({CORE}) Process EngineCore:",
        *traceback(CORE, frames, cause),
        *traceback(
            API,
            frames,
            "RuntimeError: Engine core initialization failed. See root "
            "cause above. Failed core proc(s): {'EngineCore': 1}",
        ),
    ]


def log(*parts: Iterable[str]) -> list[str]:
    return [text for part in parts for text in part]


COMPILER = (
    "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler found in "
    "torch._inductor.config.cpp.cxx: (None, 'g++')"
)


def test_the_root_cause_far_above_the_tail_becomes_the_reason() -> None:
    lines = log(startup(), weights(), engine_failed(COMPILER, frames=60))
    assert len(lines) > 400
    found = diagnose(lines, 1)
    assert found.cause is Cause.NO_COMPILER
    assert found.reason == "torch.compile found no working C++ compiler in the image"
    assert found.hint is not None and "--enforce-eager" in found.hint
    assert found.line_index is not None and found.line_index < len(lines) - 200
    assert found.evidence is not None and "InvalidCxxCompiler" in found.evidence
    assert not any("InvalidCxxCompiler" in text for text in lines[-LOG_TAIL:])

    error = exit_error("medium-coding", 1, oom=False, lines=lines, while_loading=True)
    assert error.message == (
        "medium-coding failed to start: torch.compile found no working C++ compiler in the "
        "image (exited with code 1)"
    )
    assert error.log_tail == tuple(lines[-LOG_TAIL:])
    assert error.exit_code == 1 and error.evidence == found.evidence
    assert type(error) is ContainerExitedError


def test_an_unknown_exception_is_the_last_one_before_the_generic_line() -> None:
    cause = "KeyError: 'model.layers.0.mlp.gate_up_proj.weight'"
    lines = log(startup(), weights(2), engine_failed(cause))
    found = diagnose(lines, 1)
    assert found.cause is Cause.EXCEPTION
    assert found.reason == cause
    assert found.line_index is not None and cause in lines[found.line_index]
    assert "Engine core initialization failed" not in (found.reason or "")
    error = exit_error("a", 1, oom=False, lines=lines, while_loading=True)
    assert error.message == f"a failed to start: {cause} (exited with code 1)"
    assert "`ryx-desktop logs a`" in error.hint


def test_an_error_line_speaks_when_there_is_no_exception() -> None:
    lines = log(
        startup(10),
        [line(API, "Error with model error=ErrorInfo(message='no', code=404)", "ERROR", "s.py:2")],
        [
            line(
                CORE, "Worker proc VllmWorker-0 died unexpectedly, shutting down", "ERROR", "m.py:9"
            )
        ],
        [line(API, "shutting down", source="launcher.py:254")],
    )
    found = diagnose(lines, 1)
    assert found.cause is Cause.ERROR_LINE
    assert found.reason == "Worker proc VllmWorker-0 died unexpectedly, shutting down"


def test_gpu_out_of_memory_while_loading_the_weights() -> None:
    oom = (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a "
        "total capacity of 23.55 GiB of which 1.02 GiB is free."
    )
    lines = log(
        startup(),
        weights(2),
        [
            line(
                WORKER,
                "Failed to load model - not enough GPU memory. Try lowering "
                "--gpu-memory-utilization to free memory for weights",
                "ERROR",
                "gpu_model_runner.py:5147",
            )
        ],
        engine_failed(oom),
    )
    found = diagnose(lines, 1)
    assert (found.cause, found.reason) == (
        Cause.GPU_OOM,
        "CUDA out of memory while loading the weights",
    )
    assert found.hint is not None and "stop other models" in found.hint
    error = exit_error("medium-coding", 1, oom=False, lines=lines, while_loading=True)
    assert isinstance(error, OutOfMemoryError)
    assert error.message == (
        "medium-coding failed to start: CUDA out of memory while loading the weights "
        "(exited with code 1)"
    )


def test_gpu_out_of_memory_while_capturing_cuda_graphs_asks_for_a_lower_share() -> None:
    lines = log(
        startup(),
        weights(),
        [
            line(
                CORE,
                "GPU KV cache size: 751,328 tokens, Maximum concurrency for 32,768 tokens "
                "per request: 22.93x",
                source="kv_cache_utils.py:2327",
            ),
            "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|████▌     | 5/11",
        ],
        engine_failed("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB."),
    )
    found = diagnose(lines, 1)
    assert found.reason == "CUDA out of memory while capturing CUDA graphs"
    assert found.hint is not None and "gpu_memory_utilization" in found.hint
    assert found.memory


def cause_case(cause_line: str) -> list[str]:
    return log(startup(), weights(), engine_failed(cause_line))


@pytest.mark.parametrize(
    ("cause_line", "cause", "reason", "hint_words"),
    [
        (
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine (this flag also controls CPU "
            "memory reservation on the CPU backend, despite its name).",
            Cause.NO_KV_MEMORY,
            "the weights left no memory for the KV cache",
            "Raise `gpu_memory_utilization`",
        ),
        (
            "ValueError: To serve at least one request with the model's max seq len (32768), "
            "(4.0 GiB KV cache is needed, which is larger than the available KV cache memory "
            "(1.2 GiB). Based on the available memory, the estimated maximum model length is "
            "9792. Try increasing `gpu_memory_utilization` (which also controls CPU memory on the "
            "CPU backend) or decreasing `max_model_len` when initializing the engine.",
            Cause.KV_CACHE_TOO_SMALL,
            "the KV cache cannot hold max_model_len (32768) tokens",
            "Lower `max_model_len` (9792 fits) or raise `gpu_memory_utilization`",
        ),
        (
            "ValueError: The model's max seq len (8192) is larger than the maximum number of "
            "tokens that can be stored in KV cache (4096). Try increasing `gpu_memory_utilization`",
            Cause.KV_CACHE_TOO_SMALL,
            "the KV cache cannot hold max_model_len (8192) tokens",
            "Lower `max_model_len`",
        ),
        (
            "ValueError: Free memory on device cuda:0 (6.9/23.6 GiB) on startup is less than "
            "desired GPU memory utilization (0.9, 21.2 GiB). Decrease GPU memory utilization or "
            "reduce GPU memory used by other processes.",
            Cause.GPU_MEMORY_TAKEN,
            "only 6.9 of 23.6 GiB of GPU memory was free, less than gpu_memory_utilization 0.9 "
            "asks for (21.2 GiB)",
            "Another process holds GPU memory",
        ),
        (
            "ValueError: Available memory on node 0 (3.1/15.5 GiB) on startup is less than "
            "desired CPU memory utilization (0.9, 13.9 GiB).",
            Cause.CPU_MEMORY,
            "only 3.1 of 15.5 GiB of memory was free, less than the CPU build reserves",
            "VLLM_CPU_KVCACHE_SPACE",
        ),
        (
            "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2",
            Cause.CPU_ATTENTION,
            "the CPU backend cannot run this model's attention (head size 16)",
            "head size",
        ),
        (
            "RuntimeError: Insufficient space in /dev/shm for message queue: 160 MiB required, "
            "64 MiB free. Increase /dev/shm (e.g. --shm-size or --ipc=host).",
            Cause.SHM,
            "/dev/shm is too small (160 MiB required, 64 MiB free)",
            "ipc: host",
        ),
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/bin/sh'",
            Cause.NO_SHELL,
            "the image has no /bin/sh (vLLM's CPU build runs `lscpu` through it)",
            "lscpu",
        ),
        (
            "subprocess.CalledProcessError: Command 'lscpu --json --extended=CPU,CORE,NODE "
            "--online' returned non-zero exit status 127. /bin/sh: 1: lscpu: not found",
            Cause.NO_LSCPU,
            "the image has no lscpu (vLLM's CPU build needs it to place its threads)",
            "util-linux",
        ),
        (
            "RuntimeError: Failed to infer device type, please set the environment variable "
            "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue.",
            Cause.NO_DEVICE,
            "vLLM found no device to run on (no GPU, and not the CPU build)",
            "devices: none",
        ),
        (
            "RuntimeError: The NVIDIA driver on your system is too old (found version 11040).",
            Cause.DRIVER,
            "the NVIDIA driver is too old for the image's CUDA",
            "Update the NVIDIA driver",
        ),
        (
            "torch._inductor.exc.InductorError: CppCompileError: C++ compile error: fatal error: "
            "Python.h: No such file or directory",
            Cause.COMPILE_FAILED,
            "torch.compile failed: CppCompileError: C++ compile error: fatal error: Python.h: No "
            "such file or directory",
            "--enforce-eager",
        ),
    ],
)
def test_known_causes_get_their_reason_and_hint(
    cause_line: str, cause: Cause, reason: str, hint_words: str
) -> None:
    found = diagnose(cause_case(cause_line), 1)
    assert found.cause is cause
    assert found.reason == reason
    assert found.hint is not None and hint_words in found.hint


def config_refused(message: str) -> list[str]:
    """The API server refuses its config before the engine starts (a pydantic error)."""
    return log(
        startup(30),
        traceback(
            API,
            25,
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        ),
        [
            f"({API})   Value error, {message} [type=value_error, input_value=ArgsKwargs((), "
            "{'model': '/models/qwen'}), input_type=ArgsKwargs]",
            f"({API})     For further information visit https://errors.pydantic.dev/2.12/v/value_error",
        ],
    )


def test_max_model_len_above_the_model_names_the_limit() -> None:
    lines = config_refused(
        "User-specified max_model_len (65536) is greater than the derived max_model_len "
        "(max_position_embeddings=32768.0 or model_max_length=None in model's config.json). To "
        "allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
    )
    found = diagnose(lines, 1)
    assert found.cause is Cause.MAX_MODEL_LEN
    assert found.reason == "max_model_len 65536 is more than the model supports (32768)"
    assert found.hint == "Lower `max_model_len` to 32768 or less."


def test_sleep_mode_on_the_cpu_build() -> None:
    found = diagnose(config_refused("Sleep mode is not supported on current platform."), 1)
    assert found.cause is Cause.SLEEP_MODE
    assert found.hint == "Set `sleep_mode: false` for this model."


def test_another_config_refusal_is_read_from_pydantic_s_next_line() -> None:
    found = diagnose(config_refused("Invalid dtype 'float12'."), 1)
    assert found.cause is Cause.BAD_ARGUMENTS
    assert found.reason == "vLLM refused its settings: Invalid dtype 'float12'."


def test_a_missing_model_folder() -> None:
    lines = config_refused(
        "Invalid repository ID or local directory specified: '/models/nope'.\nPlease verify"
    )
    found = diagnose(lines, 1)
    assert found.cause is Cause.MODEL_MISSING
    assert found.reason == "vLLM found no model at /models/nope"
    assert found.hint is not None and "docker.models_dir" in found.hint


def test_unknown_flags_are_named_and_their_removal_asked() -> None:
    lines = [
        "usage: vllm serve [model_tag] [options]",
        "vllm serve: error: unrecognized arguments: --foo 1 --bar",
    ]
    found = diagnose(lines, 2)
    assert found.cause is Cause.UNKNOWN_FLAG
    assert found.reason == "this vLLM does not know the flags --foo --bar"
    assert found.hint is not None and "Remove --foo --bar from the model's extra_args" in found.hint
    error = exit_error("tiny", 2, oom=False, lines=lines, while_loading=True)
    assert error.message == (
        "tiny failed to start: this vLLM does not know the flags --foo --bar (exited with code 2)"
    )


def test_other_argument_errors() -> None:
    lines = [
        "usage: api_server.py [-h] [--max-model-len MAX_MODEL_LEN]",
        "api_server.py: error: argument --max-model-len: invalid human_readable_int value: 'x'",
    ]
    found = diagnose(lines, 2)
    assert found.cause is Cause.BAD_ARGUMENTS
    assert found.reason == (
        "vLLM refused its arguments: argument --max-model-len: "
        "invalid human_readable_int value: 'x'"
    )


def test_a_crash_after_ready_says_stopped_with_the_cause() -> None:
    lines = log(
        startup(20),
        ["INFO:     Application startup complete."],
        [f'INFO:     127.0.0.1:{n} - "GET /health HTTP/1.1" 200 OK' for n in range(300)],
        traceback(
            CORE,
            30,
            "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2",
            level="ERROR",
        ),
        traceback(
            API,
            30,
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an "
            "issue. See stack trace (above) for the root cause.",
        ),
    )
    error = exit_error("tiny", 1, oom=False, lines=lines)
    assert error.message == (
        "tiny stopped: the CPU backend cannot run this model's attention (head size 16) "
        "(exited with code 1)"
    )


def test_exec_format_error() -> None:
    found = diagnose(["exec /usr/local/bin/vllm: exec format error"], 255)
    assert found.cause is Cause.EXEC_FORMAT
    assert found.hint is not None and "built for this machine" in found.hint


@pytest.mark.parametrize(
    ("code", "name", "words"),
    [
        (132, "SIGILL", "exited with code 132 (SIGILL, illegal instruction)"),
        (134, "SIGABRT", "exited with code 134 (SIGABRT, aborted)"),
        (135, "SIGBUS", "exited with code 135 (SIGBUS, bus error)"),
        (139, "SIGSEGV", "exited with code 139 (SIGSEGV, segmentation fault)"),
        (137, "SIGKILL", "was killed (exit code 137, SIGKILL)"),
        (143, "SIGTERM", "exited with code 143 (SIGTERM, asked to stop)"),
        (1, None, "exited with code 1"),
        (127, None, "exited with code 127 (its command was not found)"),
        (None, None, "disappeared"),
    ],
)
def test_exit_codes_by_signal_get_their_names(
    code: int | None, name: str | None, words: str
) -> None:
    assert signal_name(code) == name
    assert describe_exit(code) == words


def test_sigill_before_printing_anything_says_so_and_points_at_no_lines() -> None:
    error = exit_error("tiny", 132, oom=False, lines=[], while_loading=True)
    assert error.message == (
        "tiny's container exited with code 132 (SIGILL, illegal instruction) before printing "
        "anything"
    )
    assert "log lines" not in error.hint
    assert "devices: none" in error.hint and "processor instructions" in error.hint
    assert error.log_tail == ()


@pytest.mark.parametrize("code", [1, 134, 139, 137, None])
def test_no_hint_points_at_log_lines_that_are_not_there(code: int | None) -> None:
    error = exit_error("tiny", code, oom=False, lines=[], while_loading=True)
    assert "above" not in error.hint and "last log lines" not in error.hint
    assert "before printing anything" in error.message


def test_sigabrt_with_lines_points_at_them() -> None:
    lines = [
        *startup(5),
        "terminate called after throwing an instance of 'c10::Error'",
        "  what():  CUDA error: no kernel image is available for execution on the device",
    ]
    error = exit_error("tiny", 134, oom=False, lines=lines, while_loading=True)
    assert error.message == "tiny's container exited with code 134 (SIGABRT, aborted) while loading"
    assert "the last log lines name the failed check" in error.hint


def test_137_is_killed_unless_docker_says_out_of_memory() -> None:
    lines = log(startup(), weights(2))
    killed = exit_error("big", 137, oom=False, lines=lines, while_loading=True)
    assert type(killed) is ContainerExitedError
    assert killed.message == "big's container was killed (exit code 137, SIGKILL) while loading"
    assert "dmesg" in killed.hint
    oom = exit_error("big", 137, oom=True, lines=lines, while_loading=True)
    assert isinstance(oom, OutOfMemoryError)
    assert oom.message == "big ran out of memory and was killed (exit code 137)"
    assert "gpu_memory_utilization" in oom.hint


def test_a_sigkill_ignores_older_exceptions_in_the_log() -> None:
    lines = log(startup(), traceback(API, 3, "ValueError: harmless, handled earlier"))
    found = diagnose(lines, 137)
    assert found.cause is Cause.EXIT and found.reason is None


def test_strip_prefix_reads_every_line_shape_of_the_real_log() -> None:
    assert strip_prefix("(Worker pid=15333) INFO 12-01 11:41:57 [default_loader.py:501] x") == (
        "x",
        "INFO",
    )
    assert strip_prefix("(VllmWorker-0 pid=15333) WARNING 12-01 11:41:57 [vllm.py:725] y") == (
        "y",
        "WARNING",
    )
    assert strip_prefix(
        '(EngineCore pid=7) ERROR 12-01 10:21:22 [v1/.../core.py:1510]   File "a.py"'
    ) == ('  File "a.py"', "ERROR")
    assert strip_prefix("(EngineCore pid=7) Process EngineCore:") == ("Process EngineCore:", None)
    assert strip_prefix("INFO:     Application startup complete.") == (
        "INFO:     Application startup complete.",
        None,
    )
    colored = "\x1b[32m(APIServer pid=1) INFO 12-01 11:41:16 [api_utils.py:347]\x1b[0m z"
    assert strip_prefix(colored) == ("z", "INFO")


def test_ten_thousand_lines_are_read_quickly() -> None:
    filler = [
        line(API, f'172.17.0.1:{n} - "POST /v1/chat/completions HTTP/1.1" 200 OK ' + "x" * 150)
        for n in range(9600)
    ]
    lines = log(startup(), weights(), engine_failed(COMPILER, 60), filler)
    assert len(lines) > 10_000
    started = time.perf_counter()
    found = diagnose(lines, 1)
    elapsed = time.perf_counter() - started
    assert found.cause is Cause.NO_COMPILER
    assert elapsed < 0.5, f"{elapsed:.3f} s for {len(lines)} lines"


# ---- the supervisor reads the whole log for the reason -----------------------------------------


class Rig:
    def __init__(self) -> None:
        config = Config.model_validate(
            {"models": {"a": {"model": "/models/a", "port": 8001, "devices": "all"}}}
        )
        self.runtime = FakeRuntime()
        self.clock = VirtualClock()
        self.sup = Supervisor(config, self.runtime, FakeHealth(self.runtime), self.clock)

    async def start_then_exit(self, lines: list[str], code: int) -> ContainerExitedError:
        self.runtime.LOAD_LINES = tuple(lines)  # what the container prints
        self.runtime.behaviour["a"] = "slow"
        await self.sup.open()
        task = asyncio.create_task(self.sup.ensure_ready("a"))
        await self.clock.advance(1)
        container = self.runtime.by_key("a")
        assert container is not None
        self.runtime.exit(container.info.id, code)
        await self.clock.advance(2)
        with pytest.raises(ContainerExitedError) as caught:
            await task
        return caught.value


@pytest.mark.asyncio
async def test_a_failed_start_reports_the_cause_found_far_above_the_tail() -> None:
    rig = Rig()
    lines = log(startup(), weights(), engine_failed(COMPILER, frames=60))
    error = await rig.start_then_exit(lines, 1)
    failure = rig.sup.get("a").failure
    assert failure is not None and rig.sup.get("a").state is InstanceState.FAILED
    assert (
        failure.message
        == error.message
        == (
            "a failed to start: torch.compile found no working C++ compiler in the image "
            "(exited with code 1)"
        )
    )
    assert "--enforce-eager" in failure.hint
    assert failure.log_tail == tuple(lines[-LOG_TAIL:])
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_start_that_dies_by_sigill_before_printing_anything() -> None:
    rig = Rig()
    error = await rig.start_then_exit([], 132)
    assert error.message == (
        "a's container exited with code 132 (SIGILL, illegal instruction) before printing anything"
    )
    assert "above" not in error.hint and "devices: none" in error.hint
    await rig.sup.close()


@pytest.mark.asyncio
async def test_a_ready_model_that_dies_reports_why() -> None:
    rig = Rig()
    await rig.sup.open()
    await rig.sup.ensure_ready("a")
    container = rig.runtime.by_key("a")
    assert container is not None
    rig.runtime.write_log(
        container.info.id,
        *traceback(
            CORE,
            30,
            "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2",
            level="ERROR",
        ),
        *traceback(
            API,
            30,
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered "
            "an issue. See stack trace (above) for the root cause.",
        ),
    )
    rig.runtime.exit(container.info.id, 1)
    await rig.clock.advance(1)
    failure = rig.sup.get("a").failure
    assert failure is not None
    assert failure.message == (
        "a stopped: the CPU backend cannot run this model's attention (head size 16) "
        "(exited with code 1)"
    )
    await rig.sup.close()


@pytest.mark.asyncio
async def test_an_exited_container_found_at_open_reports_why() -> None:
    rig = Rig()
    cid = rig.runtime.add_running("a", 8001, "/models/a", spec_hash=None)
    rig.runtime.containers[cid].log_lines = [
        "usage: vllm serve [model_tag] [options]",
        "vllm serve: error: unrecognized arguments: --foo",
    ]
    rig.runtime.exit(cid, 2)
    await rig.sup.open(watch=False)
    failure = rig.sup.get("a").failure
    assert failure is not None and failure.exit_code == 2
    assert (
        failure.message == "a stopped: this vLLM does not know the flag --foo (exited with code 2)"
    )
    assert "Remove --foo from the model's extra_args" in failure.hint
    await rig.sup.close()
