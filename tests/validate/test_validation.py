"""Validating a live endpoint (a real Triton on 127.0.0.1): golden set, metadata, load phase,
gates and the server's own view, over JSON, binary tensors and gRPC."""

from dataclasses import replace

import numpy as np
import pytest

from kfp_serve.components.artifacts import ServingEndpoint
from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.validate.targets import OipGrpcTarget, OipRestTarget
from kfp_serve.components.validate.validation import validate


def test_served_model_matches_the_golden_set(server, digits_onnx):
    result = validate(OipRestTarget(server.url, "digits", ModelSignature.load(digits_onnx)),
                      GoldenSet.load(digits_onnx), max_batch_size=5)
    assert result.passed, result.failure_line()
    assert len(result.request_latencies_ms) == 4  # 16 samples in requests of <= 5
    assert result.comparisons[0].max_abs_error < 1e-4
    assert "Endpoint validation: PASSED" in result.markdown()


def test_the_golden_set_also_passes_over_grpc(server, digits_onnx):
    result = validate(OipGrpcTarget(server.grpc_url, "digits", ModelSignature.load(digits_onnx)),
                      GoldenSet.load(digits_onnx), max_batch_size=8)
    assert result.passed, result.failure_line()
    assert result.metadata_problems == [] and len(result.request_latencies_ms) == 2
    assert result.comparisons[0].max_abs_error < 1e-4


@pytest.mark.parametrize("transport", ["grpc", "grpc-stream"])
def test_the_load_phase_runs_over_grpc_too(server, digits_onnx, transport):
    """Unary calls, or each client's requests on one bidirectional stream (ModelStreamInfer)."""
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.validation import validate_target

    meta = ServingEndpoint(url=server.url, grpc_url=server.grpc_url, model_name="digits")
    result = validate_target(meta, ModelSignature.load(digits_onnx),
                             GoldenSet.load(digits_onnx), 1e-4, 1e-3, 8, 30, 0.5, [1, 4],
                             SloGates(max_error_rate=0.0), transport=transport)
    assert result.passed, result.failure_line()
    assert result.transport == transport
    assert [lv.concurrency for lv in result.load] == [1, 4]
    assert all(lv.requests > 10 and lv.errors == 0 for lv in result.load)


def test_wrong_references_fail_validation(server, digits_onnx):
    golden = GoldenSet.load(digits_onnx)
    golden.outputs["logits"] = golden.outputs["logits"] + np.float32(0.5)
    result = validate(OipRestTarget(server.url, "digits", ModelSignature.load(digits_onnx)), golden)
    assert not result.passed
    assert result.failure_line().startswith("logits: 160/160 values exceed")


def test_metadata_mismatch_is_reported(server, digits_onnx):
    signature = ModelSignature(
        inputs=(TensorSpec("image", "float16", ("batch", 1, 8, 8)),),
        outputs=(TensorSpec("probs", "float32", ("batch", 10)),),
    )
    problems = OipRestTarget(server.url, "digits", signature).metadata_problems()
    assert "input 'image' is FP32, signature says FP16" in problems
    assert any(p.startswith("output 'probs' is not served") for p in problems)
    assert "server has outputs not in the signature: ['logits']" in problems


def test_load_phase_and_slo_gates(server, digits_onnx):
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.result import latency_svg

    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    levels = OipRestTarget(server.url, "digits", signature).load(golden, [1, 4], 0.5)
    assert [lv.concurrency for lv in levels] == [1, 4]
    assert all(lv.requests > 5 and lv.errors == 0 and lv.throughput > 0 for lv in levels)
    assert all(lv.p50_ms <= lv.p95_ms <= lv.p99_ms for lv in levels)
    assert SloGates(max_p95_ms=10_000, min_throughput=1, max_error_rate=0).violations(levels) == []
    problems = SloGates(max_p95_ms=0.001, min_throughput=1e9).violations(levels)
    assert problems[0].startswith("p95 latency") and "exceeds 0.001 ms" in problems[0]
    assert problems[-1].startswith("best throughput") and "is below 1e+09 req/s" in problems[-1]
    assert latency_svg(levels).count('class="bar"') == 6


