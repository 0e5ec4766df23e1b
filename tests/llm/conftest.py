"""The LLM rooms' shared checkpoint: the demo Llama, packaged once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def demo_copy(packaged_llm, tmp_path) -> Path:
    """A copy of the demo checkpoint a test may break."""
    import shutil

    target = tmp_path / "checkpoint"
    shutil.copytree(packaged_llm[0], target)
    return target
