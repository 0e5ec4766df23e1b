"""llm_to_serve_vertex end to end under kfp.local: the demo Llama published to fake-gcs-server,
the fake Vertex AI running the vLLM container's command with the local vLLM on a dedicated
endpoint, validated through the deployed model's invoke route and promoted."""

import json

import pytest
from fakes.http_fake import FakeServer
from fakes.vertex_api import FakeVertexApi

from kfp_serve.pipelines.run_local import run_local

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_environment")]


def test_llm_is_served_on_a_dedicated_endpoint_validated_and_promoted(tmp_path):
    api = FakeVertexApi(tmp_path)
    params = {"publish_destination": "gs://vertex-llm/models/demo-llm", "max_model_len": 512,
              "serving_image": "us-docker.pkg.dev/my-project/serving/vllm-cpu:0.32.0",
              "machine_type": "n1-standard-8", "accelerator_type": "", "accelerator_count": 0,
              "concurrency": [1, 4]}
    try:
        with FakeServer(api) as server:
            params["api_endpoint"] = api.url = server.url
            run = run_local("llm_to_serve_vertex", tmp_path / "runs", params, gcs_emulator=True)
            assert run.succeeded, run.error
            assert (run.run_dir / "promote-vertex").is_dir() and not (run.run_dir / "rollback-vertex").exists()
            (endpoint,) = api.endpoints.values()
            (serving,) = endpoint["deployedModels"]
            assert endpoint["dedicatedEndpointEnabled"] and endpoint["trafficSplit"] == {serving["id"]: 100}
            (versions,) = api.models.values()
            container = versions[0]["containerSpec"]
            assert container["invokeRoutePrefix"] == "/*" and "--max-model-len=512" in container["args"]
            assert versions[0]["artifactUri"] == "gs://vertex-llm/models/demo-llm/v1"
            report = next(p for p in run.summary_paths if p.parent.name == "validate-llm-endpoint")
            assert "# LLM endpoint validation: PASSED" in report.read_text()
            validate = json.loads((run.run_dir / "validate-llm-endpoint" / "executor_output.json").read_text())
            assert validate["parameterValues"]["Output"] is True
    finally:
        api.stop()
