"""Triton on Vertex AI as production clients call it: binary tensors through rawPredict (the
content type Triton's Vertex AI endpoint reads), and the server's own metadata read through its
redirect header and its metrics where they are one server's
(rows 30-31 of VERTEX_BEHAVIOUR.md)."""

import uuid

import pytest
from model_zoo import ZOO
from support.vertex import vertex_spec

from kfp_serve.components.errors import KfpServeError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.storage.publish import publish
from kfp_serve.components.triton.config import TritonModelOptions
from kfp_serve.components.triton.repository import build_repository
from kfp_serve.components.validate.load import SloGates
from kfp_serve.components.validate.validation import validate_target
from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import rollout as vertex


def test_a_float16_model_on_vertex_is_validated_with_binary_tensors_and_its_metadata(
        fake_vertex, gcs, tmp_path):
    entry = next(e for e in ZOO if e.name == "float16_mlp")
    save_torch_model(entry.build(), entry.signature, entry.example(4), tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "onnx")
    build_repository(tmp_path / "onnx", "onnx", tmp_path / "repository", "half", TritonModelOptions(max_batch_size=8))
    bucket = f"vertex-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)
    uri = publish(tmp_path / "repository", f"gs://{bucket}/half").uri
    deployed = vertex.deploy(vertex_spec(uri, display_name="half", model_name="half"), fake_vertex.url,
                             timeout_s=120, poll_s=0.2)
    record = deployed.endpoint_record(vertex_spec(uri, model_name="half"), fake_vertex.url, {})
    signature, golden = ModelSignature.load(tmp_path / "onnx"), GoldenSet.load(tmp_path / "onnx")

    def check(transport):
        return validate_target(record, signature, golden, atol=1e-3, rtol=1e-2, max_batch_size=4,
                               ready_timeout_s=60, load_seconds=0.3, concurrency=[2],
                               gates=SloGates(max_error_rate=0.0), transport=transport)

    result = check("auto")
    assert result.passed, result.failure_line()
    assert result.transport == "rest-binary" and result.load[0].requests > 0
    # Triton's own metadata was read through the redirect header: no "forwards only" note
    assert result.metadata_note == "" and result.metadata_problems == []
    # ... and its metrics, one replica's: the server's view of the load level
    [server] = result.server
    assert server.server == "triton" and server.requests >= result.load[0].requests
    # a signature the server disagrees with is caught in Triton's metadata, read through Vertex
    wrong = ModelSignature(signature.inputs, (TensorSpec("y", "float16", ("batch", 4)),))
    target = VertexTarget(record.predict_base, record.deployed_model_id, "vertex-raw", "half", wrong,
                          api_base=record.api_base)
    target.wait_ready(30)
    assert any("'y'" in problem for problem in target.metadata_problems())
    target.replicas = (1, 3)  # readings could come from different replicas: not read
    assert target.read_counters() is None
    # the same model over JSON: the real Triton refuses float16 as JSON
    with pytest.raises(KfpServeError, match="binary"):
        check("rest")
