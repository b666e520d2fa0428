"""The model dialog's path field: is a ``/models/...`` path there, and the folder a picker chose.

Every container mounts the models folder (``docker.models_dir``) at ``/models``, so a model path
under ``/models`` is a folder (or file) of the models folder on this machine: one that is not
there fails the start. The dialog says so as the path is typed, and its folder picker turns a
chosen folder back into the ``/models/...`` path. A Hugging Face name, or a path the container
has of its own, is not checked; nor is anything when the engine runs on another machine.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

from ryx_desktop.config import DockerConfig
from ryx_desktop.config.container import MODELS_MOUNT
from ryx_desktop.core.spec import host_model_path

#: Asked for a folder, starting at the given one; the chosen folder, or None when cancelled.
PickFolder = Callable[[Path], Awaitable[Path | None]]
#: Whether a path exists on this machine (``os.path.exists``; tests pass their own).
Exists = Callable[[str], bool]


def local_engine(docker: DockerConfig) -> bool:
    """Whether the configured engine runs on this machine (the models folder is this one's)."""
    return docker.host is None or docker.host.startswith("unix://")


def model_path_problem(model: str, docker: DockerConfig, exists: Exists) -> str | None:
    """Why the model path ``model`` will not be found, or None when it will (or is not ours to
    check)."""
    host = host_model_path(model, docker.models_dir)
    if host is None or not local_engine(docker) or exists(host):
        return None
    return (
        f"{model} is not in the models folder: {host} does not exist. Choose the model's "
        "folder with Browse…, or download the model there first"
    )


def chosen_model_path(chosen: Path, models_dir: Path) -> str | None:
    """The ``/models/...`` path of a folder chosen on this machine; None when it lies outside
    the models folder (the container could not see it)."""
    for folder, root in ((chosen, models_dir), (_real(chosen), _real(models_dir))):
        try:
            relative = folder.relative_to(root)
        except ValueError:
            continue
        return str(PurePosixPath(MODELS_MOUNT, *relative.parts))
    return None


def outside_message(chosen: Path, models_dir: Path) -> str:
    """Why a folder outside the models folder cannot be the model's."""
    return (
        f"{chosen} is not inside the models folder {models_dir}, the only folder the container "
        "sees (as /models). Move the model there, or change the models folder in Settings"
    )


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))
