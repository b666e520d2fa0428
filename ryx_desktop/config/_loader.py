"""Reading the config file: YAML with the position of every key and value, errors as FILE:LINE:COL.

PyYAML gives each node a start mark; pydantic gives each error a ``loc`` tuple. This module keeps
the marks by path while loading, then turns every validation error into one plain-English line that
points at the offending key or value.
"""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ryx_desktop.config._defaults import default_config
from ryx_desktop.config._errors import ConfigError
from ryx_desktop.config._partial import partial_problems
from ryx_desktop.config._schema import (
    Config,
    ConfigProblems,
    DockerConfig,
    ExternalModelConfig,
    GpuConfig,
    Loc,
    ModelConfig,
    ProxyConfig,
    dotted,
)

MERGE_TAG = "tag:yaml.org,2002:merge"
#: How many nodes (keys, values, list items) aliases may repeat in one file, all aliases together.
#: An alias stands for everything under its anchor, so aliases of lists of aliases grow
#: exponentially (a 300-byte "billion laughs" holds 387 million values); every later step (the
#: position walker, validation) visits each repeat. Anchors for shared model settings repeat
#: a few hundred at most.
ALIAS_EXPANSION_LIMIT = 100_000
ALIAS_HINT = (
    "Write the repeated settings out, or use fewer aliases of lists that hold aliases; "
    f"a config never needs {ALIAS_EXPANSION_LIMIT:,} repeated values."
)
#: The discriminator tags pydantic puts into the ``loc`` of a model entry.
MODEL_TAGS: dict[str, type[BaseModel]] = {"managed": ModelConfig, "external": ExternalModelConfig}
SECTIONS: dict[str, type[BaseModel]] = {
    "proxy": ProxyConfig,
    "docker": DockerConfig,
    "gpu": GpuConfig,
}


