"""What tests share besides fixtures: the repository's root, process checks, and the optional
parts of the machine a group of tests needs, each with the one command that provides it.

A test that needs one of them says so with ``@requires("java")`` (or ``pytestmark``); where the
part is missing it is skipped with a reason that names the command, and ``make test`` ends by
listing every skipped group that way (tests/conftest.py).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfp_serve.components.signature import ModelSignature, TensorSpec

REPO_ROOT = Path(__file__).resolve().parents[3]


def make_signature(**metadata) -> ModelSignature:
    """Two inputs sharing a dynamic sequence dim, one output: a signature for unit tests."""
    return ModelSignature(
        inputs=(TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("mask", "float32", ("batch", "seq"))),
        outputs=(TensorSpec("scores", "float32", ("batch", 3)),),
        metadata=metadata,
    )


def catches_sigterm(pid: int) -> bool:
    """Whether a process has a handler for SIGTERM (its SigCgt mask in /proc): tests signal only
    then, never on a timer that races interpreter start-up on a busy machine."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def processes_mentioning(text: str) -> list[str]:
    """``"PID: command line"`` of every living (not zombie) process whose command line holds
    ``text`` (a test's own folder: what it started and must have stopped), this one excepted."""
    import os

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


@dataclass(frozen=True)
class Requirement:
    """An optional part of the machine: which tests need it and the one command that enables them."""

    tests: str
    missing: Callable[[], str]  # why it is missing ('' when present)
    enable: str

    @functools.cached_property
    def why(self) -> str:
        return self.missing()


def _java() -> str:
    from fakes.torchserve_runner import java_missing_reason

    return java_missing_reason()


def _chromium() -> str:
    return "" if shutil.which("chromium") or shutil.which("chromium-browser") else "chromium is not installed"


def _podman() -> str:
    from kfp_serve.pipelines.image_build import podman_missing_reason

    return podman_missing_reason()


def _tensorrt_gpu() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    import torch

    return "" if torch.cuda.is_available() else "no CUDA GPU is visible"


def run_sequences(machine: type) -> None:
    """Run a ``hypothesis.stateful`` machine for ``KFP_SERVE_SEQUENCES`` sequences (25 by default)
    of up to 10 steps each, and print what it explored (its ``explored`` counter). The same
    sequences on every run, so CI does not fail on a draw; ``KFP_SERVE_SEQUENCES_RANDOM=1``
    (with a larger ``KFP_SERVE_SEQUENCES``) explores new ones."""
    import os

    from hypothesis import HealthCheck, settings

    machine.TestCase.settings = settings(
        max_examples=int(os.environ.get("KFP_SERVE_SEQUENCES", "25")), stateful_step_count=10,
        deadline=None, suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("KFP_SERVE_SEQUENCES_RANDOM") != "1")
    machine.TestCase().runTest()
    print(f"explored: {machine.explored}")


def _tmpfs() -> str:
    import os
    import tempfile

    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    with tempfile.TemporaryDirectory() as folder:
        try:
            with tmpfs(Path(folder), 64):
                return ""
        except subprocess.CalledProcessError as err:
            return f"mount -t tmpfs failed: {err.stderr.decode(errors='replace').strip()[:120]}"
        except OSError as err:  # no mount program
            return f"mount cannot run: {err}"


@contextmanager
def tmpfs(path: Path, size_kib: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` mounted at ``path`` (a full or read-only disk for a test)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


REQUIREMENTS = {
    "java": Requirement("TorchServe tests", _java,
                        "apt-get install -y openjdk-17-jre-headless (TorchServe 0.12 needs Java 17)"),
    "chromium": Requirement("report screenshot tests", _chromium,
                            "apt-get install -y chromium (what .ci/run does as root)"),
    "podman": Requirement("container image tests", _podman,
                          "apt-get install -y podman runc debootstrap (what .ci/run does as root)"),
    "tmpfs": Requirement("full- and read-only-disk tests", _tmpfs,
                         "run the suite as root where mount works, as CI does"),
    "tensorrt": Requirement("TensorRT engine tests", _tensorrt_gpu,
                            "pytest -m gpu in the GPU image on a machine with an NVIDIA GPU"
                            " (docker build -f Dockerfile.gpu .)"),
}

#: the prefix of every reason a requirement gives (the terminal summary groups by it)
SKIP_PREFIX = "needs "


def requires(name: str) -> pytest.MarkDecorator:
    """Skip unless the machine has ``name`` (a key of REQUIREMENTS), saying how to get it."""
    requirement = REQUIREMENTS[name]
    why = requirement.why
    return pytest.mark.skipif(bool(why), reason=f"{SKIP_PREFIX}{name} ({why}): the"
                              f" {requirement.tests}; enable with: {requirement.enable}")
