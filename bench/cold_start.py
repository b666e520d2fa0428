"""Cold start: ryx-desktop's start of a model against a scripted manual start of the same container.

``python -m bench.cold_start [--rounds N] [--warmup N] [--second-start] [--image REF --model PATH
--models-dir DIR --extra-arg=... -e K=V --devices none]``

Two ways of starting the same container (image, command, mounts, environment: all taken from
ryx-desktop's own container spec for the model, so they cannot drift apart) run in alternating
rounds, one after the other, in one process:

* **reference**: what a user would script by hand: ``docker run -d`` through the Docker SDK
  (``containers.run``: create + start), then ``GET /health`` every 20 ms until it answers 200 and
  ``GET /v1/models`` lists the served name. Timed from the create call to ready; then the
  container is removed.
* **ryx**: the real engine (``ryx_desktop.app.build_engine``: ``DockerRuntime``, the HTTP health
  probe, the supervisor), opened once and kept open as the app keeps it: timed from
  ``supervisor.start(key)`` to its return (ready); then ``supervisor.stop(key)``.

Which of the two goes first alternates from round to round. The report has every round, the
medians, ryx's added time (ryx median - reference median, in ms) against the target "ryx adds
< 100 ms", and the ratio of the medians.

``--second-start`` measures the compile cache instead (``docker.vllm_cache``): per round a fresh
cache folder, the model started twice through ryx (stopped in between), first against second.

By default the image is the fake vLLM image of the tests (built if missing) with
``FAKE_VLLM_LOAD_SECONDS=1.0``, so there is a load to wait for. Containers: the reference's are
named ``ryxE-bench-ref-*``, ryx's is ``ryx-vllm-ryxe-bench`` (model key ``ryxe-bench``); host ports
come from 18500-18599. Only those containers are removed, and only by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_KEY = "ryxe-bench"
REFERENCE_PREFIX = "ryxE-bench-ref-"
PORT_RANGE = range(18500, 18600)
POLL_S = 0.02  # the reference's health polling interval
EXIT_CHECK_S = 0.5  # how often the reference asks Docker whether its container still runs
TARGET_ADDED_MS = 100.0  # ryx may add less than this to a cold start
FAKE_LOAD_SECONDS = "1.0"
DEFAULT_MODEL = "/models/bench"
STOP_TIMEOUT = 5.0


# --- pure parts: parsing, statistics, the report ---------------------------------------------


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``["K=V", ...]`` as a mapping; a pair without ``=`` is an error a user can fix."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"-e takes NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def parse_devices(text: str) -> str | list[int]:
    """``all``, ``none`` or GPU indexes like ``0,1`` (the config's ``devices:``)."""
    if text in ("all", "none"):
        return text
    try:
        indexes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        indexes = []
    if not indexes or any(i < 0 for i in indexes):
        raise ValueError(f"--devices takes all, none or GPU indexes like 0,1, got {text!r}")
    return indexes


def lists_served(body: bytes, served: str) -> bool:
    """Whether a ``/v1/models`` answer lists ``served``."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return False
    return any(isinstance(m, dict) and m.get("id") == served for m in models)


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def added_ms(ryx: Sequence[float], reference: Sequence[float]) -> float:
    """ryx's added time in ms: median of ryx's starts minus median of the reference's (seconds)."""
    return (median(ryx) - median(reference)) * 1e3


def ratio(mine: Sequence[float], base: Sequence[float]) -> float:
    """Median of ``mine`` over median of ``base``; NaN when the base is 0 or empty."""
    below = median(base)
    return median(mine) / below if below and below == below else float("nan")


def fmt(value: float | None, digits: int = 3, sign: str = "") -> str:
    """``value`` with fewer decimals the larger it is; ``-`` for None or NaN."""
    if value is None or value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:{sign},.0f}"
    if abs(value) >= 10:
        return f"{value:{sign}.{min(digits, 1)}f}"
    return f"{value:{sign}.{digits}f}"


def row(cells: Sequence[str]) -> str:
    """A markdown table row."""
    return "| " + " | ".join(cells) + " |"


def value_range(values: Sequence[float], digits: int = 0, sign: str = "") -> str:
    """`` [rounds lo .. hi]`` for two values or more, else empty."""
    if len(values) < 2:
        return ""
    return f" [rounds {fmt(min(values), digits, sign)} .. {fmt(max(values), digits, sign)}]"


