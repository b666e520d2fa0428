"""What each ``ryx-desktop`` command does, on top of the engine that ``app`` builds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ryx_desktop.adapters.host_check import check_hosts
from ryx_desktop.app import build_engine
from ryx_desktop.cli._output import ProgressPrinter, hosts_table, status_table
from ryx_desktop.cli._running_app import instances_from_running_app, stop_through_running_app
from ryx_desktop.cli._serve import serve
from ryx_desktop.config import (
    Config,
    config_path,
    dump_config,
    export_compose,
    import_compose,
    load_config,
    merge_imported,
    parse_config,
    save_config,
)
from ryx_desktop.core.errors import ConfigError, RyxError, UnknownModelError
from ryx_desktop.core.host_report import ANY, host_report_json, models_on
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.states import InstanceState, instance_json


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the parsed command; errors propagate as RyxError."""
    if args.command == "config":
        return _config_command(args, environ)
    path = config_path(getattr(args, "config", None), environ)
    config = load_config(path)
    if args.command == "serve":
        return await serve(config, environ, host=args.host, port=args.port)
    if args.command == "status":
        return await _status(config, environ, as_json=args.json)
    if args.command == "hosts":
        return await _hosts(config, environ, as_json=args.json)
    if args.command == "stop":
        return await _stop(config, environ, args.model)
    if args.command in ("start", "restart"):
        return await _lifecycle(args.command, config, environ, args.model)
    if args.command == "sleep":
        return await _sleep(config, environ, args.model, args.level)
    if args.command == "wake":
        return await _lifecycle("wake", config, environ, args.model)
    if args.command == "logs":
        return await _logs(config, environ, args.model, follow=args.follow, tail=args.tail)
    raise AssertionError(f"unhandled command {args.command}")


async def _status(config: Config, environ: Mapping[str, str], *, as_json: bool) -> int:
    # The running app knows most (a start's every phase, metrics); else Docker and the logs.
    instances = await instances_from_running_app(config, environ)
    if instances is None:
        async with build_engine(config, environ, watch=False) as engine:
            instances = engine.supervisor.instances()
    if as_json:
        print(json.dumps([instance_json(i) for i in instances], indent=2))
    else:
        print(status_table(instances, config))
    return 0


async def _hosts(config: Config, environ: Mapping[str, str], *, as_json: bool) -> int:
    """Every engine checked at once; exit 1 when any of them does not answer."""
    reports = await check_hosts(config, environ)
    if as_json:
        print(json.dumps([host_report_json(r) for r in reports], indent=2))
    else:
        print(hosts_table(reports, anywhere=models_on(config, ANY)))
    return 0 if all(r.reachable for r in reports) else 1


async def _stop(config: Config, environ: Mapping[str, str], name: str) -> int:
    """Stop a model: through the running app when there is one (its stop, drained and told as
    its own), else through Docker."""
    key = resolve_model(config, name)
    if key is None:
        known = ", ".join(config.models) or "none"
        raise UnknownModelError(f"no model is called {name!r} (configured: {known})")
    instances = await instances_from_running_app(config, environ)
    if instances is None:
        return await _lifecycle("stop", config, environ, key)
    before = next(i for i in instances if i.key == key)
    if not before.running and before.state is not InstanceState.FAILED:
        print(f"{key} is not running")
        return 0
    await stop_through_running_app(config, environ, key)
    print(f"{key} stopped")
    return 0


async def _lifecycle(verb: str, config: Config, environ: Mapping[str, str], name: str) -> int:
    async with build_engine(config, environ, watch=False) as engine:
        sup = engine.supervisor
        key = sup.resolve(name)
        before = sup.get(key)
        sup.subscribe(ProgressPrinter(key, sys.stderr))
        if verb == "stop":
            if not before.running and before.state is not InstanceState.FAILED:
                print(f"{key} is not running")
                return 0
            await sup.stop(key)
            print(f"{key} stopped")
            return 0
        inst = await (sup.restart(key) if verb == "restart" else sup.ensure_ready(key))
        where = f"{inst.url}/v1" if inst.url else ""
        how = f" ({inst.note})" if verb == "wake" and inst.note else ""
        print(f"{key} is ready at {where} (served as {inst.served_name}){how}")
        return 0


async def _sleep(config: Config, environ: Mapping[str, str], name: str, level: int) -> int:
    async with build_engine(config, environ, watch=False) as engine:
        sup = engine.supervisor
        key = sup.resolve(name)
        inst = await sup.sleep(key, level)
        print(f"{key} is asleep at level {inst.sleep_level}: {inst.note}")
        return 0


async def _logs(
    config: Config, environ: Mapping[str, str], name: str, *, follow: bool, tail: int
) -> int:
    key = resolve_model(config, name)
    if key is None:
        raise UnknownModelError(f"no model is called {name!r}")
    engine = build_engine(config, environ, watch=False)
    try:
        found = [c for c in await engine.runtime.list_models() if c.model_key == key]
        if not found:
            raise RyxError(
                f"{key} has no container: it is not running",
                hint=f"Start it with `ryx-desktop start {key}`.",
            )
        container_id = found[0].id
        if follow:
            async for line in engine.runtime.follow_logs(container_id, tail=tail):
                print(line, flush=True)
        else:
            for line in await engine.runtime.logs(container_id, tail):
                print(line)
    finally:
        await engine.close()
    return 0


def _config_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    target = config_path(getattr(args, "config", None), environ)
    if args.config_command == "check":
        return _check(Path(args.path) if args.path else target, explicit=bool(args.path))
    if args.config_command == "import-compose":
        return _import_compose(args, target, environ)
    if args.config_command == "export-compose":
        text = export_compose(load_config(target))
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    raise AssertionError(f"unhandled config command {args.config_command}")


def _import_compose(args: argparse.Namespace, target: Path, environ: Mapping[str, str]) -> int:
    """Print the compose file's models as config, or (``--write``) add them to the config file."""
    imported = import_compose(Path(args.file), environ, warn=_warn)
    if not args.write:
        sys.stdout.write(dump_config(imported))
        return 0
    # With no file yet, the built-in example models are not the user's: nothing to keep.
    base = load_config(target) if target.exists() else Config()
    merged = merge_imported(base, imported, replace=args.replace, source=args.file)
    config = parse_config(dump_config(merged.config), str(target))  # valid as a whole
    save_config(config, target)
    replaced = f" (replaced: {', '.join(merged.replaced)})" if merged.replaced else ""
    print(f"wrote {_count(len(imported.models), 'model')} from {args.file} to {target}{replaced}")
    return 0


def _warn(text: str) -> None:
    print(f"ryx-desktop: warning: {text}", file=sys.stderr)


def _count(n: int, word: str) -> str:
    """``1 model``, ``2 models``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check(path: Path, *, explicit: bool) -> int:
    out = sys.stdout
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such file")
        config = load_config(path)
        out.write(f"{path}: no file; the built-in default is used ({_models(config)})\n")
        return 0
    config = load_config(path)
    out.write(f"{path}: OK ({_models(config)})\n")
    return 0


def _models(config: Config) -> str:
    keys: list[Any] = list(config.models)
    return f"{_count(len(keys), 'model')}: {', '.join(keys)}" if keys else "no models"
