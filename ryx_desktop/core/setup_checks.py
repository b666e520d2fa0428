"""The first-run checklist: what a model needs on this machine, each with a one-line fix.

Pure: ``adapters/setup_probe.py`` gathers the facts (Docker, ``docker info``, NVML, the image,
the models folder) into a ``SetupFacts``; ``run_checks`` turns them into an ordered list of
``CheckResult`` lines, green or red, each red one with what to do about it. A config whose
models all run on the CPU (``devices: none``) does not need the NVIDIA runtime or a GPU: those
lines say "not needed" and stay green.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ryx_desktop.config import Config, ModelConfig
from ryx_desktop.core.model_estimate import GIB

DOCKER = "Docker engine"
RUNTIME = "NVIDIA container runtime"
GPUS = "GPUs"
IMAGE = "vLLM image"
MODELS = "Models folder"

TOOLKIT_URL = (
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
)
DOCKER_INSTALL_URL = "https://docs.docker.com/engine/install/"
FIX_PERMISSION = (
    "Add yourself to the docker group: sudo usermod -aG docker $USER, then log in again."
)
FIX_START_DOCKER = "Start Docker: sudo systemctl start docker (or set the Docker host in Settings)."
FIX_INSTALL_DOCKER = (
    f"Install Docker Engine ({DOCKER_INSTALL_URL}), then start it: sudo systemctl start docker."
)
FIX_TOOLKIT = (
    f"Install the NVIDIA Container Toolkit: {TOOLKIT_URL}, then run "
    "sudo nvidia-ctk runtime configure --runtime=docker and restart Docker."
)
FIX_DRIVER = "Install the NVIDIA driver and check that nvidia-smi lists your GPU."
FIX_DOCKER_FIRST = "Fix the Docker engine line first."
NOT_NEEDED = "not needed: every model runs on the CPU (devices: none)"
NVIDIA_CDI_PREFIX = "nvidia.com/gpu"


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What ``docker info`` tells about the engine."""

    version: str = ""
    runtimes: tuple[str, ...] = ()  # "runc", "nvidia", ...
    cdi_devices: tuple[str, ...] = ()  # CDI device names, e.g. "nvidia.com/gpu=0"


@dataclass(frozen=True, slots=True)
class GpuFact:
    """One GPU NVML found."""

    name: str
    total_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ImageFact:
    """An image the models run from, and whether it is on this machine (None: cannot tell)."""

    name: str
    present: bool | None = None