@dataclass(frozen=True)
class Start:
    """One timed start: seconds from the first call to ready, and to a running container."""

    seconds: float
    launched: float | None = None  # create call -> container started (None when unknown)


@dataclass(frozen=True)
class Round:
    """One round of the comparison: both starts, and which ran first."""

    number: int
    reference: Start
    ryx: Start
    ryx_first: bool


def comparison_report(rounds: Sequence[Round]) -> str:
    """The table of rounds and medians, and the verdict line."""
    lines = [
        row(
            [
                "round",
                "first",
                "reference launch ms",
                "reference ready s",
                "ryx launch ms",
                "ryx ready s",
                "ryx - reference ms",
                "ryx / reference",
            ]
        ),
        "|" + "---|" * 8,
    ]

    def launch_ms(start: Start) -> float | None:
        return None if start.launched is None else start.launched * 1e3

    for one in rounds:
        ref, ryx = one.reference.seconds, one.ryx.seconds
        lines.append(
            row(
                [
                    str(one.number),
                    "ryx" if one.ryx_first else "reference",
                    fmt(launch_ms(one.reference), 1),
                    fmt(ref),
                    fmt(launch_ms(one.ryx), 1),
                    fmt(ryx),
                    fmt((ryx - ref) * 1e3, 1, "+"),
                    f"{fmt(ryx / ref, 3)}x" if ref else "-",
                ]
            )
        )
    refs = [r.reference.seconds for r in rounds]
    ryxs = [r.ryx.seconds for r in rounds]
    ref_launch = [x * 1e3 for r in rounds if (x := r.reference.launched) is not None]
    ryx_launch = [x * 1e3 for r in rounds if (x := r.ryx.launched) is not None]
    lines.append(
        row(
            [
                "median",
                "",
                fmt(median(ref_launch), 1),
                fmt(median(refs)),
                fmt(median(ryx_launch), 1),
                fmt(median(ryxs)),
                fmt(added_ms(ryxs, refs), 1, "+"),
                f"{fmt(ratio(ryxs, refs), 3)}x",
            ]
        )
    )
    lines += ["", comparison_verdict(rounds)]
    return "\n".join(lines)


def comparison_verdict(rounds: Sequence[Round]) -> str:
    """``ryx: PASS|FAIL  added cold-start time ...`` against :data:`TARGET_ADDED_MS`."""
    refs = [r.reference.seconds for r in rounds]
    ryxs = [r.ryx.seconds for r in rounds]
    added = added_ms(ryxs, refs)
    per_round = [(r.ryx.seconds - r.reference.seconds) * 1e3 for r in rounds]
    verdict = "PASS" if added < TARGET_ADDED_MS else "FAIL"
    return (
        f"ryx: {verdict}  added cold-start time: {fmt(added, 1, '+')} ms (ryx median - reference "
        f"median){value_range(per_round, 1, '+')}, ratio {fmt(ratio(ryxs, refs), 3)}x "
        f"(target < {TARGET_ADDED_MS:g} ms)"
    )


@dataclass(frozen=True)
class SecondStart:
    """One round of ``--second-start``: both starts, and what the first left in the cache."""

    number: int
    first: Start
    second: Start
    cache_files: int
    cache_bytes: int


def second_start_report(rounds: Sequence[SecondStart], cache_mounted: bool) -> str:
    """The table of first against second starts, and the summary line."""
    lines = [
        row(["round", "first start s", "second start s", "second / first", "cache after first"]),
        "|" + "---|" * 5,
    ]
    for one in rounds:
        first, second = one.first.seconds, one.second.seconds
        lines.append(
            row(
                [
                    str(one.number),
                    fmt(first),
                    fmt(second),
                    f"{fmt(second / first, 3)}x" if first else "-",
                    f"{one.cache_files} files, {one.cache_bytes / 1e6:.1f} MB",
                ]
            )
        )
    firsts = [r.first.seconds for r in rounds]
    seconds = [r.second.seconds for r in rounds]
    lines.append(
        row(
            [
                "median",
                fmt(median(firsts)),
                fmt(median(seconds)),
                f"{fmt(ratio(seconds, firsts), 3)}x",
                "",
            ]
        )
    )
    per_round = [r.second.seconds / r.first.seconds for r in rounds if r.first.seconds]
    saved = (median(firsts) - median(seconds)) * 1e3
    lines += [
        "",
        f"ryx: info  second start: {fmt(ratio(seconds, firsts), 3)}x the first"
        f"{value_range(per_round, 3)}, {fmt(saved, 1, '+')} ms saved (medians)",
    ]
    if not cache_mounted:
        lines.append(
            "note: this checkout's config has no docker.vllm_cache, so no compile cache was "
            "mounted: both starts did the same work"
        )
    return "\n".join(lines)


