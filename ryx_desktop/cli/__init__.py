"""The ``ryx-desktop`` command line: parse arguments, run one command, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config. A user-facing error is
one line plus a hint on stderr, never a traceback (``RYX_DEBUG=1`` shows one for bug reports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence

from ryx_desktop import __version__
from ryx_desktop.cli import _commands, _desktop_entry, _serve
from ryx_desktop.core.errors import ConfigError, RyxError, UnknownModelError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $RYX_CONFIG, else the user config dir)",
    )
    parser = argparse.ArgumentParser(
        prog="ryx-desktop",
        description="Run local LLMs with vLLM in Docker: start, stop, watch and switch models.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"ryx-desktop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", parents=[common], help="run the engine and the proxy without a GUI"
    )
    serve.add_argument("--host", help="address to listen on (default: proxy.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: proxy.port)")

    status = sub.add_parser("status", parents=[common], help="every model's state, port and GPU")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    hosts = sub.add_parser(
        "hosts",
        parents=[common],
        help="every Docker engine: reachable, its version, its GPUs and models",
        description="Check the local engine and every host under hosts: at once (each within "
        "15 s): whether it answers, its Docker version, its GPUs and the models configured "
        "there. Exit status: 0 when every host answers, 1 when any does not.",
    )
    hosts.add_argument("--json", action="store_true", help="machine-readable output")

    for verb, text in (
        ("start", "start a model and wait until it is ready"),
        ("stop", "stop a model and remove its container"),
        ("restart", "stop a model, then start it with the current config"),
    ):
        cmd = sub.add_parser(verb, parents=[common], help=text)
        cmd.add_argument("model", metavar="KEY", help="model key, served name or alias")

    sleep = sub.add_parser(
        "sleep", parents=[common], help="put a sleep-mode model to sleep (frees its GPU memory)"
    )
    sleep.add_argument("model", metavar="KEY", help="model key, served name or alias")
    sleep.add_argument(
        "--level",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: weights kept in host RAM, fast wake (default); 2: weights dropped too",
    )
    wake = sub.add_parser("wake", parents=[common], help="wake a sleeping model")
    wake.add_argument("model", metavar="KEY", help="model key, served name or alias")

    logs = sub.add_parser("logs", parents=[common], help="the model container's log")
    logs.add_argument("model", metavar="KEY", help="model key, served name or alias")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--tail", type=int, default=200, help="lines to show (default 200)")

    config = sub.add_parser("config", parents=[common], help="check, import and export the config")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("path", nargs="?", metavar="PATH", help="file to check (default: --config)")
    imp = config_sub.add_parser(
        "import-compose", parents=[common], help="turn a docker compose file into models"
    )
    imp.add_argument("file", metavar="FILE", help="compose file, e.g. model-router.yml")
    imp.add_argument(
        "--write", action="store_true", help="save into the config file instead of printing"
    )
    imp.add_argument(
        "--replace",
        action="store_true",
        help="with --write: overwrite models the config already has under the same key",
    )
    exp = config_sub.add_parser(
        "export-compose", parents=[common], help="write the models out as a compose file"
    )
    exp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    _desktop_entry.add_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            return _desktop(getattr(args, "config", None))
        if args.command == "desktop-entry":
            return _desktop_entry.run(args, os.environ)
        if args.command == "serve":  # on uvloop where installed
            return _serve.run(_commands.run(args, os.environ), os.environ)
        return asyncio.run(_commands.run(args, os.environ))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, UnknownModelError) as error:
        _report(error)
        return EXIT_USAGE
    except RyxError as error:
        _report(error)
        return EXIT_FAILURE
    except Exception as error:  # last resort: a bug, still no traceback for the user
        if os.environ.get("RYX_DEBUG"):
            traceback.print_exc()
        print(f"ryx-desktop: internal error: {error!r}", file=sys.stderr)
        print("hint: run again with RYX_DEBUG=1 and report the traceback.", file=sys.stderr)
        return EXIT_FAILURE


def _desktop(config: str | None) -> int:
    """The tray application; Qt is imported only here, so the other commands never load it."""
    try:
        from ryx_desktop import desktop
    except ImportError as error:
        if os.environ.get("RYX_DEBUG"):
            traceback.print_exc()
        raise RyxError(
            f"the tray application cannot load: {error}",
            "install Qt's system libraries (libegl1, libxkbcommon0, libxcb-cursor0), "
            "or use `ryx-desktop serve` without a GUI.",
        ) from error
    return desktop.main(sys.argv[:1], os.environ, config=config)


def _report(error: RyxError) -> None:
    problems = getattr(error, "errors", None) or [error.message]
    for problem in problems:
        print(f"ryx-desktop: {problem}", file=sys.stderr)
    tail = getattr(error, "log_tail", ())
    if tail:
        print("last log lines:", file=sys.stderr)
        for line in tail:
            print(f"  | {line}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
