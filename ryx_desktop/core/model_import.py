"""Turning found model directories (or a compose file's models) into entries of the config.

Pure: the caller saves the result through the app's one save path (atomic, refused when the
file changed on disk since it was read). Each found model gets:

* a key from its directory's name: lowercase, every run of other characters made ``-``, made
  unique against every key, served name and alias already in use (``-2``, ``-3``, ...);
* the directory's name as its served name (its path below the folder when that name is taken);
* the first free port from 8001 that no model and not the proxy uses;
* its path in the container (``/models/<path below docker.models_dir>``);
* ``gpu_memory_utilization`` from its estimated need and the GPU's size, ``max_model_len``
  from its context (see ``core/model_estimate.py``), and ``--trust-remote-code`` when its
  ``config.json`` maps classes to the repository's own code.

The built-in example models (the three of ``compose/model-router.yml`` a new install starts
with) can be dropped on the way (``replace_examples``), as long as they are left as shipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from ryx_desktop.config import (
    AnyModelConfig,
    Config,
    ExternalModelConfig,
    ModelConfig,
    default_config,
    dotted,
    validation_problems,
)
from ryx_desktop.config.container import MODELS_MOUNT
from ryx_desktop.core.errors import ConfigError, RyxError
from ryx_desktop.core.found_model import FoundModel
from ryx_desktop.core.model_estimate import suggest_share

FIRST_PORT = 8001
_MAX_KEY = 60
_SLUG_JUNK = re.compile(r"[^a-z0-9_.-]+")
_SMALL, _MEDIUM = 4e9, 20e9  # parameters: below small, below medium, else large


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The new config, and what changed in it."""

    config: Config
    added: tuple[str, ...]  # keys of the new models, in order
    replaced: tuple[str, ...] = ()  # keys whose existing model was replaced (compose import)
    removed_examples: tuple[str, ...] = ()  # built-in example models dropped
    models_dir_changed: bool = False  # docker.models_dir now points at the chosen folder


def example_keys(config: Config) -> tuple[str, ...]:
    """Keys of the built-in example models that are still exactly as shipped."""
    shipped = default_config().models
    return tuple(k for k, m in config.models.items() if k in shipped and shipped[k] == m)


def slug(name: str) -> str:
    """A model key from a directory name: ``Qwen2.5 7B (GPTQ)`` becomes ``qwen2.5-7b-gptq``."""
    text = _SLUG_JUNK.sub("-", name.lower())
    text = re.sub(r"-{2,}", "-", text).lstrip("-_.")[:_MAX_KEY].rstrip("-_.")
    return text or "model"


def container_path(config: Config, folder: Path, model: FoundModel) -> str | None:
    """Where the container sees ``model`` (found under the host ``folder``); None when
    ``folder`` is not inside ``docker.models_dir``."""
    below = _below(folder, config.docker.models_dir)
    if below is None:
        return None
    path = PurePosixPath(MODELS_MOUNT, *below.parts, *PurePosixPath(model.path).parts)
    return str(path)


def configured_key(config: Config, folder: Path, model: FoundModel) -> str | None:
    """The key of the model already configured with this directory, if any."""
    path = container_path(config, folder, model)
    for key, entry in config.models.items():
        if path is not None and isinstance(entry, ModelConfig) and entry.model == path:
            return key
    return None


def add_found_models(
    config: Config,
    found: Sequence[FoundModel],
    folder: Path,
    *,
    gpu_total_bytes: int | None,
    replace_examples: bool = False,
) -> ImportResult:
    """``config`` with a new model for each of ``found`` (directories under host ``folder``).

    Models whose directory is configured already are left out. When ``folder`` is not inside
    ``docker.models_dir``, the models folder becomes ``folder``, unless other models use the
    old one (RyxError then). Raises ConfigError when the result would not validate.
    """
    removed = example_keys(config) if replace_examples else ()
    models: dict[str, Any] = {k: m for k, m in config.models.items() if k not in removed}
    docker = config.docker
    dir_changed = _below(folder, docker.models_dir) is None
    if dir_changed:
        users = [k for k, m in models.items() if _uses_models_mount(m)]
        if users:
            raise RyxError(
                f"{folder} is not inside the models folder {docker.models_dir}, "
                f"which {_listed(users)} use{'s' if len(users) == 1 else ''}",
                hint=f"Move the models into {docker.models_dir}, or choose that folder.",
            )
        docker = docker.model_copy(update={"models_dir": folder})
    base = config.model_copy(update={"docker": docker})
    taken = _names_in_use(models.values(), models)
    ports = _ports_in_use(config, models.values())
    added: list[str] = []
    for model in found:
        path = container_path(base, folder, model)
        assert path is not None  # folder is inside docker.models_dir now
        if any(isinstance(m, ModelConfig) and m.model == path for m in models.values()):
            continue
        key = _unique(slug(model.name), taken)
        served = _served_name(model, taken)
        port = _free_port(ports)
        models[key] = _entry(model, path, served, port, gpu_total_bytes)
        taken.update({key, served})
        ports.add(port)
        added.append(key)
    result = _validated(base, models, added)
    return ImportResult(result, tuple(added), (), removed, dir_changed)


