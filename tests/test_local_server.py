"""A real Triton server (nvidia-pytriton's binary) on 127.0.0.1, stopped by PID."""

import os
import shutil
import socket
from dataclasses import replace

import numpy as np
import pytest
from conftest import catches_sigterm

from kfp_serve.components.artifacts import ServingEndpoint
from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local import triton_server
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.validate.targets import OipGrpcTarget, OipRestTarget
from kfp_serve.components.validate.validation import validate


@pytest.fixture(scope="module")
def server(digits_repository, tmp_path_factory):
    os.environ["KFP_SERVE_STATE_DIR"] = str(tmp_path_factory.mktemp("server-state"))
    record = triton_server.start_server(digits_repository, "digits", "test-server")
    yield record
    triton_server.stop_server(record)


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


def test_the_load_phase_runs_over_grpc_too(server, digits_onnx):
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.validation import validate_target

    meta = ServingEndpoint(url=server.url, grpc_url=server.grpc_url, model_name="digits")
    result = validate_target(meta, ModelSignature.load(digits_onnx),
                             GoldenSet.load(digits_onnx), 1e-4, 1e-3, 8, 30, 0.5, [1, 4],
                             SloGates(max_error_rate=0.0), transport="grpc")
    assert result.passed, result.failure_line()
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


def test_port_in_use_is_a_one_line_error(digits_repository):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"http_port {port} on 127.0.0.1 is already in use"):
            triton_server.start_server(digits_repository, "digits", "busy", http_port=port)
    assert triton_server.load_deployment("busy") is None


def test_a_model_that_cannot_load_stops_the_server_and_quotes_its_log(digits_repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(digits_repository, broken)
    (broken / "digits" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(InfrastructureError,
                       match="tritonserver exited with code 1 .*log tail: .*INVALID_PROTOBUF.*failed to load .digits."):
        triton_server.start_server(broken, "digits", "broken", timeout_s=60)
    assert triton_server.load_deployment("broken") is None


def test_stop_is_idempotent_and_never_signals_a_stranger(digits_repository):
    record = triton_server.start_server(digits_repository, "digits", "short-lived")
    assert triton_server.load_deployment("short-lived") == record
    assert triton_server.stop_server(record) is True
    assert not triton_server._process_alive(record.pid)
    assert triton_server.load_deployment("short-lived") is None
    assert triton_server.stop_server(record) is False
    stranger = triton_server.LocalDeployment("x", os.getpid(), "", "", "m", "", "")
    assert triton_server.stop_server(stranger) is False  # our own pid is not a tritonserver


def test_missing_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no digits/config.pbtxt"):
        triton_server.start_server(tmp_path, "digits", "none")


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
        "error rate 100.0% at concurrency 2 exceeds 1.0%"]
    with pytest.raises(UserError, match="must each be between 1 and 256"):
        OipRestTarget(server.url, "digits", signature).load(golden, [0], 0.3)


def test_html_report_renders_the_chart_and_tables(server, digits_onnx, tmp_path):
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    result = validate(OipRestTarget(server.url, "digits", signature), golden, load_seconds=0.3,
                      concurrency=[1, 2])
    page = result.html()
    assert "<svg" in page and "Endpoint validation: <span class='PASSED'>PASSED" in page
    assert page.count("<table>") == 2 and "<td><code>logits</code></td>" in page
    assert "## Load" in result.markdown()


def test_sigterm_while_the_model_loads_stops_the_server_it_started(digits_onnx, tmp_path):
    """A cancelled deploy step (KFP sends SIGTERM) stops the Triton it started at once, instead
    of leaving it running until the pipeline's exit handler."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(digits_onnx, "onnx", repo, "digits", TritonModelOptions(warmup=True))
    config = repo / "digits" / "config.pbtxt"  # a warmup that outlasts the test: loading hangs
    config.write_text(config.read_text().replace("count: 1", "count: 100000000"))
    state = tmp_path / "state"
    code = ("import sys\nfrom kfp_serve.components.local.triton_server import start_server\n"
            "try:\n"
            f"    start_server({str(repo)!r}, 'digits', 'cancelled', timeout_s=300)\n"
            "except Exception as err:\n    print(err)\n    sys.exit(3)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KFP_SERVE_STATE_DIR": str(state)})
    record_path = state / "cancelled.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and not (
            record_path.is_file() and catches_sigterm(child.pid)):
        time.sleep(0.05)
    server_pid = json.loads(record_path.read_text())["pid"]
    assert triton_server._process_alive(server_pid)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=90)
    assert child.returncode == 3
    assert "cancelled (SIGTERM) while 'digits' was loading; the server was stopped" in out
    assert not triton_server._process_alive(server_pid)
    assert not record_path.exists()


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
