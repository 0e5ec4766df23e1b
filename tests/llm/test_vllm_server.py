"""The local vLLM runtime: a start vLLM refuses is one line with vLLM's reason, and leaves no
process behind (vLLM runs an engine and a worker process beside its API server); a served
model stopped by the pipeline's exit handler: tests/pipelines/test_e2e_llm.py."""

from __future__ import annotations

import subprocess

import pytest

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.llm import vllm_server

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("vllm_environment")]


def _processes_naming(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if text in line and "ps -eo" not in line]


def test_a_start_vllm_refuses_names_its_reason_and_what_to_change(packaged_llm):
    folder, record = packaged_llm  # the deploy step refuses this before any start; vLLM too
    with pytest.raises(InfrastructureError) as caught:
        vllm_server.start_vllm(folder, record.model_name, "test-vllm-bad", 4096)
    message = str(caught.value)
    assert message.startswith("vLLM exited with code") and "\n" not in message
    assert "max_model_len is beyond the model's maximum context" in message
    assert not _processes_naming(str(folder))


def test_without_the_vllm_environment_the_error_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv(vllm_server.VLLM_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(UserError, match="run `make llm-env`"):
        vllm_server.vllm_python()
