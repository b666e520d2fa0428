"""Docker Compose files in and out: import hand-written vLLM files, export standalone ones.

Import understands the style of the original multi-model setup (``command: >`` flags, ``K=V``
environment lists, ``CUDA_VISIBLE_DEVICES``, ``${VAR:-default}`` paths), with the model given
either way (``--model X``, or positionally as ``vllm serve`` takes it: ``X``, ``serve X``,
``vllm serve X``), as well as the files ``export_compose`` writes (positional model), whose
``io.ryx.*`` labels and ``x-ryx`` extension carry what compose has no place for, so that
``import_compose(export_compose(c)).models == c.models``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from ryx_desktop.config._compose_ports import Published, exposure_warning, port_entries
from ryx_desktop.config._loader import ConfigFileError, Position, format_errors, load_yaml
from ryx_desktop.config._save import space_out
from ryx_desktop.config._schema import Config, Loc, ModelConfig
from ryx_desktop.config.container import (
    CONTAINER_PORT,
    CONTAINER_PREFIX,
    CPU_ENV_DEFAULTS,
    HF_CACHE_MOUNT,
    LABEL_MANAGED,
    LABEL_MODEL,
    MODELS_MOUNT,
    SLEEP_ENV_DEFAULTS,
    VLLM_CACHE_MOUNT,
    container_name,
    default_env,
    key_from_container_name,
    vllm_args,
)

#: Labels beyond the ones every container carries (``io.ryx.managed``, ``io.ryx.model``).
LABEL_NAME = "io.ryx.name"
LABEL_CATEGORY = "io.ryx.category"
LABEL_SIZE = "io.ryx.size"
LABEL_ALIASES = "io.ryx.aliases"
LABEL_IDLE_TTL = "io.ryx.idle-ttl"
LABEL_START_TIMEOUT = "io.ryx.start-timeout"
LABEL_IMAGE = "io.ryx.image"
#: Top-level compose extension holding what is not a container (compose ignores ``x-`` keys).
EXTENSION = "x-ryx"
MODELS_DIR_VAR = "RYX_MODELS_DIR"
HF_CACHE_VAR = "RYX_HF_CACHE"
VLLM_CACHE_VAR = "RYX_VLLM_CACHE"
#: Env entries written as ``NAME=${NAME:-...}`` pass the user's own value through; not config.
PASSTHROUGH = ("HF_TOKEN", *SLEEP_ENV_DEFAULTS, *CPU_ENV_DEFAULTS)
#: Subcommand words before the model in a ``vllm serve MODEL`` style command.
SERVE_PREFIXES = (["vllm", "serve"], ["serve"])
#: Sizes recognised in a ``<size>-<category>`` key when a service has no labels.
KNOWN_SIZES = frozenset({"tiny", "small", "medium", "large", "big", "huge", "powerful"})
VALUE_FLAGS = frozenset(
    {
        "--model",
        "--served-model-name",
        "--gpu-memory-utilization",
        "--max-model-len",
        "--host",
        "--port",
    }
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.DOTALL)


class _ServiceError(Exception):
    """A problem with one service, at ``loc`` in the compose file."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


# ---------------------------------------------------------------- interpolation


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``..."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ValueError(f"unclosed '${{' in {text!r}")
            out.append(_substitute(text[i + 2 : j - 1], environ))
            i = j
        else:
            match = _NAME.match(text, i + 1)
            if match:
                out.append(environ.get(match.group(), ""))
                i = match.end()
            else:
                out.append("$")
                i += 1
    return "".join(out)