@dataclass(frozen=True, slots=True)
class SetupFacts:
    """Everything the checklist looks at, gathered at one moment."""

    docker_address: str
    docker_ok: bool
    docker_error: str = ""  # why the engine does not answer
    docker_permission_denied: bool = False  # the socket is there but this user may not use it
    docker_missing: bool = False  # no socket file at all: Docker is probably not installed
    engine: EngineInfo | None = None
    gpus: tuple[GpuFact, ...] = ()
    gpu_error: str = ""  # NVML's reason when no GPU was read
    gpu_hint: str = ""
    images: tuple[ImageFact, ...] = ()
    models_dir: Path = Path()
    models_dir_exists: bool = False
    models_dir_readable: bool = False
    model_count: int | None = None  # model directories found there; None: not looked
    needs_gpu: bool = True

    @property
    def missing_images(self) -> tuple[str, ...]:
        """Images known to be absent (what Pull downloads)."""
        return tuple(i.name for i in self.images if i.present is False)

    @property
    def gpu_total_bytes(self) -> int | None:
        """The first GPU's memory (vLLM uses one GPU unless told otherwise); None: unknown."""
        return self.gpus[0].total_bytes if self.gpus else None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the checklist: green (``ok``) or red with a one-line ``fix``."""

    name: str
    ok: bool
    text: str
    fix: str = ""


def needs_gpu(config: Config) -> bool:
    """False when every managed model runs on the CPU; True otherwise (and with none yet)."""
    managed = [m for m in config.models.values() if isinstance(m, ModelConfig)]
    return not managed or any(m.devices != "none" for m in managed)


def images_of(config: Config) -> tuple[str, ...]:
    """The images the managed models run from (the Docker settings' image when there are none)."""
    names = [
        m.image or config.docker.image for m in config.models.values() if isinstance(m, ModelConfig)
    ]
    return tuple(dict.fromkeys(names)) or (config.docker.image,)


def run_checks(facts: SetupFacts) -> list[CheckResult]:
    """The checklist, in the order a user fixes things: Docker, runtime, GPUs, image, models."""
    return [
        _docker(facts),
        _runtime(facts),
        _gpus(facts),
        *(_image(facts, image) for image in facts.images),
        _models(facts),
    ]


def _docker(facts: SetupFacts) -> CheckResult:
    if facts.docker_ok:
        version = (
            f" (version {facts.engine.version})" if facts.engine and facts.engine.version else ""
        )
        return CheckResult(DOCKER, True, f"answers at {facts.docker_address}{version}")
    if facts.docker_permission_denied:
        text = f"permission denied on the Docker socket at {facts.docker_address}"
        return CheckResult(DOCKER, False, text, FIX_PERMISSION)
    text = facts.docker_error or f"no Docker engine answers at {facts.docker_address}"
    return CheckResult(
        DOCKER, False, text, FIX_INSTALL_DOCKER if facts.docker_missing else FIX_START_DOCKER
    )


def _runtime(facts: SetupFacts) -> CheckResult:
    if not facts.needs_gpu:
        return CheckResult(RUNTIME, True, NOT_NEEDED)
    if not facts.docker_ok or facts.engine is None:
        return CheckResult(RUNTIME, False, "cannot tell: Docker does not answer", FIX_DOCKER_FIRST)
    engine = facts.engine
    if "nvidia" in engine.runtimes:
        return CheckResult(RUNTIME, True, "the nvidia runtime is registered with Docker")
    cdi = [d for d in engine.cdi_devices if d.startswith(NVIDIA_CDI_PREFIX)]
    if cdi:
        return CheckResult(RUNTIME, True, f"NVIDIA CDI devices: {', '.join(cdi)}")
    have = ", ".join(engine.runtimes) or "none"
    return CheckResult(
        RUNTIME, False, f"Docker has no NVIDIA runtime (runtimes: {have})", FIX_TOOLKIT
    )


def _gpus(facts: SetupFacts) -> CheckResult:
    if not facts.needs_gpu:
        return CheckResult(GPUS, True, NOT_NEEDED)
    if not facts.gpus:
        return CheckResult(
            GPUS, False, facts.gpu_error or "No NVIDIA GPU found", facts.gpu_hint or FIX_DRIVER
        )
    listed = ", ".join(_gpu_text(g) for g in facts.gpus)
    count = len(facts.gpus)
    return CheckResult(GPUS, True, f"{count} GPU{'s' if count > 1 else ''}: {listed}")


def _gpu_text(gpu: GpuFact) -> str:
    if gpu.total_bytes is None:
        return gpu.name
    return f"{gpu.name} ({gpu.total_bytes / GIB:.0f} GiB)"


def _image(facts: SetupFacts, image: ImageFact) -> CheckResult:
    name = IMAGE if len(facts.images) == 1 else f"{IMAGE} {image.name}"
    if image.present:
        return CheckResult(name, True, f"{image.name} is on this machine")
    if image.present is None or not facts.docker_ok:
        return CheckResult(name, False, "cannot tell: Docker does not answer", FIX_DOCKER_FIRST)
    return CheckResult(
        name,
        False,
        f"{image.name} is not on this machine",
        f"Press Pull to download {image.name} (several GB).",
    )


def _models(facts: SetupFacts) -> CheckResult:
    folder = facts.models_dir
    if not facts.models_dir_exists:
        return CheckResult(
            MODELS,
            False,
            f"{folder} does not exist",
            f"Create it: mkdir -p {folder}, or choose the folder with your models with Browse.",
        )
    if not facts.models_dir_readable:
        return CheckResult(
            MODELS,
            False,
            f"{folder} cannot be read by this user",
            f"Fix its permissions: chmod u+rx {folder}, or choose another folder with Browse.",
        )
    if facts.model_count == 0:
        return CheckResult(
            MODELS,
            False,
            f"{folder} holds no model directory (a config.json plus weights)",
            "Download a model into it, e.g. huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct "
            f"--local-dir {folder}/Qwen2.5-1.5B-Instruct, or choose another folder with Browse.",
        )
    if facts.model_count is None:
        return CheckResult(MODELS, True, f"{folder} is there")
    count = facts.model_count
    plural = "directories" if count != 1 else "directory"
    return CheckResult(MODELS, True, f"{folder} holds {count} model {plural}")
