"""The endpoints the validator calls, one per protocol: their requests, addresses and answers."""

from dataclasses import replace

import numpy as np
import pytest
from support import requires

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive
from kfp_serve.components.validate.targets import OipRestTarget


def test_binary_requests_decode_as_the_json_ones(server, digits_onnx):
    from kfp_serve.components.validate.targets import OipBinaryRestTarget

    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    binary = OipBinaryRestTarget(server.url, "digits", signature)
    body, headers = binary.request(golden.slice(0, 2).inputs)
    json_size = int(headers["Inference-Header-Content-Length"])
    assert body[json_size:] == golden.inputs["image"][:2].tobytes()  # raw FP32, no JSON numbers
    outputs, problems = binary.infer(golden.slice(0, 5).inputs)
    expected, _ = OipRestTarget(server.url, "digits", signature).infer(golden.slice(0, 5).inputs)
    assert problems == [] and outputs["logits"].shape == (5, 10)
    np.testing.assert_array_equal(outputs["logits"], expected["logits"])
    with pytest.raises(UserError, match="answered 400"):
        OipBinaryRestTarget(server.url, "digits", signature).infer(
            {"image": golden.inputs["image"][:1, :, :4]})


def test_grpc_validation_dials_the_cluster_local_address_on_its_scheme_port(digits_onnx):
    """A grpc-v2 InferenceService is validated at status.address.url, which has no port:
    Knative serves h2c on 80 there (a bare host would make gRPC dial 443)."""
    from kfp_serve.components.validate.targets import target_for

    signature = ModelSignature.load(digits_onnx)
    service = KServeInferenceService(name="digits", namespace="models", model_name="digits",
                                     validation_url="http://digits.models.svc.cluster.local",
                                     url="http://digits.models.example.com", protocol="grpc-v2")
    assert target_for(service, signature).address == "digits.models.svc.cluster.local:80"
    local = replace(service, validation_url="http://127.0.0.1:9000")
    assert target_for(local, signature).address == "127.0.0.1:9000"


@pytest.mark.server
@requires("java")
def test_validator_speaks_kserve_v1_and_v2_to_torchserve(digits_torchscript, tmp_path):
    """validate_endpoint through KServe's TorchServe routes, in both envelopes: v1 (instances,
    no metadata API) and v2 (the wrapper publishes no tensor metadata)."""
    from fakes.kserve_torchserve import TorchServeBehindKServe

    from kfp_serve.components.artifacts import KServeInferenceService
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.validation import validate_target

    build_archive(digits_torchscript, "torchscript", tmp_path / "ts", "digits",
                  ArchiveOptions(batch_size=4, max_batch_delay_ms=20))
    signature, golden = ModelSignature.load(digits_torchscript), GoldenSet.load(digits_torchscript)
    work = tmp_path / "work"
    work.mkdir()
    served = TorchServeBehindKServe(tmp_path / "ts", work)
    try:
        for protocol in ("v1", "v2"):
            meta = KServeInferenceService(name="digits", namespace="models", model_name="digits",
                                          url=served.url, protocol=protocol)
            result = validate_target(meta, signature, golden, 1e-4, 1e-3, 8,
                                     60, 0.5, [1, 4], SloGates(max_error_rate=0.0))
            assert result.passed, (protocol, result.failure_line())
            assert result.samples == golden.batch_size and result.load[1].requests > 0
            assert "checked on every response" in result.markdown()
        wrong = KServeInferenceService(name="digits", namespace="models", model_name="digits",
                                       url=served.url, protocol="v1")
        with pytest.raises(UserError, match="gRPC validation needs an Open Inference Protocol v2 server"):
            validate_target(wrong, signature, golden, 1e-4, 1e-3, 8, 60, 0,
                            [1], SloGates(), transport="grpc")
    finally:
        served.stop()


def test_auto_transport_sends_binary_tensors_only_where_json_cannot_carry_them():
    from kfp_serve.components.signature import TensorSpec
    from kfp_serve.components.validate.targets import resolve_transport

    half = ModelSignature((TensorSpec("x", "float16", ("batch", 8)),),
                          (TensorSpec("y", "float32", ("batch", 3)),))
    full = ModelSignature((TensorSpec("x", "float32", ("batch", 8)),),
                          (TensorSpec("y", "float32", ("batch", 3)),))
    assert resolve_transport("auto", half, json_only=False) == "rest-binary"
    assert resolve_transport("auto", full, json_only=False) == "rest"
    assert resolve_transport("auto", half, json_only=True) == "rest"  # Vertex AI, KServe v1
    assert resolve_transport("grpc", half, json_only=False) == "grpc"  # asked for: kept
