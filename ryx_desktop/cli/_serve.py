"""``ryx-desktop serve``: the engine and the proxy without a GUI, until SIGINT or SIGTERM.

One log line per state change on stderr. Stopping closes the proxy (requests in flight get a
moment to finish, streams still running are ended cleanly) and leaves the models running.

It runs on uvloop where that is installed (a dependency on Linux): the same proxy serves about
a third more requests per second on it than on asyncio's own loop. ``RYX_EVENT_LOOP=asyncio``
keeps asyncio's loop (to compare, or to rule uvloop out). Only ``serve`` changes loops: the
desktop app runs on Qt's (qasync) and the other commands on asyncio's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TextIO

from ryx_desktop.adapters.conversation_db import default_store_path
from ryx_desktop.adapters.nvml import NvmlGpuProbe
from ryx_desktop.app import build_chat, build_engine, build_proxy
from ryx_desktop.config import Config
from ryx_desktop.core.states import Instance, InstanceState


class StateLog:
    """Writes a line each time a model's state changes (progress alone is not a change)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._states: dict[str, InstanceState] = {}

    def seed(self, instances: list[Instance]) -> None:
        for inst in instances:
            self._states[inst.key] = inst.state
            if inst.state is not InstanceState.STOPPED:
                self._write(inst)

    def __call__(self, inst: Instance) -> None:
        if self._states.get(inst.key) is inst.state:
            return
        self._states[inst.key] = inst.state
        self._write(inst)

    def _write(self, inst: Instance) -> None:
        detail = ""
        if inst.state is InstanceState.READY:
            detail = f" at {inst.url}"
        elif inst.state is InstanceState.FAILED and inst.failure is not None:
            detail = f": {inst.failure.message}"
            if inst.failure.hint:
                detail += f" (hint: {inst.failure.hint})"
        elif inst.note:
            detail = f" ({inst.note})"
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {inst.key}: {inst.state.value}{detail}", file=self._out, flush=True)


def loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when it is installed and not turned off; None: asyncio's."""
    if environ.get("RYX_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, int], environ: Mapping[str, str]) -> int:
    """``asyncio.run(main)`` for ``serve``: on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory(environ)) as runner:
        return runner.run(main)


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    kind = type(loop)
    return "uvloop" if kind.__module__.startswith("uvloop") else f"asyncio ({kind.__name__})"


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("ryx_desktop")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # The supervisor's own state-change lines would repeat StateLog's.
    logging.getLogger("ryx_desktop.core").setLevel(logging.WARNING)


async def serve(
    config: Config, environ: Mapping[str, str], *, host: str | None, port: int | None
) -> int:
    """Run until a signal arrives; returns the exit code."""
    _configure_logging()
    loop = asyncio.get_running_loop()
    logging.getLogger("ryx_desktop.cli").info("event loop: %s", _loop_name(loop))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    states = StateLog(sys.stderr)
    gpus = NvmlGpuProbe()  # measured GPU memory for planning room; N/A without NVIDIA
    try:
        async with build_engine(config, environ, gpu_probe=gpus) as engine:
            states.seed(engine.supervisor.instances())
            engine.supervisor.subscribe(states)
            # The sessions API's conversations: the same store as the desktop's chat tab.
            chat = build_chat(
                engine, environ, default_store_path(environ), lambda: proxy.local_root
            )
            try:
                proxy = build_proxy(engine, environ, host=host, port=port, chat=chat.service)
                async with proxy:
                    selected = engine.supervisor.selected or "none"
                    print(
                        f"ryx-desktop: proxy on {proxy.url} (selected model: {selected}); "
                        "Ctrl+C stops it, models keep running",
                        file=sys.stderr,
                        flush=True,
                    )
                    await stop.wait()
                    print("ryx-desktop: stopping the proxy", file=sys.stderr, flush=True)
            finally:
                await chat.close()
    finally:
        await gpus.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("ryx-desktop: stopped; models keep running", file=sys.stderr, flush=True)
    return 0