class ConfigFileError(ConfigError):
    """A config file that cannot be read or does not validate; ``errors`` lists every problem.

    ``message`` is the first problem (``FILE:LINE:COL: what is wrong``), with a count of the rest.
    """

    def __init__(self, errors: Iterable[str], hint: str | None = None) -> None:
        self.errors = list(errors)
        if not self.errors:
            raise ValueError("ConfigFileError needs at least one error")
        message = self.errors[0]
        if len(self.errors) > 1:
            more = len(self.errors) - 1
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(message, hint)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a mapping entry (or sequence item) sits: its key and its value, 1-based."""

    key_line: int
    key_col: int
    line: int
    col: int
    is_mapping: bool


class _DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class _AliasBombError(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key set twice in one mapping (PyYAML keeps the last silently),
    and aliases that repeat more than ``ALIAS_EXPANSION_LIMIT`` nodes.

    The composer shares an anchored node between its aliases, so nothing grows while composing;
    but each alias counts all that its anchor holds, aliases inside it included, and the count is
    checked as each alias is met: the file is refused before anything walks the expanded tree.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[Node, int] = {}  # nodes in a finished node's subtree, aliases expanded
        self._total = 0  # nodes composed so far, aliases expanded
        self._repeated = 0  # of which repeated by aliases

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            mark: Mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            # an alias of a node that encloses it (a recursive structure) is not expanded
            size = self._sizes.get(node, 1) if node is not None else 1
            self._total += size
            self._repeated += size
            if self._repeated > ALIAS_EXPANSION_LIMIT:
                raise _AliasBombError(
                    problem=(
                        "YAML aliases expand too much: with this alias, the file's aliases "
                        f"repeat more than {ALIAS_EXPANSION_LIMIT:,} keys and values"
                    ),
                    problem_mark=mark,
                )
            return node
        before = self._total
        node = super().compose_node(parent, index)
        self._total += 1
        if node is not None:
            self._sizes[node] = self._total - before
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                first = seen[key].start_mark
                raise _DuplicateKeyError(
                    problem=f"duplicate key {key!r} (first set on line {first.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, Position]]:
    """The document in ``text`` and the position of every path in it; YAML errors as ConfigError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        positions: dict[Loc, Position] = {}
        if node is not None:
            mark = node.start_mark
            positions[()] = Position(
                mark.line + 1,
                mark.column + 1,
                mark.line + 1,
                mark.column + 1,
                isinstance(node, MappingNode),
            )
            _walk(loader, node, (), positions, set())
    except _AliasBombError as exc:
        raise ConfigFileError([_yaml_message(exc, source)], ALIAS_HINT) from exc
    except yaml.MarkedYAMLError as exc:
        raise ConfigFileError([_yaml_message(exc, source)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigFileError([f"{source}: invalid YAML: {exc}"]) from exc
    finally:
        loader.dispose()
    return data, positions


def _yaml_message(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    what = exc.problem or "invalid YAML"
    if isinstance(exc, _DuplicateKeyError | _AliasBombError):
        return f"{where}: {what}"
    if exc.context and exc.context_mark and exc.context_mark is not mark:
        context = f"{exc.context} on line {exc.context_mark.line + 1}"
        what = f"{context}, {what}" if what.startswith("but ") else f"{what} ({context})"
    return f"{where}: invalid YAML: {what}"


def _walk(
    loader: _Loader,
    node: Node,
    path: Loc,
    positions: dict[Loc, Position],
    active: set[int],
) -> None:
    if id(node) in active:  # an alias that refers to an enclosing node
        return
    active.add(id(node))
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = loader.construct_object(key_node)
            if not isinstance(key, str | int):
                continue
            sub = (*path, key)
            positions[sub] = _position(key_node, value_node)
            _walk(loader, value_node, sub, positions, active)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            sub = (*path, index)
            positions[sub] = _position(item, item)
            _walk(loader, item, sub, positions, active)
    active.discard(id(node))


def _position(key_node: Node, value_node: Node) -> Position:
    k, v = key_node.start_mark, value_node.start_mark
    if isinstance(value_node, ScalarNode) and value_node.value == "" and not value_node.style:
        v = k  # an empty value (null) has no place of its own: point at its key
    return Position(
        k.line + 1, k.column + 1, v.line + 1, v.column + 1, isinstance(value_node, MappingNode)
    )


def parse_config(text: str, source: str) -> Config:
    """Validate the YAML ``text`` of a config file; ``source`` names it in error messages."""
    data, positions = load_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        pos = positions.get((), Position(1, 1, 1, 1, False))
        raise ConfigFileError(
            [
                f"{source}:{pos.line}:{pos.col}: the config must be a mapping of settings "
                f"(proxy:, docker:, models: ...), not {_describe(data)}"
            ]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_errors(exc, source, positions, data=data)) from exc


def load_config(path: Path) -> Config:
    """The config at ``path``; the built-in default when no file is there."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default_config()
    except IsADirectoryError as exc:
        raise ConfigFileError([f"{path}: is a directory, not a config file"]) from exc
    except OSError as exc:
        raise ConfigFileError([f"{path}: cannot read the config: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            [f"{path}: is not UTF-8 text (byte {exc.start} cannot be decoded)"]
        ) from exc
    return parse_config(text, str(path))


def format_errors(
    exc: ValidationError,
    source: str,
    positions: dict[Loc, Position],
    prefix: Loc = (),
    *,
    data: object = None,
) -> list[str]:
    """Every error of ``exc`` as ``SOURCE:LINE:COL: path: what``, sorted by position.

    ``prefix`` is prepended to each ``loc`` when the validated data sits below the file's root.
    With the validated ``data`` (a whole config), the checks across models that pydantic left
    out run on what did validate, so that every problem is told at once.
    """
    found: dict[str, tuple[int, int]] = {}
    for loc, message, at_key, kind in _all_problems(exc, data):
        full = (*prefix, *loc)
        line, col = _locate(full, positions, at_key, kind)
        where = dotted(full)
        text = f"{source}:{line}:{col}: {where + ': ' if where else ''}{message}"
        found.setdefault(text, (line, col))
    return sorted(found, key=lambda t: found[t])


def validation_problems(exc: ValidationError, data: object = None) -> list[tuple[Loc, str]]:
    """pydantic's errors as (location, message) in the loader's wording, duplicates dropped.

    The settings dialogs use it so that a field shows the sentence the file check would print;
    with the validated ``data``, the checks across models come too (see ``format_errors``).
    """
    found: dict[tuple[Loc, str], None] = {}
    for loc, message, _at_key, _kind in _all_problems(exc, data):
        found.setdefault((loc, message), None)
    return list(found)


def _all_problems(exc: ValidationError, data: object) -> Iterator[tuple[Loc, str, bool, str]]:
    """(loc, message, point at the key, pydantic's error type) for each problem."""
    for error in exc.errors():
        for loc, message, at_key in _expand(error):
            yield loc, message, at_key, error["type"]
    if data is not None:
        for problem in partial_problems(data, exc):
            yield problem.loc, problem.message, problem.at_key, "value_error"


def _expand(error: ErrorDetails) -> Iterator[tuple[Loc, str, bool]]:
    """One error as (normalised loc, message, point at the key) triples."""
    raw_loc = tuple(error["loc"])
    loc, cls = _normalise(raw_loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ConfigProblems):
        for problem in cause.problems:
            yield (*loc, *problem.loc), problem.message, problem.at_key
        return
    if kind == "extra_forbidden":
        yield loc, _unknown_key(loc, cls), True
        return
    if kind == "missing":
        yield loc, _missing(loc), True
        return
    if loc and loc[-1] == "[key]":
        yield loc[:-1], f"a key must be text, not {_describe(error['input'])}", True
        return
    yield loc, _message(error, loc), False


def _normalise(loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union tags from ``loc``; also say which model class the loc ends in."""
    cls: type[BaseModel] | None = None
    if len(loc) >= 3 and loc[0] == "models" and loc[2] in MODEL_TAGS:
        cls = MODEL_TAGS[str(loc[2])]
        loc = (*loc[:2], *loc[3:])
        if len(loc) > 3:
            cls = None
    elif len(loc) == 2 and loc[0] in SECTIONS:
        cls = SECTIONS[str(loc[0])]
    elif len(loc) == 1:
        cls = Config
    # union members such as "literal['all','none']" are not keys of the file
    kept = tuple(p for p in loc if isinstance(p, int) or "[" not in p or p == "[key]")
    return kept, cls


def _locate(loc: Loc, positions: dict[Loc, Position], at_key: bool, kind: str) -> tuple[int, int]:
    if kind == "missing":
        loc = loc[:-1]
        at_key = True
    probe = loc
    while probe not in positions and probe:
        probe = probe[:-1]
        at_key = True  # the closest thing that exists is a whole section: point at its key
    pos = positions.get(probe)
    if pos is None:
        return 1, 1
    if at_key or pos.is_mapping:
        return pos.key_line, pos.key_col
    return pos.line, pos.col


def _unknown_key(loc: Loc, cls: type[BaseModel] | None) -> str:
    key = loc[-1]
    message = f"unknown setting {key!r}"
    if cls is not None and isinstance(key, str):
        close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message


def _missing(loc: Loc) -> str:
    field = loc[-1]
    if len(loc) == 3 and loc[0] == "models" and field == "model":
        return (
            "missing required setting 'model' (the path or name passed to vLLM's --model), "
            "or 'url' for a server that already runs"
        )
    return f"missing required setting {field!r}"


_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "a mapping",
    "model_type": "a mapping of settings",
    "model_attributes_type": "a mapping of settings",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a path",
}

_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _describe(error["input"])
    if loc and loc[-1] == "gpu_memory_utilization" and kind in _BOUNDS:
        return f"must be a share of GPU memory above 0 and at most 1 (like 0.3), got {got}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {got}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(name)}, got {got}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, got {got}"
    if kind == "value_error" and isinstance(ctx.get("error"), Exception):
        return str(ctx["error"])
    return str(error["msg"]).removeprefix("Value error, ")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)
