"""train_to_serve_local end to end under kfp.local: real training, ONNX, Triton, validation."""

import json
import os

import pytest

from kfp_serve.components.local.triton_server import _process_alive
from kfp_serve.pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def _endpoint_metadata(run_dir):
    output = json.loads((run_dir / "deploy-local" / "executor_output.json").read_text())
    return output["artifacts"]["endpoint"]["artifacts"][0]["metadata"]


def test_local_pipeline_serves_and_validates(tmp_path):
    result = run_local("train_to_serve_local", tmp_path, {"model_name": "digits", "validation_transport": "grpc"},
                       gcs_emulator=True)
    assert result.succeeded, result.error
    published = json.loads((result.run_dir / "publish-model" / "executor_output.json").read_text())
    published = published["artifacts"]["published"]["artifacts"][0]
    assert published["uri"] == "gs://kfp-serve-local/models/digits/v1"
    assert (tmp_path / "gcs-emulator" / "data" / "kfp-serve-local" / "models" / "digits" / "v1"
            / "_kfp_serve_manifest.json").is_file()
    assert [p.parent.name for p in result.summary_paths] == ["profile-formats", "validate-endpoint"]
    summary = result.summary_paths[-1].read_text()
    assert "# Endpoint validation: PASSED" in summary
    assert "| `logits` |" in summary and "| pass |" in summary
    metrics = json.loads((result.run_dir / "validate-endpoint" / "executor_output.json").read_text())
    assert metrics["parameterValues"]["Output"] is True
    repo = result.run_dir / "build-triton-repository" / "repository" / "digits"
    assert (repo / "config.pbtxt").is_file() and (repo / "1" / "model.onnx").is_file()
    endpoint = _endpoint_metadata(result.run_dir)
    assert endpoint["url"].startswith("http://127.0.0.1:")
    # the exit handler stopped the server
    assert not _process_alive(int(endpoint["pid"]))
    assert not list((tmp_path / ".kfp-serve-state" / "local").glob("*.json"))


def test_failed_validation_still_stops_the_server(tmp_path):
    result = run_local("train_to_serve_local", tmp_path,
                       {"endpoint_atol": 0.0, "endpoint_rtol": 0.0,
                        "publish_destination": str(tmp_path / "published")})
    assert not result.succeeded
    # the step's own verdict, as the user sees it last, and the exit code of a verification
    assert result.error.startswith("step validate_endpoint: endpoint validation failed: logits:")
    assert result.exit_code == 2
    endpoint = _endpoint_metadata(result.run_dir)
    assert not _process_alive(int(endpoint["pid"]))
    assert not list((tmp_path / ".kfp-serve-state" / "local").glob("*.json"))
    undeploy = json.loads((result.run_dir / "undeploy-local" / "executor_output.json").read_text())
    assert undeploy["parameterValues"]["Output"] is True
    assert os.path.isdir(result.run_dir / "export-onnx" / "onnx_model")


def test_tuned_pipeline_builds_serves_and_validates_the_measured_configuration(tmp_path):
    result = run_local("train_to_serve_local_tuned", tmp_path,
                       {"tune_budget_s": 30.0, "tune_seconds_per_level": 0.5,
                        "machine_type": "gke:n2-standard-4",
                        "publish_destination": str(tmp_path / "published")})
    assert result.succeeded, result.error
    tuned = json.loads((result.run_dir / "tune-triton-config" / "executor_output.json").read_text())
    tuned = tuned["artifacts"]["tuned_options"]["artifacts"][0]["metadata"]
    assert tuned["kfp_serve_kind"] == "TritonModelOptions" and tuned["trials"]
    options = tuned["options"]
    # the repository was built with what the tuner chose
    from kfp_serve.components.triton.config import parse_pbtxt

    config = parse_pbtxt((result.run_dir / "build-triton-repository" / "repository" / "digits"
                          / "config.pbtxt").read_text())
    assert config.max_batch_size == options["max_batch_size"]
    assert config.instance_group[0].count == options["instance_count"]
    assert config.HasField("dynamic_batching") == options["dynamic_batching"]
    assert dict((k, v.string_value) for k, v in config.parameters.items()) == options["parameters"]
    report = (result.run_dir / "tune-triton-config" / "report").read_text()
    assert "<polyline class=\"frontier\"" in report and "gke:n2-standard-4" in report
    summary = result.summary_paths[-1].read_text()
    assert "# Endpoint validation: PASSED" in summary and "## Load (rest-binary)" in summary
    assert "batch formed" in summary and "cost per million inferences" in summary
    assert not list((tmp_path / ".kfp-serve-state" / "local").glob("*.json"))
