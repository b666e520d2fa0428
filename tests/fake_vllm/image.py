"""Build the fake vLLM image ``ryx-test/fake-vllm`` without a registry.

No registry is reachable from CI, so the image is assembled from the host itself: a root filesystem
tarball holding the host's Debian ``/usr/bin/python3`` with the shared libraries it links, its
standard library, and the stdlib-only fake server (``server.py``), imported with ``docker import``.

The container's entrypoint is the fake server, so a container's command is just vLLM's flags,
exactly as with ``vllm/vllm-openai``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPOSITORY = "ryx-test/fake-vllm"
HERE = Path(__file__).resolve().parent
SERVER = HERE / "server.py"

PYTHON = "/usr/bin/python3"
STDLIB = "/usr/lib/python3.11"
# Parts of the standard library the fake server never needs.
STDLIB_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "__pycache__",
        "pydoc_data",
        "venv",
        "distutils",
        "sqlite3",
        "curses",
        "dbm",
        "sitecustomize.py",  # Debian's points into /etc, outside the image
        "EXTERNALLY-MANAGED",
    }
)
STDLIB_SKIP_PREFIXES = ("config-3.", "_test", "xxlimited", "_ctypes_test", "_xxtestfuzz")

CHANGES = [
    'ENTRYPOINT ["/usr/bin/python3", "/app/server.py"]',
    "ENV PYTHONUNBUFFERED=1 LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
    "EXPOSE 8000",
]


def content_hash() -> str:
    """12 hex digits naming this exact server and builder."""
    digest = hashlib.sha256()
    for path in (SERVER, Path(__file__).resolve()):
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def image_tag() -> str:
    return f"{REPOSITORY}:{content_hash()}"


def ensure_fake_image(client: Any) -> str:
    """Return ``ryx-test/fake-vllm:<hash>``, building it first when the engine lacks it.

    ``client`` is a ``docker.DockerClient``. The image is also tagged ``ryx-test/fake-vllm:latest``.
    Safe to call from several processes at once: builders take a host-wide file lock, and each
    imports under a unique temporary tag before tagging the result.
    """
    tag = content_hash()
    ref = f"{REPOSITORY}:{tag}"
    found = _image_id(client, ref)
    if found is None:
        with _build_lock():
            found = _image_id(client, ref)  # another builder may have finished meanwhile
            if found is None:
                found = _build(client, tag)
    if _image_id(client, f"{REPOSITORY}:latest") != found:
        client.api.tag(found, REPOSITORY, "latest")
        _remove_stale_tags(client, keep=found)
    return ref


def _remove_stale_tags(client: Any, keep: str) -> None:
    """Best effort: untag images of older server versions that no container uses."""
    for image in client.api.images(name=REPOSITORY):
        if image["Id"] == keep:
            continue
        for ref in image.get("RepoTags") or ():
            if ref.split(":", 1)[1].startswith("building-"):
                continue  # another builder's work in progress
            with contextlib.suppress(Exception):
                client.api.remove_image(ref)


def _image_id(client: Any, ref: str) -> str | None:
    import docker.errors

    try:
        return str(client.api.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        return None


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"ryx-fake-vllm-build-{os.getuid()}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(client: Any, tag: str) -> str:
    temp_tag = f"building-{tag}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="ryx-fake-vllm-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        build_rootfs(tar_path)
        result = client.api.import_image(
            src=tar_path, repository=REPOSITORY, tag=temp_tag, changes=CHANGES
        )
    image_id = _imported_id(result) or _image_id(client, f"{REPOSITORY}:{temp_tag}")
    if image_id is None:
        raise RuntimeError(f"docker import of the fake vLLM image gave no image: {result!r}")
    client.api.tag(image_id, REPOSITORY, tag)
    with contextlib.suppress(Exception):
        client.api.remove_image(f"{REPOSITORY}:{temp_tag}")  # only untags: `tag` still names it
    return image_id


def _imported_id(result: Any) -> str | None:
    """The image id from ``/images/create``'s answer (one or more JSON lines)."""
    text = result if isinstance(result, str) else json.dumps(result)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            status = json.loads(line)
        except ValueError:
            continue
        if isinstance(status, dict) and "error" in status:
            raise RuntimeError(f"docker import failed: {status['error']}")
        value = status.get("status") if isinstance(status, dict) else None
        if isinstance(value, str) and value.startswith("sha256:"):
            return value
    return None


