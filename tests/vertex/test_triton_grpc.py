"""Triton's gRPC on a Vertex AI dedicated endpoint: deploy_vertex(grpc=True) opens the
container's gRPC port, and validation speaks Triton's own protocol through DirectRawPredict on
the endpoint's DNS name (rows 36-38 of VERTEX_BEHAVIOUR.md)."""

import json

import grpc
import numpy as np
import pytest
from google.api_core import exceptions
from google.cloud.aiplatform_v1.types import DirectRawPredictRequest
from support.vertex import vertex_spec
from tritonclient.grpc import service_pb2

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.validate.load import SloGates
from kfp_serve.components.validate.targets import target_for
from kfp_serve.components.validate.validation import validate_target
from kfp_serve.components.validate.vertex_grpc import VertexGrpcTarget
from kfp_serve.components.vertex import rollout as vertex

GRPC = dict(grpc=True, dedicated_endpoint=True)


def _validate(record, digits_onnx, transport="grpc"):
    return validate_target(record, ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx),
                           atol=1e-4, rtol=1e-4, max_batch_size=8, ready_timeout_s=60,
                           load_seconds=0.3, concurrency=[2], gates=SloGates(max_error_rate=0.0),
                           transport=transport)


def _direct(fake_vertex, endpoint, method, request, header=True):
    """One DirectRawPredict call to the fake's port (as the dedicated DNS name takes it) by
    google-cloud-aiplatform's own gRPC client, a client nobody here wrote."""
    from google.cloud.aiplatform_v1 import PredictionServiceClient
    from google.cloud.aiplatform_v1.services.prediction_service.transports import (
        PredictionServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(fake_vertex.url.split("://")[1])
    client = PredictionServiceClient(transport=PredictionServiceGrpcTransport(channel=channel))
    metadata = [("x-vertex-ai-endpoint-id", endpoint.rsplit("/", 1)[-1])] if header else []
    try:
        return client.direct_raw_predict(request=DirectRawPredictRequest(
            endpoint=endpoint, input=request.SerializeToString(),
            method_name=f"/inference.GRPCInferenceService/{method}"), metadata=metadata, timeout=30)
    finally:
        channel.close()


def test_triton_over_grpc_through_direct_raw_predict_and_a_canary_is_refused(
        fake_vertex, published_repository, digits_onnx):
    spec = vertex_spec(published_repository, **GRPC)
    deployed = vertex.deploy(spec, fake_vertex.url, timeout_s=120, poll_s=0.2)
    record = deployed.endpoint_record(spec, fake_vertex.url, {})
    assert record.grpc
    container = fake_vertex.models[deployed.model.rsplit("/", 1)[-1]][-1]["containerSpec"]
    assert container["grpcPorts"] == [{"containerPort": 8001}]
    assert "--allow-grpc=true" in container["args"] and "--grpc-port=8001" in container["args"]

    result = _validate(record, digits_onnx)
    assert result.passed, result.failure_line()
    assert result.transport == "grpc" and result.load[0].requests > 0 and result.load[0].errors == 0
    # Triton's own metadata came back over gRPC: checked, not replaced by a "forwards only" note
    assert result.metadata_problems == [] and result.metadata_note == ""
    methods = {method for _, method in fake_vertex.grpc.calls}
    assert {"/inference.GRPCInferenceService/ModelReady", "/inference.GRPCInferenceService/ModelMetadata",
            "/inference.GRPCInferenceService/ModelInfer"} <= methods
    # the same over Triton's bidirectional stream (ModelStreamInfer in StreamDirectRawPredict)
    streamed = _validate(record, digits_onnx, "grpc-stream")
    assert streamed.passed, streamed.failure_line()
    assert streamed.load[0].requests > 0 and streamed.load[0].errors == 0
    assert "/inference.GRPCInferenceService/ModelStreamInfer" in {m for _, m in fake_vertex.grpc.calls}
    assert {d for d, _ in fake_vertex.grpc.calls} == {deployed.deployed_model_id}
    # a signature the server disagrees with is caught in the metadata read over gRPC
    signature = ModelSignature.load(digits_onnx)
    wrong = ModelSignature(signature.inputs, (TensorSpec("scores", "float32", ("batch", 3)),))
    target = target_for(record, wrong, "grpc")
    assert isinstance(target, VertexGrpcTarget) and target.description.startswith("localhost:")
    target.wait_ready(30)
    assert target.metadata_problems()
    # a request over the dedicated endpoint's 10 MB is refused before it is sent
    with pytest.raises(UserError, match="11.0 MB, over Vertex AI's 10.0 MB limit"):
        target.infer({"image": np.zeros((1, 2_750_000), np.float32)})
    target.close()

    # a canary beside it: its DirectRawPredict answers cannot be told from the stable model's
    canary_spec = vertex_spec(published_repository, traffic_percentage=10, env={"CANARY": "1"}, **GRPC)
    canary = vertex.deploy(canary_spec, fake_vertex.url, timeout_s=120, poll_s=0.2)
    canary_record = canary.endpoint_record(canary_spec, fake_vertex.url, {})
    with pytest.raises(UserError, match="takes 10 % of the endpoint's traffic.*transport=rest-binary"):
        _validate(canary_record, digits_onnx)
    # ... and over REST it is validated alone (rawPredict names the deployed model that answered)
    rest = _validate(canary_record, digits_onnx, "rest-binary")
    assert rest.passed, rest.failure_line()


def test_direct_raw_predict_needs_the_endpoint_header_and_a_container_with_grpc_ports(
        fake_vertex, published_repository, digits_onnx):
    """The fake refuses what Vertex AI documents it refuses: a gRPC call without the
    x-vertex-ai-endpoint-id header, and gRPC to a container that has no grpcPorts."""
    spec = vertex_spec(published_repository, dedicated_endpoint=True)
    deployed = vertex.deploy(spec, fake_vertex.url, timeout_s=120, poll_s=0.2)
    ready = service_pb2.ModelReadyRequest(name="digits")
    with pytest.raises(exceptions.InvalidArgument, match="x-vertex-ai-endpoint-id"):
        _direct(fake_vertex, deployed.endpoint, "ModelReady", ready, header=False)
    with pytest.raises(exceptions.FailedPrecondition, match="no grpc_ports"):
        _direct(fake_vertex, deployed.endpoint, "ModelReady", ready)
    # a shared endpoint: the suite never sends it gRPC, and the fake takes none
    from kfp_serve.components.vertex.api import VertexClient
    from kfp_serve.components.vertex.endpoints import get_or_create_endpoint

    client = VertexClient("my-project", "us-central1", fake_vertex.url, poll_s=0.2)
    shared, _ = get_or_create_endpoint(client, "shared", {}, 60, {})
    with pytest.raises(exceptions.FailedPrecondition, match="dedicated endpoints only"):
        _direct(fake_vertex, shared.name, "ModelReady", ready)
    # validation says how to get there before any call
    record = deployed.endpoint_record(spec, fake_vertex.url, {})
    with pytest.raises(UserError, match=r"deployed without grpc=True.*rest-binary"):
        target_for(record, ModelSignature.load(digits_onnx), "grpc")


def test_a_container_whose_triton_serves_no_grpc_fails_the_deploy(fake_vertex, published_repository):
    """grpcPorts without --allow-grpc=true (a version a user uploaded to the Model Registry):
    Triton in Vertex AI mode keeps gRPC off, the health checks on the gRPC port fail, and the
    deploy fails with the container's reason."""
    from kfp_serve.components.vertex.api import VertexClient

    spec = vertex_spec(published_repository, **GRPC)
    body = spec.model_body()
    body["containerSpec"]["args"] = [a for a in body["containerSpec"]["args"] if "allow-grpc" not in a]
    client = VertexClient("my-project", "us-central1", fake_vertex.url, poll_s=0.2)
    started = client.models.upload_model(parent=client.parent, model=client.types.Model.from_json(
        json.dumps({k: v for k, v in body.items() if k != "labels"})))
    model_id = started.result(timeout=60).model.rsplit("/", 1)[-1]
    with pytest.raises(UserError, match="serves no gRPC without --allow-grpc=true.*Cloud Logging"):
        vertex.deploy(vertex_spec("", registry_model=model_id, model_name="", **GRPC),
                      fake_vertex.url, timeout_s=120, poll_s=0.2)
    # a version without grpcPorts is refused before any deploy
    plain = vertex.deploy(vertex_spec(published_repository, dedicated_endpoint=True), fake_vertex.url,
                          timeout_s=120, poll_s=0.2)
    with pytest.raises(UserError, match="container has no grpcPorts"):
        vertex.deploy(vertex_spec("", registry_model=plain.model.rsplit("/", 1)[-1], model_name="",
                                  **GRPC), fake_vertex.url, timeout_s=60, poll_s=0.2)


@pytest.mark.parametrize("overrides, message", [
    (dict(grpc=True), "set dedicated_endpoint=True"),
    (dict(grpc=True, dedicated_endpoint=True, content_kind="TorchServeArchive", serving_image=""),
     "Triton's gRPC protocol"),
])
def test_grpc_is_refused_where_vertex_ai_cannot_carry_it(overrides, message):
    with pytest.raises(UserError, match=message):
        vertex_spec("gs://bucket/digits/v1", **overrides).check()
