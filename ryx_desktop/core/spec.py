"""The container a model runs in, as plain data: built from config, hashed, handed to a runtime."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.config.container import (
    CONTAINER_PORT,
    CONTAINER_PREFIX,
    HF_CACHE_MOUNT,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_SPEC_HASH,
    MODELS_MOUNT,
    PASSTHROUGH_ENV,
    VLLM_CACHE_MOUNT,
    container_name,
    default_env,
    key_from_container_name,
    vllm_args,
)

__all__ = [
    "ANY_HOST",
    "CONTAINER_PORT",
    "CONTAINER_PREFIX",
    "HF_CACHE_MOUNT",
    "LABEL_MANAGED",
    "LABEL_MODEL",
    "LABEL_SPEC_HASH",
    "LOCAL_HOST",
    "MODELS_MOUNT",
    "PASSTHROUGH_ENV",
    "VLLM_CACHE_MOUNT",
    "ContainerSpec",
    "Mount",
    "build_spec",
    "container_name",
    "key_from_container_name",
    "vllm_args",
]


#: The host name of the local Docker engine (the ``docker:`` section), as the config's ``host:``.
LOCAL_HOST = "local"
#: ``host: any``: the scheduler picks the host.
ANY_HOST = "any"


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount from the host into the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything a runtime needs to start one model's container."""

    key: str
    name: str
    image: str
    command: tuple[str, ...]
    host_port: int
    devices: Literal["all", "none"] | tuple[int, ...]
    mounts: tuple[Mount, ...]
    env: Mapping[str, str]
    labels: Mapping[str, str]
    host_ip: str = "127.0.0.1"
    container_port: int = CONTAINER_PORT
    ipc_mode: str = "host"
    #: Host path of the weights when the model points into the models mount; checked before start.
    host_model_path: str | None = None
    secret_env: Mapping[str, str] = field(default_factory=dict)
    #: The engine it runs on: ``local`` or a name from the config's ``hosts:`` (``any`` until
    #: the scheduler picks one). Not part of the spec hash: where it runs is not what it runs.
    host: str = LOCAL_HOST

    @property
    def spec_hash(self) -> str:
        return self.labels[LABEL_SPEC_HASH]


def build_spec(
    key: str,
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
) -> ContainerSpec:
    """The container spec for managed model ``key``; ``environ`` supplies pass-through secrets.

    ``host`` is the engine it runs on (default: the model's ``host:``; a ``host: any`` model
    counts as local until the scheduler picks one): a host of ``hosts:`` may set its own models
    folder and image (the model's own ``image:`` still comes first).
    """
    model = config.models[key]
    if not isinstance(model, ModelConfig):
        raise TypeError(f"model {key!r} is external and has no container")
    where = host or model.host
    if where == ANY_HOST:
        where = LOCAL_HOST
    docker = config.docker
    other = config.hosts.get(where) if where != LOCAL_HOST else None
    models_dir = docker.models_dir
    image = model.image or docker.image
    if other is not None:
        models_dir = Path(str(other.models_dir)) if other.models_dir is not None else models_dir
        image = model.image or other.image or docker.image
    mounts = (
        Mount(str(models_dir), MODELS_MOUNT, read_only=True),
        Mount(str(docker.hf_cache), HF_CACHE_MOUNT),
        Mount(str(docker.vllm_cache), VLLM_CACHE_MOUNT),
    )
    env = {**default_env(model), **model.env}
    secret = {k: environ[k] for k in PASSTHROUGH_ENV if environ and environ.get(k)}
    command = vllm_args(model)
    hashed = {
        "image": image,
        "command": command,
        "port": model.port,
        "devices": model.devices,
        "mounts": [asdict(m) for m in mounts],
        "env": sorted(env.items()),
    }
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    labels = {LABEL_MANAGED: "true", LABEL_MODEL: key, LABEL_SPEC_HASH: digest}
    return ContainerSpec(
        key=key,
        name=container_name(key),
        image=image,
        command=command,
        host_port=model.port,
        devices=model.devices,
        mounts=mounts,
        env=env,
        labels=labels,
        host_model_path=host_model_path(model.model, models_dir),
        secret_env=secret,
        host=where,
    )


def host_model_path(model: str, models_dir: Path) -> str | None:
    """Where ``model`` (``/models/...``) lies on the host: under ``models_dir``; None when it
    points elsewhere (a Hugging Face name, or a path the container has of its own)."""
    path = PurePosixPath(model)
    mount = PurePosixPath(MODELS_MOUNT)
    if path.is_absolute() and (path == mount or mount in path.parents):
        return str(models_dir / path.relative_to(mount))
    return None