# --------------------------------------------------------------------------- root filesystem


def shared_libraries(binary: str) -> list[str]:
    """Paths of the libraries (and the dynamic loader) ``ldd`` lists for ``binary``."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match.group(1))
    return paths


class _RootFs:
    """Writes a root filesystem into a tar file, creating parent directories as it goes."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.seen: set[str] = set()
        self.mtime = int(time.time())
        # Host top-level symlinks such as /lib -> usr/lib (Debian's merged /usr).
        self.top_links: dict[str, str] = {}
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = f"/{name}"
            if os.path.islink(host):
                self.top_links[name] = os.readlink(host).lstrip("/")

    def canonical(self, path: str) -> str:
        """``path`` inside the image with its directories resolved (files keep their names)."""
        parent = os.path.realpath(os.path.dirname(path))
        return os.path.join(parent, os.path.basename(path)).lstrip("/")

    def directory(self, arcname: str, mode: int = 0o755) -> None:
        arcname = arcname.strip("/")
        if not arcname or arcname in self.seen:
            return
        self.directory(os.path.dirname(arcname))
        info = tarfile.TarInfo(arcname)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = self.mtime
        self.tar.addfile(info)
        self.seen.add(arcname)

    def symlink(self, arcname: str, target: str) -> None:
        arcname = arcname.strip("/")
        if arcname in self.seen:
            return
        self.directory(os.path.dirname(arcname))
        info = tarfile.TarInfo(arcname)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        info.mtime = self.mtime
        self.tar.addfile(info)
        self.seen.add(arcname)

    def file(self, host_path: str, arcname: str | None = None) -> None:
        """Add ``host_path`` as a regular file (symlinks followed) at ``arcname``."""
        arcname = (arcname or self.canonical(host_path)).strip("/")
        if arcname in self.seen:
            return
        self.directory(os.path.dirname(arcname))
        real = os.path.realpath(host_path)
        st = os.stat(real)
        info = tarfile.TarInfo(arcname)
        info.size = st.st_size
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)  # keeps .pyc timestamp checks meaningful
        with open(real, "rb") as handle:
            self.tar.addfile(info, handle)
        self.seen.add(arcname)

    def data(self, arcname: str, payload: bytes, mode: int = 0o644) -> None:
        arcname = arcname.strip("/")
        self.directory(os.path.dirname(arcname))
        info = tarfile.TarInfo(arcname)
        info.size = len(payload)
        info.mode = mode
        info.mtime = self.mtime
        self.tar.addfile(info, io.BytesIO(payload))
        self.seen.add(arcname)


def _skip_stdlib(name: str) -> bool:
    return name in STDLIB_SKIP or name.startswith(STDLIB_SKIP_PREFIXES)


def build_rootfs(tar_path: str) -> None:
    """Write the fake image's root filesystem to ``tar_path``."""
    python_real = os.path.realpath(PYTHON)
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        fs = _RootFs(tar)
        for name, target in fs.top_links.items():
            fs.symlink(name, target)
        fs.directory("tmp", mode=0o1777)
        fs.directory("app")
        fs.directory("etc")
        fs.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        fs.data("etc/group", b"root:x:0:\n")
        fs.directory("root", mode=0o700)
        # The interpreter: the real file and the `python3` link to it.
        fs.file(python_real)
        fs.symlink(fs.canonical(PYTHON), os.path.basename(python_real))
        for lib in shared_libraries(python_real):
            fs.file(lib)
        # The standard library, without what the fake server never imports.
        for root, dirs, files in os.walk(STDLIB):
            dirs[:] = sorted(d for d in dirs if not _skip_stdlib(d))
            fs.directory(root.lstrip("/"))
            for name in sorted(files):
                if _skip_stdlib(name):
                    continue
                path = os.path.join(root, name)
                if os.path.islink(path) and not os.path.exists(path):
                    continue
                fs.file(path, path.lstrip("/"))
        fs.file(str(SERVER), "app/server.py")


def main() -> None:  # pragma: no cover - a manual helper
    import docker

    started = time.monotonic()
    tag = ensure_fake_image(docker.from_env())
    print(f"{tag} ready in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":  # pragma: no cover
    main()
