"""Errors a user can meet, each with one clear sentence and a hint to fix it.

Adapters convert library exceptions (docker, httpx, OS errors) into these once, at the edge;
the CLI and the GUI show ``message`` and ``hint`` and never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

# The base and the config's error live in the leaf layer, so that config raises them without
# importing core; they are re-exported here beside the rest of the family.
from ryx_desktop.config._errors import ConfigError as ConfigError
from ryx_desktop.config._errors import RyxError as RyxError


class UnknownModelError(RyxError):
    """A key, served name or alias that no configured model has."""

    hint = "Run `ryx-desktop status` to list the configured models."


class DockerUnavailableError(RyxError):
    """No Docker engine answers at the configured address."""

    hint = "Start Docker (`sudo systemctl start docker`) or set docker.host / DOCKER_HOST."


class DockerPermissionError(RyxError):
    """The Docker socket exists but this user may not use it."""

    hint = "Add yourself to the docker group (`sudo usermod -aG docker $USER`), then log in again."


class ImageMissingError(RyxError):
    """The image is not present locally and could not be pulled."""

    hint = "Check the image name and your network, or load it with `docker load` / `docker pull`."


class PortInUseError(RyxError):
    """The model's host port is taken by another container or program."""

    hint = "Stop whatever holds the port, or give the model another `port:` in the config."


class NoGpuRuntimeError(RyxError):
    """Docker cannot hand a GPU to containers (no NVIDIA container toolkit)."""

    hint = (
        "Install the NVIDIA container toolkit and restart Docker, "
        "or set `devices: none` for this model."
    )


class ModelPathMissingError(RyxError):
    """The model's weights are not where the config says."""

    hint = "Download the model into the models directory, or fix `model:` / `docker.models_dir`."


def logs_hint(key: str) -> str:
    """Where the whole log of model ``key`` is: what a hint about its log says.

    A hint never points at lines "above": a notification shows none, and the window shows the
    hint before them. Where log lines are shown, they come under their own heading.
    """
    return f"`ryx-desktop logs {key}` shows the whole log."


class ContainerExitedError(RyxError):
    """The container stopped while the model was loading or serving."""

    hint = "Its log tells why: run `ryx-desktop logs` with the model's key to read it whole."

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        exit_code: int | None = None,
        log_tail: Sequence[str] = (),
        evidence: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
        self.log_tail = tuple(log_tail)
        #: The log line the reason was read from (it may be far above the tail), if any.
        self.evidence = evidence


class OutOfMemoryError(ContainerExitedError):
    """The model ran out of memory: killed for it (OOMKilled), or vLLM found too little
    (CUDA out of memory, no room for the KV cache, GPU memory held by another process)."""

    hint = "Lower `gpu_memory_utilization` or `max_model_len`, or stop other models first."


class StartTimeoutError(ContainerExitedError):
    """The model did not become ready within its start timeout."""

    hint = "Raise `start_timeout` for big models, or read the log for where loading stalls."


class StartCancelledError(RyxError):
    """A start was called off before the model was ready (stopped, or evicted for another)."""

    hint = "Start it again; with gpu.policy exclusive, starting another model stops this one."


class BudgetExceededError(RyxError):
    """Fractional policy: the model does not fit the GPU budget and nothing can be evicted."""

    hint = "Stop a busy model, lower `gpu_memory_utilization`, or use `gpu.policy: exclusive`."


class DockerError(RyxError):
    """Any other error the Docker engine reported."""

    hint = "Run `docker info` to check the engine; the message above is Docker's own."


class UnreachableError(RyxError):
    """An external (``url:``) model's server does not answer."""

    hint = "Start that server, or fix the model's `url:` in the config."


class SleepNotSupportedError(RyxError):
    """The model's server has no sleep-mode routes (``/sleep``, ``/wake_up``, ...): they are 404."""

    hint = (
        "Set `sleep_mode: true` for the model so it runs with `--enable-sleep-mode` and "
        "`VLLM_SERVER_DEV_MODE=1`; a vLLM older than the sleep routes cannot sleep at all."
    )

    def __init__(self, message: str, hint: str | None = None, *, route: str = "") -> None:
        super().__init__(message, hint)
        #: The request that answered 404, e.g. ``POST /sleep?level=1``.
        self.route = route


class SleepFailedError(RyxError):
    """A sleep or wake step got an error answer from vLLM, or no answer at all."""

    hint = (
        "After a failed wake the model is restarted instead; its log (`ryx-desktop logs` and "
        "the model's key) shows vLLM's side."
    )

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        step: str = "",
        status: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message, hint)
        #: The request that failed, e.g. ``POST /wake_up?tags=weights``.
        self.step = step
        #: Its HTTP status; None when no answer came.
        self.status = status
        #: vLLM's own error message, or why no answer came.
        self.detail = detail


class HostUnreachableError(RyxError):
    """A remote host cannot be reached over SSH (refused, timed out, its key or ours refused),
    or the SSH tunnel to it dropped and is not back."""

    hint = (
        "Check that the host is up and that `ssh` to it works without a prompt "
        "(its key in known_hosts, our key in its authorized_keys)."
    )

    def __init__(self, message: str, hint: str | None = None, *, host: str = "") -> None:
        super().__init__(message, hint)
        #: The host as the config names it (``user@host:port``), for grouping and messages.
        self.host = host
