"""llm_to_serve_local end to end under kfp.local: a real Llama checkpoint, the GCS emulator,
a real vLLM (CPU build, its own environment) and the validation, then no server left."""

import json
import subprocess

import pytest

from kfp_serve.components.local.triton_server import _process_alive
from kfp_serve.pipelines.run_local import run_local

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_environment")]


def _output(run_dir, step):
    return json.loads((run_dir / step / "executor_output.json").read_text())


def test_llm_pipeline_packages_serves_validates_and_stops_vllm(tmp_path):
    result = run_local("llm_to_serve_local", tmp_path, {"concurrency": [1, 4]}, gcs_emulator=True)
    assert result.succeeded, result.error
    published = _output(result.run_dir, "package-llm-checkpoint")["artifacts"]["published"]
    assert published["artifacts"][0]["uri"] == "gs://kfp-serve-local/models/demo-llm/v1"
    version = tmp_path / "gcs-emulator" / "data" / "kfp-serve-local" / "models" / "demo-llm" / "v1"
    assert (version / "kfp_serve_golden.json").is_file() and (version / "model.safetensors").is_file()
    summary = result.summary_paths[-1].read_text()
    assert "# LLM endpoint validation: PASSED" in summary
    assert "| streaming | PASSED |" in summary and "| c=4 | 32 | 0 |" in summary
    assert summary.count("token ids equal") == 6  # every golden prompt, raw and chat
    validate = _output(result.run_dir, "validate-llm-endpoint")
    assert validate["parameterValues"]["Output"] is True
    html = (result.run_dir / "validate-llm-endpoint" / "html_report").read_text()
    assert html.count("<svg") == 3  # TTFT and ITL distributions, the frontier
    endpoint = _output(result.run_dir, "deploy-local-llm")["artifacts"]["endpoint"]["artifacts"][0]
    assert endpoint["metadata"]["protocol"] == "openai"
    assert not _process_alive(int(endpoint["metadata"]["pid"]))  # the exit handler stopped it
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert "demo-llm" not in listing  # nor its engine and worker processes
    assert not list((tmp_path / ".kfp-serve-state" / "local").glob("*.json"))