def folder_size(path: Path) -> tuple[int, int]:
    """Files under ``path`` and their bytes (0, 0 when it does not exist)."""
    files = size = 0
    for entry in path.rglob("*") if path.exists() else ():
        with contextlib.suppress(OSError):
            if entry.is_file() and not entry.is_symlink():
                files += 1
                size += entry.stat().st_size
    return files, size


# --- the setup -------------------------------------------------------------------------------


@dataclass
class Setup:
    """What to start, from the command line."""

    image: str
    model: str
    models_dir: Path
    served_name: str | None
    extra_args: list[str]
    env: dict[str, str]
    devices: str | list[int]
    timeout: float
    workdir: Path
    ports: list[int] = field(default_factory=list)  # ryx's model port, then the reference's
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None

    def config_data(self, vllm_cache: Path | None) -> dict[str, Any]:
        """The ryx config (as a mapping) with the one model ``MODEL_KEY``."""
        hf_cache = self.workdir / "hf-cache"
        hf_cache.mkdir(exist_ok=True)
        docker: dict[str, Any] = {
            "image": self.image,
            "models_dir": str(self.models_dir),
            "hf_cache": str(hf_cache),
            "stop_timeout": STOP_TIMEOUT,
        }
        if vllm_cache is not None:
            docker["vllm_cache"] = str(vllm_cache)
        model: dict[str, Any] = {
            "model": self.model,
            "port": self.ports[0],
            "devices": self.devices,
            "extra_args": list(self.extra_args),
            "env": dict(self.env),
            "start_timeout": self.timeout,
        }
        if self.served_name:
            model["served_name"] = self.served_name
        if self.max_model_len is not None:
            model["max_model_len"] = self.max_model_len
        if self.gpu_memory_utilization is not None:
            model["gpu_memory_utilization"] = self.gpu_memory_utilization
        return {
            "proxy": {"host": "127.0.0.1", "port": self.ports[-1]},
            "docker": docker,
            "models": {MODEL_KEY: model},
        }


def has_vllm_cache() -> bool:
    """Whether this checkout's config knows ``docker.vllm_cache`` (the compile cache folder)."""
    from ryx_desktop.config import DockerConfig

    return "vllm_cache" in DockerConfig.model_fields


def make_config(setup: Setup, vllm_cache: Path | None) -> Any:
    """The validated ``Config``; ``vllm_cache`` is left out when the schema lacks it."""
    from ryx_desktop.config import Config

    folder = vllm_cache if has_vllm_cache() else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        return Config.model_validate(setup.config_data(folder))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise SystemExit(f"ryx-desktop refuses the model's settings: {exc}") from None


def free_ports(count: int, candidates: Sequence[int] = PORT_RANGE) -> list[int]:
    """``count`` ports of ``candidates`` that nothing listens on right now."""
    found: list[int] = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise SystemExit(f"fewer than {count} free ports in {candidates}; stop what holds them")


