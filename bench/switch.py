"""Switching: two models taking turns on one GPU, through ryx-desktop and by hand.

``python -m bench.switch [--load-seconds S] [--wake-seconds S] [--swaps N] [--quick]
[--variant NAME ...]``

Two models (``a`` and ``b``, the fake vLLM image with ``FAKE_VLLM_LOAD_SECONDS`` and
``FAKE_VLLM_WAKE_SECONDS`` set to realistic values, 20 s and 0.3 s by default) take turns on GPU 0.
A **swap** is the time from the request for the model that is not serving, while the other one is
awake, until that model has answered a 1-token chat completion. Four variants, each with its own
containers, ports and (for ryx) engine and proxy, all open at once; every round does one swap in
each variant, in an order that rotates from round to round, so a slow phase of the machine hits
them all:

* ``manual``, **manual docker stop/run**: what a user would script by hand: ``docker stop`` (5 s
  grace) and ``docker rm`` of the serving model's container, ``docker run -d`` of the other's
  (image, command, mounts and environment taken from ryx's own container spec, as in
  ``bench.cold_start``), ``GET /health`` every 20 ms until it answers and ``/v1/models`` lists the
  model, then the request, sent straight to the container.
* ``plain``, **ryx without sleep mode**: the real engine and proxy, ``gpu.policy: exclusive``, both
  models on GPU 0 without ``sleep_mode``; the request goes to ryx's proxy, which starts the model
  (the supervisor stops the other one to make room) and forwards it.
* ``sleep``, **ryx with sleep mode**: the same with ``sleep_mode: true`` on both models: whatever
  the supervisor's scheduler does to make room (stop the other model, or put it to sleep) is what
  is measured. The report says what became of the model swapped out.
* ``explicit``, **ryx with sleep mode, explicit**: what a scheduler that sleeps before it stops
  does, scripted: ``supervisor.sleep(other, 1)``, then the request through the proxy, which wakes
  the model. These models run under ``gpu.policy: fractional`` with 0.45 of GPU 0 each, so the
  GPU plan finds room and the script's own sleep is all that makes room, whatever the scheduler
  would do (one that makes room by stopping would stop a sleeping model under ``exclusive``).

Before the first measured swap every variant is brought to the same state, unmeasured: model
``a`` awake and answering, ``b`` swapped out (the ryx variants start ``b`` then ``a``; the explicit
one puts ``b`` to sleep in between). The report has every swap, the medians, each variant's ratio
to the manual baseline, and the verdict on the target of issue 10: a swap between two sleeping
models within the fake's wake time + 100 ms at the median.

Each model's folder holds a ``config.json`` and a 16 MiB sparse ``model.safetensors``: the fake
reads neither, but the file tells ryx's scheduler that a level-1 sleep fits in host RAM (without
weights on disk it cannot tell, and sleeps at level 2).

The GPU is faked: ryx plans the models on GPU 0 (``devices: [0]``) but their containers start
without a device request (``tests.integration.runtimes.GpuFakingRuntime``), and the manual
baseline's containers likewise. Containers: ryx's are ``ryx-vllm-ryxs-*`` (model keys
``ryxs-*``), the baseline's ``ryxS-bench-ref-*``; host ports come from 18600-18699. Only those
containers are removed, and only by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bench.cold_start import (
    STOP_TIMEOUT,
    docker_client,
    fmt,
    free_ports,
    median,
    ratio,
    reference_start,
    remove_container,
    row,
    ryx_commit,
)

PORT_RANGE = range(18600, 18700)
KEY_PREFIX = "ryxs-"
REFERENCE_PREFIX = "ryxS-bench-ref-"
MODELS = ("a", "b")
TARGET_MARGIN_S = 0.1  # a sleeping swap may take the wake time plus this
EXPLICIT_SHARE = 0.45  # both explicit models fit on GPU 0 together under `fractional`
DEFAULT_LOAD_S, QUICK_LOAD_S = 20.0, 3.0
DEFAULT_SWAPS, QUICK_SWAPS = 6, 4
DEFAULT_WAKE_S = 0.3
WEIGHTS_BYTES = 16 * 1024**2  # the sparse weights file of each model (no disk blocks)


@dataclass(frozen=True)
class Variant:
    """One way of swapping: its name on the command line and its label in the report."""

    name: str
    label: str
    sleep_mode: bool = False
    explicit: bool = False  # the script sleeps the serving model before the request

    @property
    def policy(self) -> str:
        return "fractional" if self.explicit else "exclusive"

    def key(self, model: str) -> str:
        """The ryx model key of ``model`` (``a`` or ``b``) in this variant."""
        return f"{KEY_PREFIX}{self.name}-{model}"


MANUAL = Variant("manual", "manual docker stop/run")
PLAIN = Variant("plain", "ryx without sleep mode")
SLEEP = Variant("sleep", "ryx with sleep mode", sleep_mode=True)
EXPLICIT = Variant("explicit", "ryx with sleep mode, explicit", sleep_mode=True, explicit=True)
VARIANTS = (MANUAL, PLAIN, SLEEP, EXPLICIT)
BY_NAME = {v.name: v for v in VARIANTS}
T = TypeVar("T")


# --- pure parts: options, results, the report --------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The command line, with ``--quick`` resolved."""

    load_seconds: float
    wake_seconds: float
    swaps: int
    variants: tuple[Variant, ...]
    timeout: float
    quick: bool = False

    @property
    def target_seconds(self) -> float:
        """The slowest median a sleeping swap may have: the wake time + 100 ms."""
        return self.wake_seconds + TARGET_MARGIN_S


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(
        prog="python -m bench.switch",
        description="Two models taking turns on one GPU: ryx-desktop with and without sleep "
        "mode against a scripted docker stop / docker run.",
    )
    made.add_argument(
        "--load-seconds",
        type=float,
        help=f"the fake's load time (default {DEFAULT_LOAD_S:g}, --quick {QUICK_LOAD_S:g})",
    )
    made.add_argument(
        "--wake-seconds",
        type=float,
        default=DEFAULT_WAKE_S,
        help=f"how long the fake's /wake_up takes (default {DEFAULT_WAKE_S:g})",
    )
    made.add_argument(
        "--swaps",
        type=int,
        help=f"measured swaps per variant, a->b->a... (default {DEFAULT_SWAPS}, "
        f"--quick {QUICK_SWAPS})",
    )
    made.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_LOAD_S:g} s loads and {QUICK_SWAPS} swaps (explicit options still win)",
    )
    made.add_argument(
        "--variant",
        action="append",
        choices=[v.name for v in VARIANTS],
        help="only this variant (repeatable; default all four)",
    )
    made.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds one swap may take (default 900)",
    )
    return made


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """The options of ``argv``; a value out of range exits with argparse's usage error."""
    made = parser()
    args = made.parse_args(argv)
    load = args.load_seconds
    if load is None:
        load = QUICK_LOAD_S if args.quick else DEFAULT_LOAD_S
    swaps = args.swaps
    if swaps is None:
        swaps = QUICK_SWAPS if args.quick else DEFAULT_SWAPS
    if load < 0 or args.wake_seconds < 0:
        made.error("--load-seconds and --wake-seconds must be 0 or more")
    if swaps < 1:
        made.error("--swaps must be 1 or more")
    if args.timeout <= 0:
        made.error("--timeout must be more than 0")
    chosen = set(args.variant or BY_NAME)
    variants = tuple(v for v in VARIANTS if v.name in chosen)
    return Options(load, args.wake_seconds, swaps, variants, args.timeout, args.quick)


