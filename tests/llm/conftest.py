"""The LLM rooms' shared checkpoint: the demo Llama, packaged once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def packaged_llm(tmp_path_factory) -> tuple[Path, object]:
    """``(folder, LlmCheckpoint record)`` of the demo checkpoint with its card and golden set."""
    from kfp_serve.components.llm.package import package_checkpoint

    root = tmp_path_factory.mktemp("llm")
    record, _ = package_checkpoint("demo", root / "packaged", root / "scratch")
    return root / "packaged", record


@pytest.fixture
def demo_copy(packaged_llm, tmp_path) -> Path:
    """A copy of the demo checkpoint a test may break."""
    import shutil

    target = tmp_path / "checkpoint"
    shutil.copytree(packaged_llm[0], target)
    return target