def add_compose_models(
    config: Config, imported: Config, *, replace_examples: bool = False
) -> ImportResult:
    """``config`` with the models of a compose file (``imported``, from ``import_compose``).

    A model whose key exists already replaces it (listed in ``replaced``). The Docker settings
    the compose file sets (image, models folder, caches) replace the config's; the selected
    model stays when it still exists. Raises ConfigError when the result would not validate.
    """
    removed = example_keys(config) if replace_examples else ()
    models: dict[str, Any] = {k: m for k, m in config.models.items() if k not in removed}
    replaced = tuple(k for k in imported.models if k in models)
    models.update(imported.models)
    set_fields = imported.docker.model_fields_set
    docker = config.docker.model_copy(
        update={name: getattr(imported.docker, name) for name in set_fields}
    )
    base = config.model_copy(update={"docker": docker})
    added = tuple(imported.models)
    preferred = imported.default_model if imported.default_model in models else None
    result = _validated(base, models, list(added), fallback=preferred)
    return ImportResult(result, added, replaced, removed, config.docker != docker)


def _entry(
    model: FoundModel, path: str, served: str, port: int, gpu_total_bytes: int | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": model.name,
        "model": path,
        "served_name": served,
        "category": _category(model.name),
        "size": _size(model.parameters),
        "port": port,
        "gpu_memory_utilization": suggest_share(model.need_bytes, gpu_total_bytes),
        "max_model_len": model.context,
        "devices": "all",
    }
    if model.trust_remote_code:
        entry["extra_args"] = ["--trust-remote-code"]
    return entry


def _validated(
    base: Config, models: dict[str, Any], added: list[str], fallback: str | None = None
) -> Config:
    """``base`` with ``models``. The selected model stays when it still exists; when it was
    dropped (or there was none and no other model), ``fallback`` or the first added one is."""
    default = base.default_model
    if default is not None and not _resolves(default, models):
        default = None  # it went with the examples, or was replaced
        choose = True
    else:
        choose = default is None and all(k in added for k in models)
    if choose:
        default = fallback or (added[0] if added else None)
    data = {name: getattr(base, name) for name in Config.model_fields}
    data["models"] = models
    data["default_model"] = default
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{dotted(loc)}: {message}" if loc else message
            for loc, message in validation_problems(exc)
        ]
        raise ConfigError(
            f"the models could not be added: {'; '.join(problems)}",
            "Fix the config in Settings or by hand, then try again.",
        ) from None


def _resolves(name: str, models: dict[str, Any]) -> bool:
    """Whether ``name`` is the key, served name or alias of one of ``models``."""
    if name in models:
        return True
    for model in models.values():
        if isinstance(model, ModelConfig | ExternalModelConfig) and (
            name == model.effective_served_name or name in model.aliases
        ):
            return True
    return False


def _below(folder: Path, models_dir: Path) -> PurePosixPath | None:
    try:
        return PurePosixPath(folder.relative_to(models_dir).as_posix())
    except ValueError:
        return None


def _uses_models_mount(model: AnyModelConfig) -> bool:
    if not isinstance(model, ModelConfig):
        return False
    path = PurePosixPath(model.model)
    mount = PurePosixPath(MODELS_MOUNT)
    return path == mount or mount in path.parents


def _names_in_use(models: Iterable[AnyModelConfig], keys: Iterable[str]) -> set[str]:
    taken = set(keys)
    for model in models:
        taken.add(model.effective_served_name)
        taken.update(model.aliases)
    return taken


def _ports_in_use(config: Config, models: Iterable[AnyModelConfig]) -> set[int]:
    ports = {m.port for m in models if isinstance(m, ModelConfig)}
    ports.add(config.proxy.port)
    return ports


def _free_port(ports: set[int]) -> int:
    port = FIRST_PORT
    while port in ports:
        port += 1
    return port


def _unique(wanted: str, taken: set[str]) -> str:
    if wanted not in taken:
        return wanted
    number = 2
    while f"{wanted}-{number}" in taken:
        number += 1
    return f"{wanted}-{number}"


def _served_name(model: FoundModel, taken: set[str]) -> str:
    for candidate in (model.name, model.path):
        if candidate not in taken and candidate != ".":
            return candidate
    return _unique(model.name, taken)


def _category(name: str) -> str:
    return "coding" if "code" in name.lower() else "general"


def _size(parameters: int | None) -> str:
    if parameters is None:
        return "medium"
    if parameters < _SMALL:
        return "small"
    return "medium" if parameters < _MEDIUM else "large"


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
