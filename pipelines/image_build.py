"""Build the component image without a Docker engine: podman/buildah from Debian.

The same Dockerfile users build with Docker or Cloud Build; here its base image is made locally
(``debootstrap --variant=minbase`` + ``podman import``) because no registry can be reached.
Podman runs with a configuration of ours (``CONTAINERS_CONF``): cgroupfs, the runc runtime
where available, and the host's own ulimits (a sandbox without CAP_SYS_RESOURCE cannot raise
them, which podman's defaults try to do).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError

BASE_TAG = "localhost/kfp-serve-base:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@functools.cache
def containers_conf() -> Path:
    """A containers.conf for this machine, written once per process into a private folder
    (``mkdtemp``: mode 0700, a name nobody can predict, so no symlink planted in /tmp is
    followed); removed when the process exits."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="kfp-serve-podman-conf-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "containers.conf"
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)

    def lowered(value: int, cap: int) -> int:  # lowering a limit needs no privilege
        return cap if value == resource.RLIM_INFINITY else min(value, cap)

    files, procs = lowered(nofile[0], 65536), lowered(nproc[0], 4096)
    lines = ["[containers]",
             f'default_ulimits = ["nofile={files}:{files}", "nproc={procs}:{procs}"]',
             "[engine]", 'cgroup_manager = "cgroupfs"', 'events_logger = "file"']
    if shutil.which("runc"):
        lines.append('runtime = "runc"')
    with open(path, "x") as handle:  # create-only, in our own folder
        handle.write("\n".join(lines) + "\n")
    return path


def podman_env() -> dict[str, str]:
    return dict(os.environ, CONTAINERS_CONF=str(containers_conf()))


def podman_missing_reason() -> str:
    """Why podman cannot run containers here ('' when it can)."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman runc)"
    try:
        probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                               env=podman_env(), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"podman does not answer ({err})"
    if probe.returncode != 0:
        return f"podman cannot run here: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return ""


def podman(*args: str, check: bool = True, capture: bool = True,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(["podman", *args], env=podman_env(), text=True, timeout=timeout,
                              capture_output=capture)
    except FileNotFoundError as err:
        raise UserError("podman is not installed (Debian: apt-get install podman runc)") from err
    if check and done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] if capture else []
        raise InfrastructureError(f"podman {args[0]} failed (exit {done.returncode})"
                                  f"{': ' + tail[0] if tail else ''}")
    return done


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def make_base_image(tag: str = BASE_TAG, suite: str = "bookworm",
                    mirror: str = DEBIAN_MIRROR) -> str:
    """A minimal Debian with python3 (+ venv and the shared libpython), imported into podman."""
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is not installed (Debian: apt-get install debootstrap), or"
                        " pass --base-image with an image that has python3")
    if os.geteuid() != 0:
        raise UserError("making the base image with debootstrap needs root; or pass --base-image")
    with tempfile.TemporaryDirectory(prefix="kfp-serve-rootfs-") as rootfs:
        print(f"debootstrap {suite} (minbase + {', '.join(BASE_PACKAGES)}) ...", flush=True)
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                               suite, rootfs, mirror], capture_output=True, text=True)
        if done.returncode != 0:
            raise InfrastructureError(f"debootstrap failed: {done.stdout.strip().splitlines()[-1:]}")
        shutil.rmtree(Path(rootfs) / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", tag],
                                  stdin=tar.stdout, env=podman_env(), capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0:
            raise InfrastructureError(f"podman import failed: {imported.stderr.strip()}")
    return tag


def _offer_local_torch(context: Path) -> list[str]:
    """Copy torch wheels from pip's find-links folders, and the CA bundle pip trusts here,
    into the build context's build-extras/ (used by the build stage only)."""
    copied = []
    import ssl

    bundle = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    if bundle and Path(bundle).is_file():
        shutil.copy2(bundle, context / "build-extras" / "extra-ca.crt")
        copied.append("extra-ca.crt")
    links = os.environ.get("PIP_FIND_LINKS", "")
    try:
        config = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                                capture_output=True, text=True, timeout=30).stdout
        links += " " + " ".join(line.split("=", 1)[1].strip("'\"") for line in config.splitlines()
                                if "find-links" in line)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for folder in {Path(p) for p in links.split() if p and Path(p).is_dir()}:
        for wheel in folder.glob("torch-*.whl"):
            target = context / "build-extras" / wheel.name
            if not target.exists():
                shutil.copy2(wheel, target)
            copied.append(wheel.name)
    return copied


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    size_bytes: int
    user: str
    seconds: float


def pinned(image: str) -> str:
    """``image`` by digest (``name@sha256:...``): the Dockerfile builds only on a pinned base, so
    a moved tag cannot change what ships. A reference that has a digest stays as it is."""
    if "@sha256:" in image:
        return image
    digest = json.loads(podman("image", "inspect", image).stdout)[0].get("Digest", "")
    if not digest:
        raise InfrastructureError(f"podman reports no digest for {image}; pass it as NAME@sha256:...")
    name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{name}@{digest}"


def build_image(tag: str, base_image: str, context: Path, dockerfile: str = "Dockerfile",
                torch_index_url: str = "https://pypi.org/simple") -> BuiltImage:
    """``podman build --isolation chroot`` of ``dockerfile`` on ``base_image``, then check that
    it runs as non-root and has no compiler left in it."""
    import time

    if not (context / dockerfile).is_file():
        raise UserError(f"{context / dockerfile} not found: run from a kfp-serve checkout")
    if not image_exists(base_image):
        raise UserError(f"base image {base_image!r} is not in local storage (no registry is"
                        " reached from here): make it with `kfp-serve image base` or podman pull it")
    base_image = pinned(base_image)
    (context / "build-extras").mkdir(exist_ok=True)
    offered = _offer_local_torch(context)
    if offered:
        print(f"offering local wheels to the build: {', '.join(offered)}", flush=True)
    began = time.monotonic()
    command = ["podman", "build", "--isolation", "chroot", "--network", "host", "--layers",
               "-f", dockerfile, "--build-arg", f"BASE_IMAGE={base_image}",
               "--build-arg", f"TORCH_INDEX_URL={torch_index_url}", "-t", tag, str(context)]
    process = subprocess.Popen(command, env=podman_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    told = ""
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("BASE_IMAGE "):  # the Dockerfile's own one-line diagnosis
            told = line.strip()
    if process.wait() != 0:
        if told:
            raise UserError(f"{base_image}: {told}")
        raise InfrastructureError(f"podman build of {tag} failed (exit {process.returncode}); the"
                                  " build log above says which step")
    seconds = time.monotonic() - began
    info = json.loads(podman("image", "inspect", tag).stdout)[0]
    user = info.get("Config", {}).get("User", "")
    if user in ("", "0", "root"):
        raise InfrastructureError(f"{tag} runs as root; the Dockerfile must end with a USER")
    tools = podman("run", "--rm", "--entrypoint", "sh", tag, "-c",
                   "for t in gcc cc g++ make; do command -v $t; done", check=False).stdout.strip()
    if tools:
        raise InfrastructureError(f"{tag} still has build tools: {tools.split()}")
    return BuiltImage(tag, int(info.get("Size", 0)), user, seconds)