def _substitute(expr: str, environ: Mapping[str, str]) -> str:
    match = _EXPR.fullmatch(expr)
    if not match:
        raise ValueError(f"invalid variable '${{{expr}}}'")
    name, op, rest = match.group(1), match.group(2), match.group(3) or ""
    value = environ.get(name)
    is_set = value is not None
    non_empty = bool(value)
    if op is None:
        return value or ""
    if op in (":-", "-"):
        use_default = not non_empty if op == ":-" else not is_set
        return interpolate(rest, environ) if use_default else (value or "")
    if op in (":?", "?"):
        missing = not non_empty if op == ":?" else not is_set
        if missing:
            raise ValueError(f"{name} is required: {interpolate(rest, environ) or 'not set'}")
        return value or ""
    present = non_empty if op == ":+" else is_set
    return interpolate(rest, environ) if present else ""


def _escape(text: str) -> str:
    """A literal for compose: ``$`` doubled so it is not taken for a variable."""
    return text.replace("$", "$$")


def _read_dotenv(path: Path) -> dict[str, str]:
    """The ``.env`` file compose reads next to the compose file, if any."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


# ---------------------------------------------------------------- import


@dataclass
class _Service:
    name: str
    key: str
    image: str
    image_label: str | None
    fields: dict[str, Any]
    models_dir: tuple[str, Loc] | None = None
    hf_cache: tuple[str, Loc] | None = None
    vllm_cache: tuple[str, Loc] | None = None
    locs: dict[str, Loc] = field(default_factory=dict)
    published: Published | None = None


def import_compose(
    path: Path, environ: Mapping[str, str], warn: Callable[[str], None] | None = None
) -> Config:
    """A config with one model per vLLM service of the compose file at ``path``.

    ``${VAR}`` references resolve from ``environ`` (then the ``.env`` beside the file); relative
    paths resolve against the file's directory. Services that are not vLLM are left out.
    ``warn`` hears (``FILE:LINE:COL: ...``) of what the import changes on the way: a port the
    file published beyond this machine is published on 127.0.0.1 only.
    """
    source = str(path)
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigFileError([f"{source}: no such compose file"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError([f"{source}: is not UTF-8 text"]) from exc
    except OSError as exc:
        raise ConfigFileError([f"{source}: cannot read it: {exc.strerror or exc}"]) from exc
    data, positions = load_yaml(raw, source)

    def at(loc: Loc, message: str) -> str:
        probe = loc
        while probe not in positions and probe:
            probe = probe[:-1]
        pos = positions.get(probe, Position(1, 1, 1, 1, False))
        return f"{source}:{pos.key_line}:{pos.key_col}: {message}"

    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        raise ConfigFileError([at(("services",), "a compose file needs a `services:` mapping")])
    env = {**_read_dotenv(path.parent / ".env"), **environ}
    base = Path(os.path.abspath(path.parent))

    parsed: list[_Service] = []
    errors: list[str] = []
    for name, service in services.items():
        if not isinstance(service, dict):
            errors.append(at(("services", name), f"service {name!r} must be a mapping"))
            continue
        try:
            if _is_vllm(str(name), service, env):
                parsed.append(_parse_service(str(name), service, env, base))
        except _ServiceError as exc:
            errors.append(at(("services", name, *exc.loc), f"service {name!r}: {exc.message}"))
        except ValueError as exc:
            errors.append(at(("services", name), f"service {name!r}: {exc}"))
    if errors:
        raise ConfigFileError(errors)
    for service in parsed:
        entry = service.published
        told = exposure_warning(service.name, entry) if entry is not None else None
        if told is not None and entry is not None and warn is not None:
            warn(at(("services", service.name, "ports", entry.index), told))

    extension = data.get(EXTENSION) or {}
    if not isinstance(extension, dict):
        raise ConfigFileError([at((EXTENSION,), f"{EXTENSION} must be a mapping")])
    external = extension.get("external") or {}
    if not parsed and not external:
        raise ConfigFileError([at(("services",), "no vLLM services found in this compose file")])

    docker: dict[str, Any] = {}
    image_counts = Counter(s.image for s in parsed if s.image_label is None)
    if not image_counts:
        image_counts = Counter(s.image for s in parsed)
    if image_counts:
        docker["image"] = image_counts.most_common(1)[0][0]
    for attr in ("models_dir", "hf_cache", "vllm_cache"):
        chosen = _one_dir(parsed, attr, at)
        if chosen is not None:
            docker[attr] = chosen

    models: dict[str, Any] = {}
    fake_positions: dict[Loc, Position] = {}
    for service in parsed:
        fields = dict(service.fields)
        if service.image_label is not None:
            fields["image"] = service.image_label
        elif service.image != docker.get("image"):
            fields["image"] = service.image
        if service.key in models:
            errors.append(
                at(
                    ("services", service.name),
                    f"service {service.name!r}: model key {service.key!r} is used by two services",
                )
            )
        models[service.key] = fields
        _map_positions(service, positions, fake_positions)
    if errors:
        raise ConfigFileError(errors)
    if not isinstance(external, dict):
        raise ConfigFileError([at((EXTENSION, "external"), "external must be a mapping")])
    for key, value in external.items():
        if key in models:
            errors.append(
                at((EXTENSION, "external", key), f"model key {key!r} is also a service's model")
            )
            continue
        models[key] = value
        for sub, sub_pos in positions.items():
            if sub[:3] == (EXTENSION, "external", key):
                fake_positions[("models", key, *sub[3:])] = sub_pos
    if errors:
        raise ConfigFileError(errors)
    default = extension.get("default_model", next(iter(models), None))
    if (EXTENSION, "default_model") in positions:
        fake_positions[("default_model",)] = positions[(EXTENSION, "default_model")]
    data = {"docker": docker, "default_model": default, "models": models}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_errors(exc, source, fake_positions, data=data)) from exc


def _map_positions(
    service: _Service, positions: dict[Loc, Position], out: dict[Loc, Position]
) -> None:
    """Point each config field of a service's model at the compose entry it came from."""
    root = ("services", service.name)
    if root in positions:
        out[("models", service.key)] = positions[root]
    for name, loc in service.locs.items():
        probe = (*root, *loc)
        while probe not in positions and len(probe) > len(root):
            probe = probe[:-1]
        if probe in positions:
            pos = positions[probe]
            out[("models", service.key, name)] = Position(
                pos.key_line, pos.key_col, pos.key_line, pos.key_col, False
            )