# --- the reference: docker run + 20 ms polling -----------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes] | None:
    """One GET on a fresh connection, as curl in a loop would do; None when it fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _device_requests(devices: Any) -> list[Any]:
    import docker

    if devices == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if devices == "none" or not devices:
        return []
    ids = [str(i) for i in devices]
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def reference_start(
    client: Any, spec: Any, served: str, name: str, port: int, timeout: float
) -> Start:
    """``docker run -d`` of ``spec`` under ``name`` on host ``port``, then poll until ``/health``
    answers 200 and ``/v1/models`` lists ``served``.

    The container is left running; the caller removes it.
    """
    import docker

    for mount in spec.mounts:
        if not mount.read_only:
            os.makedirs(mount.source, exist_ok=True)
    began = time.perf_counter()
    container = client.containers.run(
        spec.image,
        list(spec.command),
        name=name,
        detach=True,
        ports={f"{spec.container_port}/tcp": (spec.host_ip, port)},
        mounts=[
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
        environment={**spec.env, **spec.secret_env},
        ipc_mode=spec.ipc_mode,
        device_requests=_device_requests(spec.devices),
    )
    launched = time.perf_counter() - began
    next_check = time.perf_counter() + EXIT_CHECK_S
    tick = time.perf_counter()
    while True:
        health = _get(port, "/health")
        if health is not None and health[0] == 200:
            models = _get(port, "/v1/models")
            if models is not None and models[0] == 200 and lists_served(models[1], served):
                return Start(time.perf_counter() - began, launched)
        now = time.perf_counter()
        if now - began > timeout:
            raise SystemExit(f"reference: not ready after {timeout:g} s\n{_tail(container)}")
        if now >= next_check:
            container.reload()
            if container.status != "running":
                raise SystemExit(f"reference: the container exited\n{_tail(container)}")
            next_check = now + EXIT_CHECK_S
        tick += POLL_S
        time.sleep(max(0.0, tick - time.perf_counter()))


def _tail(container: Any, lines: int = 30) -> str:
    with contextlib.suppress(Exception):
        return str(container.logs(tail=lines).decode(errors="replace"))
    return ""


def remove_container(client: Any, name: str) -> None:
    """Force-remove the container ``name`` if it exists (only ever one of ours)."""
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True, v=True)


# --- ryx: the real engine --------------------------------------------------------------------


async def ryx_start(engine: Any) -> Start:
    """``supervisor.start(MODEL_KEY)`` timed, with the moment its container id became known."""
    from ryx_desktop.core.errors import RyxError

    supervisor = engine.supervisor
    began = time.perf_counter()
    launched: list[float] = []

    def observe(instance: Any) -> None:
        if instance.key == MODEL_KEY and instance.container_id and not launched:
            launched.append(time.perf_counter() - began)

    unsubscribe = supervisor.subscribe(observe)
    try:
        await supervisor.start(MODEL_KEY)
    except RyxError as error:
        failure = supervisor.get(MODEL_KEY).failure
        tail = "\n".join(failure.log_tail) if failure else ""
        raise SystemExit(f"ryx: {error.message} ({error.hint})\n{tail}") from None
    finally:
        unsubscribe()
    return Start(time.perf_counter() - began, launched[0] if launched else None)


async def ryx_stop(engine: Any) -> None:
    await engine.supervisor.stop(MODEL_KEY, reason="benchmark round done")


# --- running it ------------------------------------------------------------------------------


def docker_client() -> Any:
    """A client of the local engine, or a clear exit."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise SystemExit(
            f"No Docker engine answered ({type(exc).__name__}: {exc}). Start Docker or set "
            "DOCKER_HOST."
        ) from None
    return client


async def compare(
    setup: Setup, rounds: int, warmup: int, say: Callable[[str], None]
) -> list[Round]:
    """Alternating rounds of the reference and ryx; the warm-up rounds are not returned."""
    from ryx_desktop.app import build_engine
    from ryx_desktop.core.spec import build_spec

    config = make_config(setup, setup.workdir / "vllm-cache")
    spec = build_spec(MODEL_KEY, config, os.environ)
    served = config.models[MODEL_KEY].effective_served_name
    client = docker_client()
    done: list[Round] = []
    names: list[str] = []
    try:
        async with build_engine(config, os.environ) as engine:
            for index in range(warmup + rounds):
                label = "warm-up" if index < warmup else f"round {index - warmup + 1}/{rounds}"
                name = f"{REFERENCE_PREFIX}{os.getpid()}-{index}"
                names.append(name)
                ryx_first = index % 2 == 1
                ref = ryx = None
                for who in ("ryx", "reference") if ryx_first else ("reference", "ryx"):
                    if who == "ryx":
                        ryx = await ryx_start(engine)
                        await ryx_stop(engine)
                    else:
                        ref = await asyncio.to_thread(
                            reference_start,
                            client,
                            spec,
                            served,
                            name,
                            setup.ports[1],
                            setup.timeout,
                        )
                        await asyncio.to_thread(remove_container, client, name)
                assert ref is not None and ryx is not None
                say(
                    f"{label}: reference {ref.seconds:.3f} s, ryx {ryx.seconds:.3f} s "
                    f"({'ryx' if ryx_first else 'reference'} first)"
                )
                if index >= warmup:
                    done.append(Round(index - warmup + 1, ref, ryx, ryx_first))
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                remove_container(client, name)
        client.close()
    return done


