"""The container a model runs in, as plain data: built from config, hashed, handed to a runtime."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from ryx_desktop.config import Config, ModelConfig

CONTAINER_PREFIX = "ryx-vllm-"
LABEL_MANAGED = "io.ryx.managed"
LABEL_MODEL = "io.ryx.model"
LABEL_SPEC_HASH = "io.ryx.spec-hash"
CONTAINER_PORT = 8000
MODELS_MOUNT = "/models"
HF_CACHE_MOUNT = "/root/.cache/huggingface"
#: Environment variables passed through from the user's environment when set; never hashed.
PASSTHROUGH_ENV = ("HF_TOKEN",)


def container_name(key: str) -> str:
    """The container name of a model: the same one compose uses."""
    return f"{CONTAINER_PREFIX}{key}"


def key_from_container_name(name: str) -> str | None:
    """The model key of a ``ryx-vllm-<key>`` container, else None."""
    name = name.lstrip("/")
    if name.startswith(CONTAINER_PREFIX) and len(name) > len(CONTAINER_PREFIX):
        return name[len(CONTAINER_PREFIX) :]
    return None


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
    #: Host path of the weights when ``--model`` points into the models mount; checked before start.
    host_model_path: str | None = None
    secret_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def spec_hash(self) -> str:
        return self.labels[LABEL_SPEC_HASH]


def vllm_args(model: ModelConfig) -> tuple[str, ...]:
    """vLLM's command line for a model, in the order the compose file uses."""
    args = ["--model", model.model]
    if model.served_name:
        args += ["--served-model-name", model.served_name]
    args += ["--host", "0.0.0.0", "--port", str(CONTAINER_PORT)]
    args += ["--gpu-memory-utilization", _number(model.gpu_memory_utilization)]
    if model.max_model_len is not None:
        args += ["--max-model-len", str(model.max_model_len)]
    if model.sleep_mode:
        args.append("--enable-sleep-mode")
    args += list(model.extra_args)
    return tuple(args)


def _number(value: float) -> str:
    return repr(value)  # shortest text that reads back as the same float


def build_spec(key: str, config: Config, environ: Mapping[str, str] | None = None) -> ContainerSpec:
    """The container spec for managed model ``key``; ``environ`` supplies pass-through secrets."""
    model = config.models[key]
    if not isinstance(model, ModelConfig):
        raise TypeError(f"model {key!r} is external and has no container")
    docker = config.docker
    image = model.image or docker.image
    mounts = (
        Mount(str(docker.models_dir), MODELS_MOUNT, read_only=True),
        Mount(str(docker.hf_cache), HF_CACHE_MOUNT),
    )
    env = dict(model.env)
    if model.sleep_mode:
        env.setdefault("VLLM_SERVER_DEV_MODE", "1")
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
        host_model_path=_host_model_path(model.model, docker.models_dir),
        secret_env=secret,
    )


def _host_model_path(model: str, models_dir: Path) -> str | None:
    path = PurePosixPath(model)
    mount = PurePosixPath(MODELS_MOUNT)
    if path.is_absolute() and (path == mount or mount in path.parents):
        return str(models_dir / path.relative_to(mount))
    return None