@dataclass(frozen=True)
class Swap:
    """One measured swap of one variant."""

    variant: str  # Variant.name
    number: int  # 1-based
    source: str  # the model that was serving ("a" or "b")
    target: str  # the model asked for
    seconds: float  # request for ``target`` -> its answer
    left: str  # what became of ``source``: "stopped", "asleep L1", "awake", ...


def rotated(items: Sequence[T], index: int) -> list[T]:
    """The order of round ``index`` (0-based): each round starts one variant later."""
    if not items:
        return []
    shift = index % len(items)
    return [*items[shift:], *items[:shift]]


def other(model: str) -> str:
    return MODELS[1] if model == MODELS[0] else MODELS[0]


def left_word(state: str, sleep_level: int | None) -> str:
    """How the report names the state a swapped-out model was left in."""
    if state == "sleeping":
        return f"asleep L{sleep_level}" if sleep_level else "asleep"
    return state


def left_summary(swaps: Sequence[Swap]) -> str:
    """``stopped 6/6`` or ``asleep L1 5/6, stopped 1/6``: the swapped-out model's states."""
    counts: dict[str, int] = {}
    for swap in swaps:
        counts[swap.left] = counts.get(swap.left, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{word} {count}/{len(swaps)}" for word, count in ordered)


def answered(body: bytes) -> bool:
    """Whether ``body`` is a chat completion with a message in its first choice."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    message = choices[0].get("message")
    return isinstance(message, dict) and isinstance(message.get("content"), str)


def seconds_of(swaps: Sequence[Swap], variant: Variant) -> list[float]:
    return [s.seconds for s in swaps if s.variant == variant.name]


def swap_table(swaps: Sequence[Swap], variants: Sequence[Variant]) -> list[str]:
    """Every swap, one row per swap number and one column per variant, then the medians."""
    lines = [
        row(["swap", "from → to", *(f"{v.label} s" for v in variants)]),
        "|" + "---|" * (2 + len(variants)),
    ]
    numbers = sorted({s.number for s in swaps})
    for number in numbers:
        found = {s.variant: s for s in swaps if s.number == number}
        first = next(iter(found.values()))
        cells = [fmt(found[v.name].seconds) if v.name in found else "-" for v in variants]
        lines.append(row([str(number), f"{first.source} → {first.target}", *cells]))
    medians = [fmt(median(seconds_of(swaps, v))) for v in variants]
    lines.append(row(["median", "", *medians]))
    return lines


def summary_table(swaps: Sequence[Swap], variants: Sequence[Variant]) -> list[str]:
    """Per variant: median, range, ratio to the manual baseline, what the swapped-out model did."""
    lines = [
        row(
            [
                "variant",
                "median s",
                "fastest s",
                "slowest s",
                "/ manual",
                "manual / this",
                "the model swapped out",
            ]
        ),
        "|" + "---|" * 7,
    ]
    base = seconds_of(swaps, MANUAL)
    for variant in variants:
        mine = seconds_of(swaps, variant)
        if not mine:
            continue
        versus = ratio(mine, base)
        speedup = ratio(base, mine)
        lines.append(
            row(
                [
                    variant.label,
                    fmt(median(mine)),
                    fmt(min(mine)),
                    fmt(max(mine)),
                    f"{fmt(versus, 3)}x" if versus == versus else "-",
                    f"{fmt(speedup, 2)}x" if speedup == speedup else "-",
                    left_summary([s for s in swaps if s.variant == variant.name]),
                ]
            )
        )
    return lines


def swap_range(values: Sequence[float]) -> str:
    """`` [swaps lo .. hi]`` in seconds for two swaps or more, else empty."""
    if len(values) < 2:
        return ""
    return f" [swaps {fmt(min(values))} .. {fmt(max(values))}]"


def verdict(swaps: Sequence[Swap], variant: Variant, options: Options) -> str:
    """One line per ryx variant: PASS/FAIL against the target for sleep-mode variants, else
    ``info``; with the ratio to the manual baseline and, when it was not put to sleep, what
    became of the model swapped out."""
    mine = seconds_of(swaps, variant)
    got = median(mine)
    base = seconds_of(swaps, MANUAL)
    versus = ratio(mine, base)
    against = ""
    if versus == versus:
        against = f", {fmt(versus, 3)}x manual's time ({fmt(ratio(base, mine), 2)}x as fast)"
    spread = swap_range(mine)
    if variant.sleep_mode:
        target = options.target_seconds
        word = "PASS" if got <= target + 1e-9 else "FAIL"
        line = (
            f"{variant.label}: {word}  swap median {fmt(got)} s{spread} (target <= "
            f"{fmt(target)} s: wake {fmt(options.wake_seconds)} s + "
            f"{TARGET_MARGIN_S * 1e3:g} ms), {fmt((got - options.wake_seconds) * 1e3, 1, '+')} "
            f"ms over the wake{against}"
        )
    else:
        line = f"{variant.label}: info  swap median {fmt(got)} s{spread}{against}"
    own = [s for s in swaps if s.variant == variant.name]
    if variant.sleep_mode and any(not s.left.startswith("asleep") for s in own):
        line += f"; the model swapped out was left {left_summary(own)}"
    return line


def report(swaps: Sequence[Swap], options: Options) -> str:
    """The two tables and the verdict lines."""
    ran = [v for v in options.variants if seconds_of(swaps, v)]
    lines = [*swap_table(swaps, ran), "", *summary_table(swaps, ran), "", "```"]
    lines += [verdict(swaps, v, options) for v in ran if v is not MANUAL]
    if MANUAL in ran:
        base = seconds_of(swaps, MANUAL)
        lines.append(
            f"{MANUAL.label}: info  swap median {fmt(median(base))} s{swap_range(base)}"
            f" (the fake loads in {options.load_seconds:g} s)"
        )
    lines.append("```")
    return "\n".join(lines)


# --- the setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What every variant shares."""

    image: str
    models_dir: Path
    workdir: Path
    env: Mapping[str, str]  # the fake's knobs, for every model
    timeout: float

    def served(self, model: str) -> str:
        return f"switch-{model}"

    def config_data(self, variant: Variant, ports: Sequence[int]) -> dict[str, Any]:
        """The ryx config of ``variant``: models a and b on GPU 0, then the proxy's port."""
        models: dict[str, Any] = {}
        for model, port in zip(MODELS, ports[: len(MODELS)], strict=True):
            entry: dict[str, Any] = {
                "model": f"/models/{self.served(model)}",
                "served_name": self.served(model),
                "port": port,
                "devices": [0],
                "sleep_mode": variant.sleep_mode,
                "env": dict(self.env),
                "start_timeout": self.timeout,
            }
            if variant.explicit:
                entry["gpu_memory_utilization"] = EXPLICIT_SHARE
            models[variant.key(model)] = entry
        caches = self.workdir / variant.name
        return {
            "proxy": {"host": "127.0.0.1", "port": ports[len(MODELS)]},
            "docker": {
                "image": self.image,
                "models_dir": str(self.models_dir),
                "hf_cache": str(caches / "hf-cache"),
                "vllm_cache": str(caches / "vllm-cache"),
                "stop_timeout": STOP_TIMEOUT,
            },
            "gpu": {"policy": variant.policy},
            "models": models,
        }

    def config(self, variant: Variant, ports: Sequence[int]) -> Any:
        from ryx_desktop.config import Config

        try:
            return Config.model_validate(self.config_data(variant, ports))
        except ValueError as exc:  # pydantic's ValidationError is one
            raise SystemExit(f"ryx-desktop refuses the benchmark's config: {exc}") from None


def make_models_dir(root: Path) -> Path:
    """A models folder with a folder per model: its config.json and a sparse weights file.

    The fake reads neither; the weights file tells ryx's scheduler how much host RAM a level-1
    sleep would take (without one it cannot know, and sleeps at level 2).
    """
    for model in MODELS:
        folder = root / f"switch-{model}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text('{"model_type": "qwen2"}\n')
        with (folder / "model.safetensors").open("wb") as weights:
            weights.truncate(WEIGHTS_BYTES)
    return root


def chat_once(port: int, served: str, timeout: float) -> None:
    """A 1-token chat completion on a fresh connection; SystemExit unless it is answered."""
    body = json.dumps(
        {"model": served, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SystemExit(f"{served} on port {port} did not answer: {exc}") from None
    finally:
        conn.close()
    if answer.status != 200 or not answered(data):
        text = data[:300].decode(errors="replace")
        raise SystemExit(f"{served} on port {port} answered {answer.status}: {text}")


class Runner(Protocol):
    """One variant's models, kept between swaps."""

    variant: Variant

    async def prepare(self) -> None:
        """Model ``a`` awake and answering, ``b`` swapped out."""

    async def swap(self, source: str, target: str) -> tuple[float, str]:
        """Seconds from the request for ``target`` to its answer, and what ``source`` became."""

    async def close(self) -> None:
        """Stop and remove every container of the variant."""


class ManualRunner:
    """docker stop + rm of the serving container, docker run of the other, poll, ask."""

    def __init__(self, setup: Setup, ports: Sequence[int], client: Any) -> None:
        from ryx_desktop.core.spec import build_spec

        self.variant = MANUAL
        self._setup = setup
        self._client = client
        config = setup.config(MANUAL, ports)
        # The container ryx would run, without the GPU request (as GpuFakingRuntime does).
        self._specs = {
            m: dataclasses.replace(build_spec(MANUAL.key(m), config, os.environ), devices="none")
            for m in MODELS
        }
        self._ports = dict(zip(MODELS, ports[: len(MODELS)], strict=True))
        self._runs = 0
        self._names: set[str] = set()
        self._current: str | None = None  # the serving container's name

    def _run(self, model: str) -> None:
        self._runs += 1
        name = f"{REFERENCE_PREFIX}{os.getpid()}-{model}-{self._runs}"
        self._names.add(name)
        served = self._setup.served(model)
        port = self._ports[model]
        reference_start(self._client, self._specs[model], served, name, port, self._setup.timeout)
        chat_once(port, served, self._setup.timeout)
        self._current = name

    def _stop_current(self) -> None:
        import docker.errors

        name, self._current = self._current, None
        if name is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            container = self._client.containers.get(name)
            container.stop(timeout=int(STOP_TIMEOUT))
            container.remove(v=True)

    def _swap(self, target: str) -> float:
        began = time.perf_counter()
        self._stop_current()
        self._run(target)
        return time.perf_counter() - began

    async def prepare(self) -> None:
        await asyncio.to_thread(self._run, MODELS[0])

    async def swap(self, source: str, target: str) -> tuple[float, str]:
        return await asyncio.to_thread(self._swap, target), "stopped"

    async def close(self) -> None:
        def remove_all() -> None:
            for name in sorted(self._names):
                with contextlib.suppress(Exception):
                    remove_container(self._client, name)

        await asyncio.to_thread(remove_all)


def engine_on_fake_gpu(config: Any, environ: Mapping[str, str]) -> Any:
    """``ryx_desktop.app.build_engine``'s engine, with ``GpuFakingRuntime`` as its runtime.

    ``build_engine`` takes no runtime, so its ``DockerRuntime`` is swapped for the tests'
    ``GpuFakingRuntime`` while it runs: everything else is the app's own wiring (host facts,
    probe intervals, sleep control). Models are planned on GPU 0 but start without a device
    request.
    """
    from unittest import mock

    from ryx_desktop import app
    from tests.integration.runtimes import GpuFakingRuntime

    def runtime(host: str | None = None, **_ignored: Any) -> GpuFakingRuntime:
        return GpuFakingRuntime(host)

    with mock.patch.object(app, "DockerRuntime", runtime):
        return app.build_engine(config, environ)


class RyxRunner:
    """The real supervisor and proxy of one variant; requests go through the proxy."""

    def __init__(self, variant: Variant, setup: Setup, ports: Sequence[int]) -> None:
        self.variant = variant
        self._setup = setup
        self._config = setup.config(variant, ports)
        self._stack = contextlib.AsyncExitStack()
        self._engine: Any = None
        self._proxy_port = ports[len(MODELS)]

    async def open(self) -> None:
        from ryx_desktop.app import build_proxy

        self._engine = await self._stack.enter_async_context(
            engine_on_fake_gpu(self._config, os.environ)
        )
        await self._stack.enter_async_context(build_proxy(self._engine, os.environ))

    async def _ask(self, model: str) -> None:
        served = self._setup.served(model)
        await asyncio.to_thread(chat_once, self._proxy_port, served, self._setup.timeout)

    async def _sleep(self, model: str) -> None:
        from ryx_desktop.core.errors import RyxError

        try:
            await self._engine.supervisor.sleep(self.variant.key(model), 1)
        except RyxError as error:
            raise SystemExit(f"{self.variant.label}: {error.message} ({error.hint})") from None

    async def prepare(self) -> None:
        await self._ask(MODELS[1])
        if self.variant.explicit:
            await self._sleep(MODELS[1])
        await self._ask(MODELS[0])

    async def swap(self, source: str, target: str) -> tuple[float, str]:
        began = time.perf_counter()
        if self.variant.explicit:
            await self._sleep(source)
        await self._ask(target)
        took = time.perf_counter() - began
        inst = self._engine.supervisor.get(self.variant.key(source))
        return took, left_word(inst.state.value, inst.sleep_level)

    async def close(self) -> None:
        if self._engine is not None:
            with contextlib.suppress(Exception):
                await self._engine.supervisor.stop_all()
        await self._stack.aclose()


def remove_leftovers(client: Any, variants: Sequence[Variant]) -> None:
    """Remove this benchmark's containers (ryx's and the baseline's) that a run left behind."""
    from ryx_desktop.core.spec import container_name

    for variant in variants:
        for model in MODELS:
            remove_container(client, container_name(variant.key(model)))
    for container in client.containers.list(all=True, filters={"name": REFERENCE_PREFIX}):
        if container.name.startswith(REFERENCE_PREFIX):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


async def measure(
    setup: Setup, options: Options, client: Any, say: Callable[[str], None]
) -> list[Swap]:
    """Prepare every variant, then ``options.swaps`` rounds of one swap per variant."""
    ports = free_ports(3 * len(options.variants), PORT_RANGE)
    runners: list[Runner] = []
    done: list[Swap] = []
    try:
        for index, variant in enumerate(options.variants):
            mine = ports[3 * index : 3 * index + 3]
            if variant is MANUAL:
                runners.append(ManualRunner(setup, mine, client))
            else:
                ryx = RyxRunner(variant, setup, mine)
                runners.append(ryx)
                await ryx.open()
        for runner in runners:
            began = time.perf_counter()
            await runner.prepare()
            say(f"{runner.variant.label}: ready ({time.perf_counter() - began:.1f} s)")
        source = MODELS[0]
        for index in range(options.swaps):
            target = other(source)
            for runner in rotated(runners, index):
                seconds, left = await runner.swap(source, target)
                done.append(Swap(runner.variant.name, index + 1, source, target, seconds, left))
                say(
                    f"swap {index + 1}/{options.swaps} {source} → {target}: "
                    f"{runner.variant.label} {seconds:.3f} s ({source} {left})"
                )
            source = target
    finally:
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.close()
    return done


def main(argv: list[str] | None = None) -> None:
    """Command line; see the module docstring."""
    options = parse_options(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    from tests.fake_vllm.image import ensure_fake_image

    env = {
        "FAKE_VLLM_LOAD_SECONDS": f"{options.load_seconds:g}",
        "FAKE_VLLM_WAKE_SECONDS": f"{options.wake_seconds:g}",
    }
    client = docker_client()
    started = time.monotonic()
    try:
        image = ensure_fake_image(client)
        with tempfile.TemporaryDirectory(prefix="ryxS-switch-", ignore_cleanup_errors=True) as tmp:
            workdir = Path(tmp)
            setup = Setup(
                image=image,
                models_dir=make_models_dir(workdir / "models").resolve(),
                workdir=workdir,
                env=env,
                timeout=options.timeout,
            )
            remove_leftovers(client, VARIANTS)
            try:
                swaps = asyncio.run(measure(setup, options, client, say))
            finally:
                remove_leftovers(client, VARIANTS)
    finally:
        client.close()

    env_text = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    print(
        f"\nswitching: {options.swaps} swap(s) per variant, image {image}, {env_text}; "
        f"ryx at {ryx_commit()}; {os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s in all\n"
    )
    print(report(swaps, options))


if __name__ == "__main__":
    main()