def _one_dir(parsed: list[_Service], attr: str, at: Callable[[Loc, str], str]) -> str | None:
    found: list[tuple[str, Loc, str]] = []
    for service in parsed:
        value = getattr(service, attr)
        if value is not None:
            found.append((value[0], value[1], service.name))
    if not found:
        return None
    common = Counter(path for path, _, _ in found).most_common(1)[0][0]
    for path, loc, name in found:
        if path != common:
            mount = {
                "models_dir": "/models",
                "hf_cache": "the Hugging Face cache",
                "vllm_cache": "vLLM's cache",
            }[attr]
            raise ConfigFileError(
                [
                    at(
                        ("services", name, *loc),
                        f"service {name!r} mounts {path} at {mount}, but other services mount "
                        f"{common}; ryx-desktop uses one {attr} for all models",
                    )
                ]
            )
    return common


def _is_vllm(name: str, service: dict[str, Any], env: Mapping[str, str]) -> bool:
    """A service of ours: io.ryx label, ryx-vllm- container, vllm- service name or a vLLM image."""
    labels = _labels(service, env)
    if LABEL_MODEL in labels:
        return True
    container = service.get("container_name")
    if isinstance(container, str) and interpolate(container, env).startswith(CONTAINER_PREFIX):
        return True
    if name.startswith("vllm-"):
        return True
    image = service.get("image")
    return isinstance(image, str) and "vllm" in interpolate(image, env).lower()


