"""Writing the config back: readable YAML, saved atomically, never over a file we cannot read.

A save may also be told what the file held when the app read it (``expected``): then a file
edited by hand since is not overwritten (``ConfigChangedError``). The check runs first and again
just before the new file is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ryx_desktop.config._fingerprint import Fingerprint, check_unchanged
from ryx_desktop.config._loader import ConfigFileError
from ryx_desktop.config._schema import Config, ExternalModelConfig, ModelConfig

HEADER = (
    "# ryx-desktop config: what models to run and how.\n"
    "# Check it with `ryx-desktop config check`; the design doc lists every setting.\n"
)

#: Model fields written even when they hold their default, so every entry reads complete.
MANAGED_ALWAYS = (
    "model",
    "aliases",
    "category",
    "size",
    "port",
    "gpu_memory_utilization",
    "max_model_len",
    "devices",
    "extra_args",
)
EXTERNAL_ALWAYS = ("url", "aliases", "category", "size")
#: Section fields written even when they hold their default.
SECTION_ALWAYS = {
    "proxy": ("host", "port"),
    "docker": ("image", "models_dir", "hf_cache"),
    "gpu": ("policy",),
}
#: New files may hold an api_key, so only their owner may read them.
NEW_FILE_MODE = 0o600
NO_WRAP = 1 << 30


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of scalars (``aliases: [general]``) stay on one line."""

    def represent_sequence(
        self, tag: str, sequence: Any, flow_style: bool | None = None
    ) -> yaml.SequenceNode:
        flat = all(not isinstance(item, dict | list | tuple) for item in sequence)
        return super().represent_sequence(tag, sequence, flow_style=flat)

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent block lists under their key


def _model_dict(model: ModelConfig | ExternalModelConfig) -> dict[str, Any]:
    always = MANAGED_ALWAYS if isinstance(model, ModelConfig) else EXTERNAL_ALWAYS
    full = model.model_dump(mode="json")
    changed = model.model_dump(mode="json", exclude_defaults=True)
    return {k: v for k, v in full.items() if k in changed or k in always}


def _section_dict(name: str, section: Any) -> dict[str, Any]:
    full = section.model_dump(mode="json")
    changed = section.model_dump(mode="json", exclude_defaults=True)
    keep = SECTION_ALWAYS.get(name, ())
    out = {k: v for k, v in full.items() if k in changed or k in keep}
    if name == "docker":
        for key in ("models_dir", "hf_cache"):
            out[key] = _home_relative(Path(out[key]))
    return out


def _home_relative(path: Path) -> str:
    """``/home/me/x`` as ``~/x`` (the loader expands it back); other paths unchanged."""
    try:
        rest = path.relative_to(Path.home())
    except ValueError:
        return str(path)
    return "~" if rest == Path(".") else f"~/{rest.as_posix()}"


#: The files on this machine a host names (ssh keys, TLS files), by section of a host.
HOST_FILES = {"ssh": ("identity_file", "config_file"), "tls": ("ca", "cert", "key")}


def _local_files_home_relative(hosts: dict[str, Any]) -> dict[str, Any]:
    """The dumped ``hosts:`` with the local files they name written as ``~/...``."""
    for host in hosts.values():
        for section, keys in HOST_FILES.items():
            part = host.get(section)
            for key in keys if isinstance(part, dict) else ():
                if isinstance(part.get(key), str):
                    part[key] = _home_relative(Path(part[key]))
    return hosts


def dump_config(config: Config) -> str:
    """The config as YAML that loads back to an equal config; defaults left out where it helps."""
    data: dict[str, Any] = {}
    for name in ("proxy", "docker", "gpu"):
        data[name] = _section_dict(name, getattr(config, name))
    top = config.model_dump(mode="json", exclude_defaults=True, exclude={"proxy", "docker", "gpu"})
    for key, value in top.items():  # every general setting that is not its default
        if key not in ("default_model", "models"):
            data[key] = _local_files_home_relative(value) if key == "hosts" else value
    data["default_model"] = config.default_model
    data["models"] = {key: _model_dict(model) for key, model in config.models.items()}
    body = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=NO_WRAP,  # a wrapped scalar would not survive the blank lines added below
    )
    return HEADER + "\n" + space_out(body, "models:")


def space_out(body: str, section: str) -> str:
    """A blank line before each top-level key and each entry of ``section``, for easy scanning."""
    lines: list[str] = []
    current = ""
    for line in body.splitlines():
        is_top = bool(line[:1].strip())
        is_entry = current == section and line.startswith("  ") and bool(line[2:3].strip())
        first_entry = is_entry and lines[-1] == section
        if lines and (is_top or (is_entry and not first_entry)):
            lines.append("")
        if is_top:
            current = line
        lines.append(line)
    return "\n".join(lines) + "\n"


def save_config(config: Config, path: Path, *, expected: Fingerprint | None = None) -> Fingerprint:
    """Write ``config`` to ``path`` atomically, keeping the file's permissions; returns the
    fingerprint of what was written.

    Refuses (ConfigError) to replace a file that cannot be read or is not YAML: that file may
    hold the user's work, and an error is better than losing it. With ``expected`` (what the
    file held when the caller read it), refuses with ``ConfigChangedError`` to replace a file
    whose content changed since; a file that is gone is written again.
    """
    target = path.resolve() if path.is_symlink() else path
    if expected is not None:
        check_unchanged(path, expected)
    mode = NEW_FILE_MODE
    if target.exists():
        try:
            yaml.safe_load(target.read_text(encoding="utf-8-sig"))
            mode = stat.S_IMODE(target.stat().st_mode)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            first_line = str(reason).splitlines()[0] if str(reason) else type(exc).__name__
            raise ConfigFileError(
                [f"refusing to overwrite {path}: it could not be read: {first_line}"],
                hint="Fix or move the file by hand, then save again.",
            ) from exc
    raw = dump_config(config).encode("utf-8")

    def last_check() -> None:
        if expected is not None:
            check_unchanged(path, expected)

    try:
        mtime_ns = _write_atomic(target, raw, mode, last_check)
    except OSError as exc:
        raise ConfigFileError([f"cannot save {path}: {exc.strerror or exc}"]) from exc
    return Fingerprint.of_bytes(raw, mtime_ns)


def _write_atomic(
    target: Path, raw: bytes, mode: int, before_replace: Callable[[], None] = lambda: None
) -> int:
    """Write ``raw`` beside ``target`` and rename it into place; the new file's mtime (ns).

    ``before_replace`` runs just before the rename and may raise to leave ``target`` as it is.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
            mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
        os.chmod(tmp_name, mode)
        before_replace()
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(parent)
    return mtime_ns


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
