"""What each ``ryx-desktop`` command does, on top of the engine that ``app`` builds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ryx_desktop.app import build_engine
from ryx_desktop.cli._output import ProgressPrinter, status_table
from ryx_desktop.cli._running_app import instances_from_running_app
from ryx_desktop.cli._serve import serve
from ryx_desktop.config import (
    Config,
    config_path,
    dump_config,
    export_compose,
    import_compose,
    load_config,
    parse_config,
    save_config,
)
from ryx_desktop.core.errors import ConfigError, RyxError, UnknownModelError
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
    if args.command in ("start", "stop", "restart"):
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
        imported = import_compose(Path(args.file), environ)
        if not args.write:
            sys.stdout.write(dump_config(imported))
            return 0
        base = load_config(target)
        selected = base.default_model
        if selected is not None and resolve_model(imported, selected) is None:
            selected = imported.default_model
        merged = base.model_copy(
            update={"models": imported.models, "docker": imported.docker, "default_model": selected}
        )
        merged = parse_config(dump_config(merged), str(target))  # validate the result as a whole
        save_config(merged, target)
        print(f"wrote {len(merged.models)} models from {args.file} to {target}")
        return 0
    if args.config_command == "export-compose":
        text = export_compose(load_config(target))
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    raise AssertionError(f"unhandled config command {args.config_command}")


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
    return f"{len(keys)} models: {', '.join(keys)}" if keys else "no models"