def test_load_errors_are_measured_not_raised(server, digits_onnx):
    from kfp_serve.components.validate.load import SloGates

    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    [level] = OipRestTarget(server.url, "no_such_model", signature).load(golden, [2], 0.3)
    assert level.requests > 0 and level.error_rate == 1.0
    assert SloGates(max_error_rate=0.01).violations([level]) == [
        f"no request succeeded at concurrency 2 ({level.requests} sent, {level.requests} failed)",
        "error rate 100.0% at concurrency 2 exceeds 1.0%"]
    with pytest.raises(UserError, match="must each be between 1 and 256"):
        OipRestTarget(server.url, "digits", signature).load(golden, [0], 0.3)


def test_binary_tensors_golden_and_load_with_the_servers_own_view(server, digits_onnx):
    """rest-binary: the golden set and the load travel as binary tensor data; the server's
    Prometheus counters (local Triton serves them on 127.0.0.1) give queue vs compute time
    and the batch size the dynamic batcher formed, per load level."""
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.server_metrics import ServerGates
    from kfp_serve.components.validate.validation import validate_target

    assert server.metrics_url.startswith("http://127.0.0.1:")
    meta = ServingEndpoint(url=server.url, model_name="digits", metrics_url=server.metrics_url)
    result = validate_target(meta, ModelSignature.load(digits_onnx),
                             GoldenSet.load(digits_onnx), 1e-4, 1e-3, 8, 30, 0.5, [1, 8],
                             SloGates(max_error_rate=0.0), transport="rest-binary",
                             server_gates=ServerGates(max_queue_ms=10_000, min_mean_batch=1.0),
                             machine_type="gke:n2-standard-4")
    assert result.passed, result.failure_line()
    assert result.comparisons[0].max_abs_error < 1e-4 and result.transport == "rest-binary"
    one, eight = result.server
    # every load request reached the server, and nothing else was counted in between
    assert one.requests == result.load[0].requests and eight.requests == result.load[1].requests
    assert one.mean_batch == 1.0  # one client: nothing to merge
    assert eight.mean_batch > 1.0  # eight clients: the dynamic batcher merged requests
    assert one.infer_ms > 0 and one.request_ms >= one.queue_ms + one.compute_ms * 0.9
    metrics = result.metrics()
    assert metrics["c8_server_mean_batch"] == round(eight.mean_batch, 2)
    assert metrics["usd_per_million"] > 0
    report = result.markdown()
    assert "## Load (rest-binary)" in report and "| batch formed |" in report
    assert "the dynamic batcher formed batches of" in report
    assert "gke:n2-standard-4 at $0.194/h" in report
    strict = ServerGates(max_queue_ms=0.0, min_mean_batch=1000).violations(eight)
    assert strict[0].startswith("mean queue time in the server") and "exceeds 0 ms" in strict[0]
    assert strict[1].startswith("the server formed batches of") and "below 1000" in strict[1]


def test_an_unreadable_metrics_page_and_a_bad_price_are_one_line_errors(server, digits_onnx):
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.validation import validate_target

    meta = ServingEndpoint(url=server.url, model_name="digits")
    args = (ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx), 1e-4, 1e-3, 8, 30, 0.2,
            [1], SloGates())
    with pytest.raises(UserError, match="no Triton .* counters for model 'digits'"):
        validate_target(meta, *args, metrics_url=server.url + "/v2/health/ready")
    with pytest.raises(UserError, match="no price for machine type 'gke:z9-mega'"):
        validate_target(meta, *args, machine_type="gke:z9-mega")
    with pytest.raises(UserError, match=r"binary tensor \(rest-binary\) validation needs an Open Inference Protocol v2"):
        validate_target(replace(meta, protocol="v1"), *args, transport="rest-binary")
