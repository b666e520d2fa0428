"""The typed config: what to run and how. Pydantic v2 models, frozen once loaded."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from ryx_desktop.config._api_key import api_key_problem
from ryx_desktop.config._hosts import LOCAL, HostRef, Hosts, host_problems
from ryx_desktop.config._paths import default_vllm_cache
from ryx_desktop.config._problems import ConfigProblems as ConfigProblems  # re-exported
from ryx_desktop.config._problems import Loc as Loc
from ryx_desktop.config._problems import Problem as Problem
from ryx_desktop.config._problems import dotted as dotted

#: Fields that only make sense for a model ryx-desktop starts in a container.
CONTAINER_FIELDS = (
    "model",
    "port",
    "image",
    "gpu_memory_utilization",
    "max_model_len",
    "devices",
    "extra_args",
    "env",
    "sleep_mode",
    "idle_ttl",
    "sleep_ttl",
    "wake_timeout",
    "start_timeout",
    "first_answer_check",
    "host",
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: A model key becomes the container name ``ryx-vllm-<key>``, so it follows Docker's name rules.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: GPU selection belongs in ``devices``; setting these in ``env`` would fight it.
GPU_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")

#: vLLM flags built from settings (see core/spec.py ``vllm_args``); extra_args may not repeat them.
OWN_FLAGS = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--host": None,
    "--port": "port",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--enable-sleep-mode": "sleep_mode",
}


def _stringify_scalars(value: Any) -> Any:
    """YAML reads ``2`` and ``0.5`` as numbers; command-line args and env values are text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ProxyConfig(_Strict):
    """The local OpenAI-compatible proxy."""

    host: str = "127.0.0.1"
    port: int = Field(8420, ge=1, le=65535)
    api_key: str | None = None  # "env:NAME" reads it from the environment
    allowed_origins: tuple[str, ...] = ()
    auto_start: bool = True
    fallback_unknown: bool = True
    start_timeout: float = Field(900.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)
    body_timeout: float = Field(60.0, gt=0)  # a body not in whole by then: 408
    #: A model whose start failed this recently is not started again by a request: the
    #: request gets the failure at once (clients retry a 503; each retry was another load).
    start_cooldown: float = Field(30.0, ge=0)
    max_body_mb: float = Field(32.0, gt=0)
    concurrency_limit: int = Field(256, ge=1)
    # How a stream waiting for its model's start (or wake) hears of it: SSE comment lines,
    # reasoning_content deltas that chat UIs show (chat completions only), or nothing.
    loading_messages: Literal["comment", "reasoning", "off"] = "comment"

    @field_validator("loading_messages", mode="before")
    @classmethod
    def _bare_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: str | None) -> str | None:
        problem = None if value is None else api_key_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _key_when_exposed(self) -> ProxyConfig:
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigProblems(
                [
                    Problem(
                        ("host",),
                        f"{self.host!r} is not a loopback address, so proxy.api_key is required "
                        "(anyone who can reach this machine could use your models)",
                    )
                ]
            )
        return self


class DockerConfig(_Strict):
    """Where the engine is and what every model's container shares.

    Every container mounts ``models_dir`` read-only at ``/models``, ``hf_cache`` at
    ``/root/.cache/huggingface`` and ``vllm_cache`` at ``/root/.cache/vllm``: vLLM's
    torch.compile / AOT cache, kept across starts so that a model's second start skips
    compiling. Both caches are created when missing (on a local engine).
    """

    host: str | None = None
    image: str = "vllm/vllm-openai:latest"
    models_dir: Path = Path("~/vllm-models")
    hf_cache: Path = Path("~/.cache/huggingface")
    vllm_cache: Path = Field(default_factory=default_vllm_cache)
    stop_timeout: float = Field(30.0, gt=0)  # SIGTERM, then kill after this many seconds

    @field_validator("models_dir", "hf_cache", "vllm_cache")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class GpuConfig(_Strict):
    """How models share GPUs."""

    policy: Literal["exclusive", "fractional"] = "exclusive"
    headroom: float = Field(0.05, ge=0, lt=1)


Devices = Literal["all", "none"] | tuple[Annotated[int, Field(ge=0)], ...]


