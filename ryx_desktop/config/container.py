"""How a model's container looks from outside: names, labels, mounts, vLLM's command line.

Shared by the container spec (``core/spec.py``) and the compose files (``_compose.py``), so a
container ryx-desktop starts and one ``docker compose`` starts from an exported file are alike.
Config is the leaf layer: this module imports nothing from core.
"""

from __future__ import annotations

from ryx_desktop.config._schema import ModelConfig

CONTAINER_PREFIX = "ryx-vllm-"
LABEL_MANAGED = "io.ryx.managed"
LABEL_MODEL = "io.ryx.model"
LABEL_SPEC_HASH = "io.ryx.spec-hash"
CONTAINER_PORT = 8000
MODELS_MOUNT = "/models"
HF_CACHE_MOUNT = "/root/.cache/huggingface"
#: vLLM's own cache (``VLLM_CACHE_ROOT``): the torch.compile / AOT artefacts that let a second
#: start of the same model skip compiling.
VLLM_CACHE_MOUNT = "/root/.cache/vllm"
#: Environment variables passed through from the user's environment when set; never hashed.
PASSTHROUGH_ENV = ("HF_TOKEN",)
#: What a ``devices: none`` model gets unless its ``env`` says otherwise. vLLM picks the CPU
#: platform from ``VLLM_TARGET_DEVICE=cpu`` before probing for accelerators (otherwise only from
#: a ``+cpu`` version string; when that fails it loads GPU kernels and dies with SIGILL). The CPU
#: build sizes its KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB); unset, recent builds reserve
#: ``--gpu-memory-utilization`` of the machine's whole memory and refuse to start when that much
#: is not free, which on a desktop at the default 0.9 it seldom is.
CPU_ENV_DEFAULTS = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "4"}
#: What a ``sleep_mode`` model gets: vLLM serves its sleep routes only in dev mode.
SLEEP_ENV_DEFAULTS = {"VLLM_SERVER_DEV_MODE": "1"}


def container_name(key: str) -> str:
    """The container name of a model: the same one compose uses."""
    return f"{CONTAINER_PREFIX}{key}"


def key_from_container_name(name: str) -> str | None:
    """The model key of a ``ryx-vllm-<key>`` container, else None."""
    name = name.lstrip("/")
    if name.startswith(CONTAINER_PREFIX) and len(name) > len(CONTAINER_PREFIX):
        return name[len(CONTAINER_PREFIX) :]
    return None


def default_env(model: ModelConfig) -> dict[str, str]:
    """The environment ryx-desktop adds to a model's own ``env`` (which wins over it)."""
    env: dict[str, str] = {}
    if model.sleep_mode:
        env.update(SLEEP_ENV_DEFAULTS)
    if model.devices == "none":
        env.update(CPU_ENV_DEFAULTS)
    return env


def vllm_args(model: ModelConfig) -> tuple[str, ...]:
    """The arguments after ``vllm serve`` (the image's entrypoint) for a model.

    The model comes first and positionally: ``vllm serve MODEL``; vLLM deprecates ``--model``.
    """
    args = [model.model]
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
