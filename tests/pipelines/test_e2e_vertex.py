"""train_to_serve_vertex end to end under kfp.local: fake-gcs-server for storage, the fake
Vertex AI REST API serving with local Triton, both outcomes (promote; roll back)."""

import json

import pytest
from fakes.http_fake import FakeServer
from fakes.vertex_api import FakeVertexApi

from kfp_serve.pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def test_outputs_are_the_types_google_cloud_pipeline_components_consume():
    from kfp_serve.components import deploy_vertex

    outputs = deploy_vertex.component_spec.outputs
    assert outputs["vertex_model"].type == "google.VertexModel@0.0.1"
    assert outputs["vertex_endpoint"].type == "google.VertexEndpoint@0.0.1"
    assert outputs["deployed_model_id"].type == "String"


def test_new_versions_are_promoted_when_valid_and_rolled_back_when_not(tmp_path):
    api = FakeVertexApi(tmp_path)
    try:
        with FakeServer(api) as server:
            params = {"api_endpoint": server.url, "publish_destination": "gs://vertex-e2e/models/digits",
                      "traffic_percentage": 25, "epochs": 8}
            first = run_local("train_to_serve_vertex", tmp_path / "runs", params, gcs_emulator=True)
            assert first.succeeded, first.error
            assert (first.run_dir / "promote-vertex").is_dir()
            (endpoint,) = api.endpoints.values()
            (serving,) = endpoint["deployedModels"]
            assert endpoint["displayName"] == "digits" and endpoint["trafficSplit"] == {serving["id"]: 100}
            deploy = json.loads((first.run_dir / "deploy-vertex" / "executor_output.json").read_text())
            vertex_endpoint = deploy["artifacts"]["vertex_endpoint"]["artifacts"][0]
            assert vertex_endpoint["metadata"]["resourceName"] == endpoint["name"]
            assert deploy["parameterValues"]["deployed_model_id"] == serving["id"]
            model = deploy["artifacts"]["vertex_model"]["artifacts"][0]
            assert model["metadata"]["resourceName"].endswith("@1")

            impossible = dict(params, endpoint_atol=0.0, endpoint_rtol=0.0)
            second = run_local("train_to_serve_vertex", tmp_path / "runs", impossible, gcs_emulator=True)
            assert second.succeeded, second.error  # a rollback is a handled outcome
            assert (second.run_dir / "rollback-vertex").is_dir()
            assert not (second.run_dir / "promote-vertex").exists()
            assert [d["id"] for d in endpoint["deployedModels"]] == [serving["id"]]  # canary undeployed
            assert endpoint["trafficSplit"] == {serving["id"]: 100}
            (versions,) = api.models.values()
            assert [v["versionId"] for v in versions] == ["1", "2"]  # versions of one model
            report = next(p for p in second.summary_paths if p.parent.name == "validate-endpoint")
            text = report.read_text()
            assert "Endpoint validation: FAILED" in text and "deployed model" in text
    finally:
        api.stop()
