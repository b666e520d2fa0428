"""Finding the models already on disk: model directories in the Hugging Face layout.

A model directory holds a ``config.json`` and weights: ``*.safetensors``, ``*.bin``, ``*.pt`` or
``*.gguf`` files, or shards listed by an index (``model.safetensors.index.json``). Directories
are searched up to ``MAX_DEPTH`` levels below the folder (``org/name`` layouts, and the
``models--org--name/snapshots/<rev>`` layout of a Hugging Face cache); a model directory's own
subfolders are not searched. Junk is skipped without a word: hidden folders, folders without
``config.json``, a ``config.json`` without weights or that is not a JSON object, shards missing
from their index, broken symlinks, anything that cannot be read. Symlinked folders are followed
once (a loop of links is not).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ryx_desktop.config._errors import RyxError
from ryx_desktop.core.found_model import FoundModel, describe

__all__ = ["MAX_DEPTH", "FoundModel", "find_models", "scan_models"]

#: How many levels below the folder a model directory may sit (``a/b/c`` is 3).
MAX_DEPTH = 3
#: Folders looked into at most, so that choosing a huge folder ends in reasonable time.
MAX_FOLDERS = 5000
#: Weight formats in the order vLLM prefers them; an index names a format's shards.
FORMATS = (
    (".safetensors", "model.safetensors.index.json"),
    (".bin", "pytorch_model.bin.index.json"),
    (".pt", None),
    (".gguf", None),
)
#: Files with a weights suffix that are not weights (training leftovers).
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "optimizer.bin"})
CONFIG = "config.json"
_MAX_CONFIG_BYTES = 8 * 1024 * 1024
_HF_CACHE_PREFIX = "models--"


def scan_models(folder: Path, *, max_depth: int = MAX_DEPTH) -> list[FoundModel]:
    """Every model directory under ``folder`` (itself included), sorted by path.

    Raises RyxError when ``folder`` itself is missing or cannot be read.
    """
    root = folder.expanduser()
    try:
        os.listdir(root)
    except FileNotFoundError:
        raise RyxError(
            f"the models folder {root} does not exist",
            hint="Choose the folder that holds your models with Browse, or create it.",
        ) from None
    except NotADirectoryError:
        raise RyxError(
            f"{root} is a file, not a folder",
            hint="Choose the folder that holds your models with Browse.",
        ) from None
    except OSError as exc:
        raise RyxError(
            f"the models folder {root} cannot be read: {exc.strerror or exc}",
            hint=f"Fix its permissions (`chmod u+rx {root}`) or choose another folder.",
        ) from None
    return _Scan(root, max_depth).run()


async def find_models(
    folder: Path, executor: concurrent.futures.Executor | None = None
) -> list[FoundModel]:
    """``scan_models`` off the event loop (in ``executor``, default: the loop's)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, scan_models, folder)


class _Scan:
    """One walk of the folder tree."""

    def __init__(self, root: Path, max_depth: int) -> None:
        self._root = root
        self._max_depth = max_depth
        self._seen: set[str] = set()
        self.found: list[FoundModel] = []

    def run(self) -> list[FoundModel]:
        self._visit(self._root, ())
        return sorted(self.found, key=lambda m: m.path)

    def _visit(self, directory: Path, parts: tuple[str, ...]) -> None:
        if len(self._seen) >= MAX_FOLDERS:
            return
        try:
            real = os.path.realpath(directory, strict=True)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (OSError, RuntimeError):  # gone, unreadable, a symlink loop
            return
        if real in self._seen:
            return
        self._seen.add(real)
        files = {entry.name: size for entry, size in _files(entries)}
        if CONFIG in files:
            model = _model(directory, parts, files)
            if model is not None:
                self.found.append(model)
                return  # its subfolders (originals, caches) are its own
        if len(parts) >= self._max_depth:
            return
        folders = [e for e in entries if not e.name.startswith(".") and _is_dir(e)]
        # Real folders first: a model reached through a link too is listed by its real place.
        folders.sort(key=lambda e: e.is_symlink())
        for entry in folders:
            self._visit(Path(entry.path), (*parts, entry.name))


def _files(entries: Iterable[os.DirEntry[str]]) -> Iterable[tuple[os.DirEntry[str], int]]:
    """Regular files (symlinks followed) with their size; broken links and the rest left out."""
    for entry in entries:
        try:
            info = entry.stat()  # follows symlinks: a broken one raises
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            yield entry, info.st_size


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for a broken one
    except OSError:
        return False


def _model(directory: Path, parts: tuple[str, ...], files: Mapping[str, int]) -> FoundModel | None:
    """The model in ``directory``, or None when it is not a usable one."""
    weights = _weights_bytes(directory, files)
    if weights is None:
        return None
    config = _read_config(directory / CONFIG, files[CONFIG])
    if config is None:
        return None
    path = "/".join(parts) or "."
    return describe(path, _name(directory, parts), config, weights)


def _weights_bytes(directory: Path, files: Mapping[str, int]) -> int | None:
    """The size of the weights vLLM would load (the first format present); None when none."""
    for suffix, index_name in FORMATS:
        indexes = [n for n in files if n.endswith(f"{suffix}.index.json")]
        if index_name is not None and index_name in files:
            indexes = [index_name]
        if indexes:
            shards = _index_shards(directory / indexes[0])
            if shards and all(s in files for s in shards):
                return sum(files[s] for s in shards)
            continue  # an index whose shards are missing: an incomplete download
        sizes = [size for name, size in files.items() if _is_weights(name, suffix)]
        if sizes:
            return sum(sizes)
    return None


def _is_weights(name: str, suffix: str) -> bool:
    return name.endswith(suffix) and name not in NOT_WEIGHTS and not name.startswith("rng_state")


def _index_shards(index: Path) -> set[str]:
    """The shard files a weights index names; empty when it cannot be read."""
    data = _read_json(index, _MAX_CONFIG_BYTES)
    weight_map = data.get("weight_map") if data is not None else None
    if not isinstance(weight_map, Mapping):
        return set()
    shards = {v for v in weight_map.values() if isinstance(v, str)}
    # A shard is a file of this directory: a path that leaves it is not one.
    return {s for s in shards if "/" not in s and s not in ("", ".", "..")}


def _read_config(path: Path, size: int) -> dict[str, Any] | None:
    if size > _MAX_CONFIG_BYTES:
        return None
    return _read_json(path, _MAX_CONFIG_BYTES)


def _read_json(path: Path, limit: int) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it cannot be read, is too big or is not one."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError:
        return None
    if len(raw) > limit:
        return None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _name(directory: Path, parts: tuple[str, ...]) -> str:
    """The directory's name; a Hugging Face cache snapshot is named after its repository."""
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith(_HF_CACHE_PREFIX):
        repo = parts[-3].removeprefix(_HF_CACHE_PREFIX)
        return repo.split("--")[-1] or repo
    return parts[-1] if parts else directory.name