async def second_starts(setup: Setup, rounds: int, say: Callable[[str], None]) -> list[SecondStart]:
    """Per round: a fresh cache folder, then two starts through ryx with a stop in between."""
    from ryx_desktop.app import build_engine

    done: list[SecondStart] = []
    for index in range(rounds):
        cache = setup.workdir / f"vllm-cache-{index}"
        config = make_config(setup, cache)
        async with build_engine(config, os.environ) as engine:
            first = await ryx_start(engine)
            await ryx_stop(engine)
            files, size = folder_size(cache)
            second = await ryx_start(engine)
            await ryx_stop(engine)
        say(
            f"round {index + 1}/{rounds}: first {first.seconds:.3f} s, second "
            f"{second.seconds:.3f} s, cache {files} files"
        )
        done.append(SecondStart(index + 1, first, second, files, size))
    return done


@contextlib.contextmanager
def ryx_container_removed() -> Iterator[None]:
    """Remove a ``ryx-vllm-ryxe-bench`` left over before and after (it is only ever ours)."""
    from ryx_desktop.core.spec import container_name

    client = docker_client()
    try:
        remove_container(client, container_name(MODEL_KEY))
        yield
    finally:
        with contextlib.suppress(Exception):
            remove_container(client, container_name(MODEL_KEY))
        client.close()


def ryx_commit() -> str:
    """The commit this checkout runs (short hash and subject), and whether ``ryx_desktop`` has
    changes on top of it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", "ryx_desktop")
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit (no git checkout)"
    return head + (" (with uncommitted changes in ryx_desktop/)" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description="Cold start through ryx-desktop against a scripted docker run + polling."
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured rounds first (default 1; not used with --second-start)",
    )
    parser.add_argument(
        "--second-start",
        action="store_true",
        help="measure the compile cache: per round a fresh docker.vllm_cache, two starts",
    )
    parser.add_argument("--image", help="the image (default: the tests' fake vLLM image)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="vLLM's model path or id")
    parser.add_argument("--served-name", help="the served model name (default: the model)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="mounted at /models (default: a temporary folder with bench/config.json)",
    )
    parser.add_argument(
        "--extra-arg", action="append", default=[], help="an extra vLLM flag, repeatable"
    )
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="K=V", help="container env, repeatable"
    )
    parser.add_argument("--devices", default="none", help="all, none (default) or 0,1")
    parser.add_argument("--max-model-len", type=int, help="the model's max_model_len")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, help="the model's gpu_memory_utilization"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one start may take (default 900)"
    )
    args = parser.parse_args(argv)
    try:
        env = parse_env(args.env)
        devices = parse_devices(args.devices)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be 1 or more and --warmup 0 or more")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.image is None:
        from tests.fake_vllm.image import ensure_fake_image

        client = docker_client()
        try:
            image = ensure_fake_image(client)
        finally:
            client.close()
        env.setdefault("FAKE_VLLM_LOAD_SECONDS", FAKE_LOAD_SECONDS)
    else:
        image = args.image

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ryxE-cold-start-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        models_dir = args.models_dir
        if models_dir is None:
            models_dir = workdir / "models"
            (models_dir / "bench").mkdir(parents=True)
            (models_dir / "bench" / "config.json").write_text('{"model_type": "qwen2"}\n')
        setup = Setup(
            image=image,
            model=args.model,
            models_dir=models_dir.resolve(),
            served_name=args.served_name,
            extra_args=list(args.extra_arg),
            env=env,
            devices=devices,
            timeout=args.timeout,
            workdir=workdir,
            ports=free_ports(3),
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
        with ryx_container_removed():
            if args.second_start:
                result = asyncio.run(second_starts(setup, args.rounds, say))
                body = second_start_report(result, has_vllm_cache())
            else:
                rounds = asyncio.run(compare(setup, args.rounds, args.warmup, say))
                body = comparison_report(rounds)

    env_text = " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "no env"
    mode = "second start (compile cache)" if args.second_start else "cold start"
    warm = "" if args.second_start else f" after {args.warmup} warm-up round(s)"
    print(
        f"\n{mode}: {args.rounds} round(s){warm}, image {image}, model {args.model}, "
        f"devices {args.devices}, {env_text}, extra args {args.extra_arg or 'none'}; "
        f"ryx at {ryx_commit()}; {os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s in all\n"
    )
    print(body)


if __name__ == "__main__":
    main()