class ModelConfig(_Strict):
    """A model ryx-desktop runs in its own vLLM container (``vllm serve MODEL ...``).

    ``devices: none`` runs it without a GPU, on the CPU build of vLLM (an image such as
    ``vllm-cpu``'s). Such a model's container gets ``VLLM_TARGET_DEVICE=cpu`` (vLLM then picks
    its CPU platform whatever its version string says) and ``VLLM_CPU_KVCACHE_SPACE=4`` (GiB of
    KV cache: unset, recent CPU builds reserve ``gpu_memory_utilization`` of all the machine's
    memory and refuse to start when that much is not free) unless ``env`` sets them. The CPU build
    also needs ``ipc: host`` (always given) and a C++ compiler in the image for torch.compile, or
    ``--enforce-eager`` in ``extra_args``; the compile cache (``docker.vllm_cache``) makes
    compiling cheap after the first start. The CPU build has no sleep mode.
    """

    name: str | None = None
    model: str
    served_name: str | None = None
    aliases: tuple[str, ...] = ()
    category: str = "general"
    size: str = "medium"
    port: int = Field(ge=1, le=65535)
    image: str | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=1)
    devices: Devices = "all"
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    sleep_mode: bool = False
    idle_ttl: float | None = Field(None, gt=0)
    sleep_ttl: float | None = Field(None, gt=0)  # asleep this long (s): stopped
    wake_timeout: float | None = Field(None, gt=0)  # a wake slower than this restarts it
    start_timeout: float | None = Field(None, gt=0)
    first_answer_check: bool | None = None  # None: the top-level first_answer_check
    host: HostRef = LOCAL  # a name from hosts:, or "any" (the scheduler picks)

    @property
    def external(self) -> bool:
        return False

    @property
    def effective_served_name(self) -> str:
        return self.served_name or self.model

    def display_name(self, key: str) -> str:
        return self.name or key

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        if value in ("all", "none"):
            return value
        if isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            seen: set[int] = set()
            for index in value:
                if index in seen:
                    raise ValueError(f"GPU {index} is listed twice in devices")
                seen.add(index)
            return tuple(value)
        raise ValueError(
            f"devices must be all, none or a list of GPU indexes like [0, 1], got {value!r}"
        )

    @field_validator("aliases", mode="before")
    @classmethod
    def _one_alias(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_as_text(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        args = tuple(_stringify_scalars(v) for v in value)
        for index, arg in enumerate(args):
            if not isinstance(arg, str):
                continue
            flag = arg.partition("=")[0].replace("_", "-")
            if flag in OWN_FLAGS:
                setting = OWN_FLAGS[flag]
                instead = f"use the `{setting}:` setting" if setting else "it is always 0.0.0.0"
                raise ConfigProblems(
                    [
                        Problem(
                            (index,),
                            f"{flag} cannot be an extra arg: ryx-desktop sets it ({instead})",
                        )
                    ]
                )
        return args

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in GPU_ENV_NAMES:
                if name in value:
                    raise ConfigProblems(
                        [
                            Problem(
                                (name,),
                                f"set the GPUs with `devices:` instead of {name} in env",
                                at_key=True,
                            )
                        ]
                    )
            return {k: _stringify_scalars(v) for k, v in value.items()}
        return value


class ExternalModelConfig(_Strict):
    """An OpenAI-compatible server that already runs somewhere: proxied, never started."""

    name: str | None = None
    url: str
    served_name: str | None = None
    aliases: tuple[str, ...] = ()
    category: str = "general"
    size: str = "medium"

    @property
    def external(self) -> bool:
        return True

    @property
    def effective_served_name(self) -> str:
        return self.served_name or self.name or self.url

    def display_name(self, key: str) -> str:
        return self.name or key

    @model_validator(mode="before")
    @classmethod
    def _no_container_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            clash = [f for f in CONTAINER_FIELDS if f in data]
            if clash:
                raise ConfigProblems(
                    [
                        Problem(
                            (clash[0],),
                            "a `url:` model is an external server that is never started, "
                            f"so it cannot also set {', '.join(clash)}",
                            at_key=True,
                        )
                    ]
                )
        return data

    @field_validator("aliases", mode="before")
    @classmethod
    def _one_alias(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        # The server's root: an OpenAI-style base URL (`.../v1`) is accepted and means the same
        # server, since the proxy and the probes add `/v1/...` and `/health` themselves.
        value = value.rstrip("/")
        return value.removesuffix("/v1").rstrip("/") if value.endswith("/v1") else value


def _model_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "external" if "url" in value else "managed"
    return "external" if isinstance(value, ExternalModelConfig) else "managed"


AnyModelConfig = Annotated[
    Annotated[ModelConfig, Tag("managed")] | Annotated[ExternalModelConfig, Tag("external")],
    Discriminator(_model_kind),
]


class Config(_Strict):
    """The whole config file."""

    proxy: ProxyConfig = ProxyConfig()
    docker: DockerConfig = DockerConfig()
    gpu: GpuConfig = GpuConfig()
    idle_ttl: float | None = Field(None, gt=0)
    #: A sleep-mode model idle for ``idle_ttl`` sleeps; asleep for ``sleep_ttl`` it is stopped.
    sleep_ttl: float | None = Field(None, gt=0)
    #: A wake that takes longer (or fails) falls back to stopping and starting the model.
    wake_timeout: float = Field(60.0, gt=0)
    start_timeout: float = Field(900.0, gt=0)
    #: Before a model counts as ready it must answer one 1-token completion (vLLM's /health is
    #: 200 before any forward pass ran); a model that cannot is failed with vLLM's reason.
    first_answer_check: bool = True
    hosts: Hosts = Field(default_factory=dict)  # more Docker engines, by name
    default_model: str | None = None
    models: dict[str, AnyModelConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = consistency_problems(
            self.models,
            ports=self.models,
            names=self.models,
            proxy_port=self.proxy.port,
            default_model=self.default_model,
        )
        problems += host_problems(self.hosts, self.models)
        if problems:
            raise ConfigProblems(problems)
        return self


AnyModel = ModelConfig | ExternalModelConfig


def consistency_problems(
    keys: Iterable[str],
    *,
    ports: Mapping[str, AnyModel],
    names: Mapping[str, AnyModel],
    proxy_port: int | None,
    default_model: str | None,
    unchecked_names: Collection[str] = (),
) -> list[Problem]:
    """What is wrong across models: keys, ports, names, the default model.

    ``keys`` are every model's key. ``ports`` are the models whose port is checked and
    ``names`` those whose served name and aliases are: every model of a valid config (a broken
    file checks what validated). ``proxy_port`` None leaves out the clash with the proxy;
    ``unchecked_names`` are names a broken entry may carry, which ``default_model`` may mean.
    """
    keys = list(keys)
    problems = [*_check_keys(keys), *_check_ports(ports, proxy_port)]
    problems += _check_names(keys, names)
    problems += _check_default(default_model, keys, names, unchecked_names)
    return problems


def _check_keys(keys: Iterable[str]) -> list[Problem]:
    return [
        Problem(
            ("models", key),
            f"model key {key!r} must start with a letter or digit and contain only "
            "letters, digits, '-', '_' and '.' (it becomes the container name)",
            at_key=True,
        )
        for key in keys
        if not KEY_PATTERN.fullmatch(key)
    ]


def _check_ports(models: Mapping[str, AnyModel], proxy_port: int | None) -> list[Problem]:
    problems = []
    owners: dict[int, str] = {}
    for key, model in models.items():
        if not isinstance(model, ModelConfig):
            continue
        loc = ("models", key, "port")
        if model.port == proxy_port:
            problems.append(Problem(loc, f"port {model.port} is already used by the proxy"))
        elif model.port in owners:
            problems.append(
                Problem(loc, f"port {model.port} is already used by model {owners[model.port]!r}")
            )
        else:
            owners[model.port] = key
    return problems


def _served_name_field(model: ModelConfig | ExternalModelConfig) -> str:
    """The field the effective served name comes from, for pointing at it."""
    if model.served_name:
        return "served_name"
    if isinstance(model, ModelConfig):
        return "model"
    return "name" if model.name else "url"


def _check_names(keys: Iterable[str], models: Mapping[str, AnyModel]) -> list[Problem]:
    """Keys, served names and aliases route requests, so each must lead to one model."""
    problems = []
    owners: dict[str, tuple[str, str]] = {key: (key, "key") for key in keys}
    for key, model in models.items():
        names: list[tuple[Loc, str, str]] = [
            (
                ("models", key, _served_name_field(model)),
                model.effective_served_name,
                "served name",
            )
        ]
        names += [
            (("models", key, "aliases", i), alias, "alias") for i, alias in enumerate(model.aliases)
        ]
        for loc, name, what in names:
            owner, owner_what = owners.setdefault(name, (key, what))
            if owner == key:
                continue
            detail = "the key of" if owner_what == "key" else f"already the {owner_what} of"
            hint = " (set served_name to tell them apart)" if loc[-1] == "model" else ""
            problems.append(Problem(loc, f"{what} {name!r} is {detail} model {owner!r}{hint}"))
    return problems


def _check_default(
    wanted: str | None,
    keys: Collection[str],
    models: Mapping[str, AnyModel],
    unchecked_names: Collection[str],
) -> list[Problem]:
    if wanted is None or wanted in keys or wanted in unchecked_names:
        return []
    for model in models.values():
        if wanted == model.effective_served_name or wanted in model.aliases:
            return []
    known = ", ".join(keys) or "none are configured"
    return [
        Problem(
            ("default_model",),
            f"{wanted!r} is not the key, served name or alias of any model (models: {known})",
        )
    ]