def _text(value: Any, env: Mapping[str, str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return interpolate(value, env) if isinstance(value, str) else str(value)


def _labels(service: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("labels") or {}
    if isinstance(raw, list):
        pairs = [str(item).partition("=") for item in raw]
        return {k: interpolate(v, env) for k, _, v in pairs}
    if isinstance(raw, dict):
        return {str(k): "" if v is None else _text(v, env) for k, v in raw.items()}
    raise _ServiceError(("labels",), "labels must be a list or a mapping")


def _environment(
    service: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], dict[str, int | str]]:
    """The service's environment: interpolated values, raw values, and each entry's loc part."""
    raw = service.get("environment") or {}
    values: dict[str, str] = {}
    raws: dict[str, str] = {}
    where: dict[str, int | str] = {}
    if isinstance(raw, list):
        for index, item in enumerate(raw):
            name, eq, value = str(item).partition("=")
            if eq:  # a bare NAME passes the shell's value through: not config
                values[name], raws[name], where[name] = interpolate(value, env), value, index
    elif isinstance(raw, dict):
        for name, value in raw.items():
            if value is not None:
                text = value if isinstance(value, str) else _text(value, env)
                values[str(name)], raws[str(name)] = _text(value, env), text
                where[str(name)] = str(name)
    else:
        raise _ServiceError(("environment",), "environment must be a list or a mapping")
    return values, raws, where


def _command(service: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    raw = service.get("command")
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            tokens = shlex.split(interpolate(raw, env))
        except ValueError as exc:
            raise _ServiceError(("command",), f"cannot split the command: {exc}") from exc
    elif isinstance(raw, list):
        tokens = [_text(item, env) for item in raw]
    else:
        raise _ServiceError(("command",), "command must be a string or a list")
    for prefix in SERVE_PREFIXES:
        if tokens[: len(prefix)] == prefix and len(tokens) > len(prefix):
            return tokens[len(prefix) :]
    if len(tokens) >= 3 and tokens[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]:
        tokens = tokens[3:]
    return tokens


@dataclass
class _Flags:
    model: str | None = None
    served: list[str] = field(default_factory=list)
    gpu: str | None = None
    max_len: str | None = None
    port: str | None = None
    sleep: bool = False
    extra: list[str] = field(default_factory=list)


def _parse_flags(tokens: list[str]) -> _Flags:
    flags = _Flags()
    positional = None
    if tokens and not tokens[0].startswith("-"):
        positional = flags.model = tokens.pop(0)  # `vllm serve MODEL` style
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, inline = token.partition("=")
        name = name.replace("_", "-") if name.startswith("--") else name
        if name == "--enable-sleep-mode" and not eq:
            flags.sleep = True
            i += 1
            continue
        if name not in VALUE_FLAGS:
            flags.extra.append(token)
            i += 1
            continue
        if eq:
            values, i = [inline], i + 1
        elif name == "--served-model-name":
            j = i + 1
            while j < len(tokens) and not tokens[j].startswith("-"):
                j += 1
            values, i = tokens[i + 1 : j], j
        elif i + 1 < len(tokens):
            values, i = [tokens[i + 1]], i + 2
        else:
            values, i = [], i + 1
        if not values:
            raise _ServiceError(("command",), f"{name} has no value")
        if name == "--model":
            if positional is not None and values[0] != positional:
                raise _ServiceError(
                    ("command",),
                    f"names two models: {positional} (first) and --model {values[0]}",
                )
            flags.model = values[0]
        elif name == "--served-model-name":
            flags.served += values
        elif name == "--gpu-memory-utilization":
            flags.gpu = values[0]
        elif name == "--max-model-len":
            flags.max_len = values[0]
        elif name == "--port":
            flags.port = values[0]
    return flags


def _host_port(service: dict[str, Any], env: Mapping[str, str], container_port: str) -> Published:
    raw = service.get("ports") or []
    if not isinstance(raw, list):
        raise _ServiceError(("ports",), "ports must be a list")
    for entry in port_entries(raw, lambda value: _text(value, env)):
        if entry.target != container_port:
            continue
        if not entry.published.isdigit():
            raise _ServiceError(
                ("ports", entry.index), f"host port {entry.published!r} must be a single number"
            )
        return entry
    raise _ServiceError(
        ("ports",), f"publishes no host port for vLLM's port {container_port} (like '8001:8000')"
    )


@dataclass
class _Mounts:
    """The host folders a service mounts where ryx-desktop mounts its three."""

    models_dir: tuple[str, Loc] | None = None
    hf_cache: tuple[str, Loc] | None = None
    vllm_cache: tuple[str, Loc] | None = None


def _volumes(service: dict[str, Any], env: Mapping[str, str], base: Path) -> _Mounts:
    found = _Mounts()
    raw = service.get("volumes") or []
    if not isinstance(raw, list):
        raise _ServiceError(("volumes",), "volumes must be a list")
    for index, entry in enumerate(raw):
        if isinstance(entry, dict):
            source = _text(entry.get("source", ""), env)
            target = _text(entry.get("target", ""), env)
        else:
            parts = _text(entry, env).split(":")
            if len(parts) < 2:
                continue
            source, target = parts[0], parts[1]
        target = str(PurePosixPath(target)) if target else target
        if not source.startswith(("/", "~", ".")):
            continue  # a named volume has no host path to record
        host = os.path.normpath(base / Path(source).expanduser())
        where = (host, ("volumes", index))
        if target == MODELS_MOUNT:
            found.models_dir = where
        elif target == HF_CACHE_MOUNT or target.endswith("/huggingface"):
            found.hf_cache = where
        elif target == VLLM_CACHE_MOUNT:
            found.vllm_cache = where
    return found


def _indexes(text: str, what: str, loc: Loc) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise _ServiceError(loc, f"{what} {text!r} must list GPU indexes like 0,1")
    return tuple(int(p) for p in parts)


def _gpu_request(service: dict[str, Any], env: Mapping[str, str]) -> str | tuple[int, ...] | None:
    """The GPUs the service asks Docker for: 'all', device indexes, or None for no request."""
    gpus = service.get("gpus")
    if gpus is not None:
        if _text(gpus, env) == "all":
            return "all"
        raise _ServiceError(("gpus",), "only `gpus: all` is understood; use deploy devices")
    deploy = service.get("deploy") or {}
    devices = (
        ((deploy.get("resources") or {}).get("reservations") or {}).get("devices")
        if isinstance(deploy, dict)
        else None
    ) or []
    loc: Loc = ("deploy", "resources", "reservations", "devices")
    for index, request in enumerate(devices):
        if not isinstance(request, dict):
            continue
        caps = {str(c) for c in request.get("capabilities") or []}
        if "gpu" not in caps and request.get("driver") != "nvidia":
            continue
        if request.get("device_ids") is not None:
            ids = ",".join(_text(i, env) for i in request["device_ids"])
            return _indexes(ids, "device_ids", (*loc, index))
        count = _text(request.get("count", "all"), env)
        if count in ("all", "-1"):
            return "all"
        if count.isdigit():
            return tuple(range(int(count)))
        raise _ServiceError((*loc, index), f"GPU count {count!r} must be 'all' or a number")
    if service.get("runtime") == "nvidia":
        return "all"
    return None


def _parse_service(
    name: str, service: dict[str, Any], env: Mapping[str, str], base: Path
) -> _Service:
    labels = _labels(service, env)
    container = service.get("container_name")
    key = labels.get(LABEL_MODEL) or (
        key_from_container_name(_text(container, env)) if container else None
    )
    if not key:
        key = name.removeprefix("vllm-") or name
    image = service.get("image")
    if not image:
        raise _ServiceError((), "has no image")
    env_values, env_raw, env_where = _environment(service, env)
    flags = _parse_flags(_command(service, env))
    model = flags.model or env_values.get("MODEL")
    if not model:
        raise _ServiceError(("command",), "names no model in its command (like `vllm serve MODEL`)")
    fields: dict[str, Any] = {"model": model}
    locs: dict[str, Loc] = {"model": ("command",)}

    if flags.served:
        fields["served_name"] = flags.served[0]
    if flags.gpu is not None:
        fields["gpu_memory_utilization"] = flags.gpu
    if flags.max_len is not None:
        fields["max_model_len"] = flags.max_len
    if flags.sleep:
        fields["sleep_mode"] = True
    fields["extra_args"] = flags.extra
    for name_ in ("served_name", "gpu_memory_utilization", "max_model_len", "extra_args"):
        locs[name_] = ("command",)
    published = _host_port(service, env, flags.port or str(CONTAINER_PORT))
    fields["port"] = int(published.published)
    locs["port"] = ("ports",)

    # devices: the GPUs Docker hands over, narrowed by CUDA_VISIBLE_DEVICES inside the container
    request = _gpu_request(service, env)
    for var in ("NVIDIA_VISIBLE_DEVICES",):
        if var in env_values:
            value = env_values.pop(var)
            if value in ("none", "void", ""):
                request = None
            elif value != "all":
                request = _indexes(value, var, ("environment", env_where[var]))
            elif request is None:
                request = "all"
    devices: str | tuple[int, ...] = "none" if request is None else request
    if "CUDA_VISIBLE_DEVICES" in env_values:
        loc = ("environment", env_where["CUDA_VISIBLE_DEVICES"])
        visible = _indexes(env_values.pop("CUDA_VISIBLE_DEVICES"), "CUDA_VISIBLE_DEVICES", loc)
        if isinstance(request, tuple):
            if any(i >= len(request) for i in visible):
                raise _ServiceError(loc, "CUDA_VISIBLE_DEVICES names a GPU the service lacks")
            visible = tuple(request[i] for i in visible)
        devices = visible if visible else "none"
    fields["devices"] = devices
    locs["devices"] = ("deploy",) if "deploy" in service else ("environment",)

    if env_values.get("MODEL") == model:
        del env_values["MODEL"]  # the seed's leftover copy of --model
    for var in PASSTHROUGH:
        refs_itself = env_raw.get(var, "").startswith((f"${{{var}}}", f"${{{var}:", f"${{{var}-"))
        if var in env_values and refs_itself:
            del env_values[var]
    fields["env"] = env_values
    locs["env"] = ("environment",)

    derived_size, derived_category = _from_key(key)
    fields["category"] = labels.get(LABEL_CATEGORY, derived_category)
    fields["size"] = labels.get(LABEL_SIZE, derived_size)
    if LABEL_NAME in labels:
        fields["name"] = labels[LABEL_NAME]
    if LABEL_ALIASES in labels:
        fields["aliases"] = [a.strip() for a in labels[LABEL_ALIASES].split(",") if a.strip()]
    else:
        fields["aliases"] = flags.served[1:]
    for label, attr in ((LABEL_IDLE_TTL, "idle_ttl"), (LABEL_START_TIMEOUT, "start_timeout")):
        if label in labels:
            fields[attr] = labels[label]
    for attr in ("category", "size", "name", "aliases", "idle_ttl", "start_timeout"):
        locs[attr] = ("labels",)

    mounts = _volumes(service, env, base)
    return _Service(
        name=name,
        key=key,
        image=_text(image, env),
        image_label=labels.get(LABEL_IMAGE),
        fields=fields,
        models_dir=mounts.models_dir,
        hf_cache=mounts.hf_cache,
        vllm_cache=mounts.vllm_cache,
        locs=locs,
        published=published,
    )


def _from_key(key: str) -> tuple[str, str]:
    """(size, category) from a key shaped ``<size>-<category>``, else the schema defaults."""
    size, dash, category = key.partition("-")
    if dash and category and size in KNOWN_SIZES:
        return size, category
    return ModelConfig.model_fields["size"].default, ModelConfig.model_fields["category"].default


# ---------------------------------------------------------------- export

HEADER = """\
# vLLM models for ryx-desktop, one container per model.
# Written by `ryx-desktop config export-compose`; works on its own too:
#   docker compose -f THIS_FILE up -d [vllm-<key> ...]
# Weights come from RYX_MODELS_DIR (mounted read-only at /models), the Hugging Face cache from
# RYX_HF_CACHE, vLLM's compile cache from RYX_VLLM_CACHE. ryx-desktop adopts these containers
# by their io.ryx.* labels.
# Ports are published on 127.0.0.1 only.
"""


class _Flow(list[str]):
    """A short list written on one line: ``capabilities: [gpu]``."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)


def export_compose(config: Config) -> str:
    """A standalone compose file running every managed model of ``config``.

    External (``url:``) models are no containers; they travel in the ``x-ryx`` extension.
    """
    docker = config.docker
    models_src = f"${{{MODELS_DIR_VAR}:-{_escape(str(docker.models_dir))}}}"
    hf_src = f"${{{HF_CACHE_VAR}:-{_escape(str(docker.hf_cache))}}}"
    vllm_src = f"${{{VLLM_CACHE_VAR}:-{_escape(str(docker.vllm_cache))}}}"
    services: dict[str, Any] = {}
    external: dict[str, Any] = {}
    for key, model in config.models.items():
        if not isinstance(model, ModelConfig):
            external[key] = model.model_dump(mode="json", exclude_defaults=True)
            external[key]["url"] = model.url
            continue
        environment = {name: _escape(value) for name, value in model.env.items()}
        if "HF_TOKEN" not in environment:
            environment["HF_TOKEN"] = "${HF_TOKEN:-}"
        for name, value in default_env(model).items():
            environment.setdefault(name, f"${{{name}:-{_escape(value)}}}")
        labels = {LABEL_MANAGED: "true", LABEL_MODEL: key}
        if model.name is not None:
            labels[LABEL_NAME] = model.name
        labels[LABEL_CATEGORY] = model.category
        labels[LABEL_SIZE] = model.size
        if model.aliases:
            labels[LABEL_ALIASES] = ",".join(model.aliases)
        if model.idle_ttl is not None:
            labels[LABEL_IDLE_TTL] = repr(model.idle_ttl)
        if model.start_timeout is not None:
            labels[LABEL_START_TIMEOUT] = repr(model.start_timeout)
        if model.image is not None:
            labels[LABEL_IMAGE] = model.image
        service: dict[str, Any] = {
            "image": _escape(model.image or docker.image),
            "container_name": container_name(key),
            "command": [_escape(arg) for arg in vllm_args(model)],
            "ports": [f"127.0.0.1:{model.port}:{CONTAINER_PORT}"],
            "volumes": [
                f"{models_src}:{MODELS_MOUNT}:ro",
                f"{hf_src}:{HF_CACHE_MOUNT}",
                f"{vllm_src}:{VLLM_CACHE_MOUNT}",
            ],
            "environment": environment,
            "ipc": "host",
        }
        gpu: dict[str, Any] = {"driver": "nvidia"}
        if model.devices == "all":
            gpu["count"] = "all"
        elif model.devices != "none":
            gpu["device_ids"] = _Flow(str(i) for i in model.devices)
        gpu["capabilities"] = _Flow(["gpu"])
        if model.devices != "none":
            service["deploy"] = {"resources": {"reservations": {"devices": [gpu]}}}
        service["labels"] = {k: _escape(v) for k, v in labels.items()}
        services[f"vllm-{key}"] = service

    document: dict[str, Any] = {"services": services}
    extension: dict[str, Any] = {}
    if config.default_model is not None:
        extension["default_model"] = config.default_model
    if external:
        extension["external"] = external
    if extension:
        document[EXTENSION] = extension
    body = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 30,
    )
    return HEADER + "\n" + space_out(body, "services:")
