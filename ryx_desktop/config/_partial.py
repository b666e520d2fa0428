"""The checks across models on a config that does not validate, so every problem shows at once.

pydantic runs ``Config``'s checks across models (a port used twice, a name that leads to two
models, a ``default_model`` that names none) only once every setting validated: a file with one
bad value never heard of its clashes until that value was fixed. Here each part of the data is
validated on its own; an entry with bad settings is validated again without them (its defaults
stand in), and the checks run on what validated. A setting that stood in for a bad one is never
checked (a default port or served name could clash where the file's own would not), so nothing
is reported that fixing the bad values would not report too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ryx_desktop.config._hosts import host_problems
from ryx_desktop.config._schema import (
    AnyModel,
    AnyModelConfig,
    ModelConfig,
    Problem,
    ProxyConfig,
    consistency_problems,
)

_ENTRY: TypeAdapter[AnyModel] = TypeAdapter(AnyModelConfig)
_PROXY: TypeAdapter[ProxyConfig] = TypeAdapter(ProxyConfig)
#: The settings a model's routing names come from.
_NAME_FIELDS = frozenset({"served_name", "name", "model", "url", "aliases"})


@dataclass(frozen=True, slots=True)
class _Salvaged:
    """A part validated without its bad settings (``dropped``)."""

    value: Any
    dropped: frozenset[str]


def partial_problems(data: object, exc: ValidationError) -> list[Problem]:
    """The problems across models in ``data``, which failed to validate with ``exc``.

    Empty when the checks across models ran already (they raise at the root), or when ``data``
    is not a mapping of settings at all.
    """
    if not isinstance(data, Mapping) or any(not error["loc"] for error in exc.errors()):
        return []
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        return []  # no model can be told apart: the models' own error says why
    keys = [key for key in raw_models if isinstance(key, str)]
    ports: dict[str, AnyModel] = {}
    names: dict[str, AnyModel] = {}
    unchecked: set[str] = set()
    hosted: dict[str, AnyModel] = {}  # the models whose `host:` validated
    for key in keys:
        salvaged = _salvage(_ENTRY, raw_models[key])
        if salvaged is None or salvaged.dropped & _NAME_FIELDS:
            unchecked |= _raw_names(raw_models[key])
        if salvaged is None:
            continue
        if isinstance(salvaged.value, ModelConfig) and "port" not in salvaged.dropped:
            ports[key] = salvaged.value
        if not salvaged.dropped & _NAME_FIELDS:
            names[key] = salvaged.value
        if "host" not in salvaged.dropped:
            hosted[key] = salvaged.value
    default = data.get("default_model")
    problems = consistency_problems(
        keys,
        ports=ports,
        names=names,
        proxy_port=_proxy_port(data.get("proxy")),
        default_model=default if isinstance(default, str) else None,
        unchecked_names=unchecked,
    )
    return problems + host_problems(_host_names(data.get("hosts")), hosted)


def _host_names(raw: object) -> list[str] | None:
    """The names under ``hosts:``, bad entries too (a model may name them); None: unreadable."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return None
    return [name for name in raw if isinstance(name, str)]


def _proxy_port(raw: object) -> int | None:
    """The proxy's port when its section (or its default) holds a valid one."""
    if raw is None:
        return ProxyConfig().port
    salvaged = _salvage(_PROXY, raw)
    if salvaged is None or "port" in salvaged.dropped:
        return None
    port: int = salvaged.value.port
    return port


def _salvage(adapter: TypeAdapter[Any], raw: object) -> _Salvaged | None:
    """``raw`` validated; else validated without the settings it got wrong; else None."""
    try:
        return _Salvaged(adapter.validate_python(raw), frozenset())
    except ValidationError as exc:
        bad = {_field(error["loc"]) for error in exc.errors()}
    if None in bad or not isinstance(raw, Mapping):
        return None  # a problem of the whole part: nothing to leave out
    dropped = frozenset(str(name) for name in bad)
    try:
        kept = {k: v for k, v in raw.items() if k not in dropped}
        return _Salvaged(adapter.validate_python(kept), dropped)
    except ValidationError:
        return None  # a required setting was wrong


def _field(loc: tuple[str | int, ...]) -> str | int | None:
    """The setting an error's ``loc`` is about (past the union's tag); None: the whole part."""
    parts = loc[1:] if loc and loc[0] in ("managed", "external") else loc
    return parts[0] if parts else None


def _raw_names(entry: object) -> set[str]:
    """Every name a broken entry may route by, as written."""
    if not isinstance(entry, Mapping):
        return set()
    names: set[str] = set()
    for field in _NAME_FIELDS:
        value = entry.get(field)
        values = value if isinstance(value, list | tuple) else [value]
        names |= {v for v in values if isinstance(v, str)}
    return names
