"""The typed config: what to run and how. Pydantic v2 models, frozen once loaded."""

from __future__ import annotations

import ipaddress
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
    "start_timeout",
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


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
    max_body_mb: float = Field(32.0, gt=0)
    concurrency_limit: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _key_when_exposed(self) -> ProxyConfig:
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"proxy.host {self.host!r} is not a loopback address, so proxy.api_key is required"
            )
        return self


class DockerConfig(_Strict):
    """Where the engine is and what every model's container shares."""

    host: str | None = None
    image: str = "vllm/vllm-openai:latest"
    models_dir: Path = Path("~/vllm-models")
    hf_cache: Path = Path("~/.cache/huggingface")
    stop_timeout: float = Field(30.0, gt=0)  # SIGTERM, then kill after this many seconds

    @field_validator("models_dir", "hf_cache")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class GpuConfig(_Strict):
    """How models share GPUs."""

    policy: Literal["exclusive", "fractional"] = "exclusive"
    headroom: float = Field(0.05, ge=0, lt=1)


Devices = Literal["all", "none"] | tuple[Annotated[int, Field(ge=0)], ...]


class ModelConfig(_Strict):
    """A model ryx-desktop runs in its own vLLM container."""

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
    start_timeout: float | None = Field(None, gt=0)

    @property
    def external(self) -> bool:
        return False

    @property
    def effective_served_name(self) -> str:
        return self.served_name or self.model

    def display_name(self, key: str) -> str:
        return self.name or key


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
                raise ValueError(
                    "a `url:` model is an external server that is never started, "
                    f"so it cannot also set {', '.join(clash)}"
                )
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value.rstrip("/")


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
    start_timeout: float = Field(900.0, gt=0)
    default_model: str | None = None
    models: dict[str, AnyModelConfig] = Field(default_factory=dict)
