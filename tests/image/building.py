"""Build the operator image from the Dockerfile as users do, with Debian's buildah, and look inside it.

The Dockerfile's default base (python:X.Y.Z-slim) comes from a registry these machines cannot reach, so the
base is made from Debian packages with mmdebstrap (../shared/TESTING.md, "Building and running the operator
image") and passed as the only build argument, ``PYTHON_IMAGE``. The base's root filesystem is cached as a
tarball in ``cache_dir()`` and imported once into the containers storage; the Dockerfile is built every
run, with buildah's layer cache (as ``docker build`` caches), so a rerun that changed only Canaria's code
rebuilds only the package's layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("buildah", "podman", "mmdebstrap")
#: The base: what python:3.11-slim-bookworm provides that the Dockerfile uses (python, venv, pip, CAs).
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "python-is-python3", "ca-certificates")
IMAGE = "localhost/canaria:test"
#: Mounted into the build only (never a layer): this machine's CA bundle and pip settings, so pip inside
#: the build trusts the same package proxy as pip outside it. Absent files are not mounted.
BUILD_MOUNTS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")


def missing_tools() -> str | None:
    """Why the image cannot be built here (one line), or None."""
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return f"no image builder: {', '.join(missing)} not installed (apt-get install {' '.join(TOOLS)})"
    if os.geteuid() != 0:
        return "building the image needs root here (buildah's chroot isolation and mmdebstrap as root)"
    return None


def cache_dir() -> Path:
    """Where the base's root filesystem is kept between runs: $CANARIA_IMAGE_CACHE, else the user cache."""
    configured = os.environ.get("CANARIA_IMAGE_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "canaria" / "image"
    path = Path(configured) if configured else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(*command: str, timeout: float = 600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command[:3])}... exited with {done.returncode}:\n{tail}")
    return done.stdout


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


@dataclass
class Build:
    """What building took: the base (0 when cached), the Dockerfile, and the result's size."""

    base: str
    base_seconds: float
    base_cached: bool
    build_seconds: float
    size_bytes: int
    config: dict[str, Any]  # the image's OCI config: User, Entrypoint, Env...

    def summary(self) -> str:
        base = "cached" if self.base_cached else f"{self.base_seconds:.0f} s"
        return (
            f"image tier: base {self.base} {base}, Dockerfile build {self.build_seconds:.0f} s,"
            f" image {IMAGE} {self.size_bytes / 1e6:.0f} MB"
        )


def base_image() -> tuple[str, float, bool]:
    """The base image's name, the seconds it took to make, and whether it was cached."""
    key = hashlib.sha256(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    name = f"localhost/canaria-base:{BASE_SUITE}-{key}"
    if image_exists(name):
        return name, 0.0, True
    start = time.monotonic()
    tarball = cache_dir() / f"rootfs-{BASE_SUITE}-{key}.tar"
    cached = tarball.is_file()
    if not cached:
        partial = tarball.with_suffix(".partial")
        _run(
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--format=tar",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(partial),
            timeout=900,
        )
        partial.rename(tarball)
    _run("podman", "import", "--quiet", "--change", 'CMD ["python3"]', str(tarball), name)
    return name, time.monotonic() - start, cached


def build() -> Build:
    """Build the Dockerfile at the repository's root as ``IMAGE``, with only ``PYTHON_IMAGE`` passed."""
    base, base_seconds, base_cached = base_image()
    mounts = [f"--volume={path}:{path}:ro" for path in BUILD_MOUNTS if Path(path).is_file()]
    start = time.monotonic()
    _run(
        "buildah",
        "bud",
        "--isolation=chroot",
        "--network=host",
        "--layers",
        *mounts,
        f"--build-arg=PYTHON_IMAGE={base}",
        f"--tag={IMAGE}",
        str(REPO),
        timeout=900,
    )
    seconds = time.monotonic() - start
    (inspected,) = json.loads(_run("podman", "image", "inspect", IMAGE))
    return Build(base, base_seconds, base_cached, seconds, int(inspected["Size"]), inspected["Config"])


@contextlib.contextmanager
def working_container(image: str = IMAGE) -> Iterator[str]:
    """A buildah working container of ``image`` (removed afterwards): run in it, or mount it."""
    container = _run("buildah", "from", "--quiet", "--pull=never", image).strip()
    try:
        yield container
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(image: str = IMAGE) -> Iterator[Path]:
    """The image's root filesystem, read from the host (unmounted and removed afterwards)."""
    with working_container(image) as container:
        root = Path(_run("buildah", "mount", container).strip())
        try:
            yield root
        finally:
            subprocess.run(["buildah", "umount", container], capture_output=True, check=False)
