"""The load phase's verdict fails closed: every failed request is counted (a lost or refused
connection, an error answer, a client that cannot reconnect), a level that measured nothing
fails, and the default gate lets no failure through."""

import threading
import time

import numpy as np
import pytest
from fakes.http_fake import FakeServer

from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, protocol_dtype
from kfp_serve.components.validate.load import LoadLevel, SloGates
from kfp_serve.components.validate.targets import OipRestTarget
from kfp_serve.components.validate.validation import validate


def _level(requests, errors, excluded=0, lost=0, concurrency=4):
    return LoadLevel(concurrency, requests, errors, 1.0, 1.0, 2.0, 3.0, excluded, lost)


def test_the_default_gate_lets_no_failed_request_through():
    assert SloGates().violations([_level(1000, 0)]) == []
    assert SloGates().violations([_level(1000, 1)]) == ["error rate 0.1% at concurrency 4 exceeds 0.0%"]
    assert SloGates(max_error_rate=0.01).violations([_level(1000, 1)]) == []


def test_a_level_that_measured_nothing_fails_whatever_the_gates_say():
    assert SloGates(max_error_rate=None).violations([_level(0, 0)]) == [
        "no request succeeded at concurrency 4 (0 sent, 0 failed)"]
    assert SloGates(max_error_rate=None).violations([_level(0, 0, excluded=50)]) == [
        "no request succeeded at concurrency 4 (0 sent, 0 failed, 50 answered by other models)"]
    assert "2 of 4 load clients at concurrency 4 reported nothing" in SloGates().violations(
        [_level(100, 0, lost=2)])[0]


class _GoldenThenFailing:
    """An Open Inference Protocol v2 server that answers the golden set right, then fails every
    later inference with 503 (an overloaded or crashing model)."""

    def __init__(self, signature: ModelSignature, golden: GoldenSet, answered: int):
        self.signature, self.golden, self.answered = signature, golden, answered
        self.infers = 0

    def __call__(self, method, path, query, body):
        if path in ("/v2/health/ready", "/v2/models/digits/ready"):
            return 200, {}
        if path == "/v2/models/digits":
            tensors = {kind: [{"name": s.name, "datatype": protocol_dtype(s.dtype),
                               "shape": s.shape_with_unknowns()} for s in specs]
                       for kind, specs in (("inputs", self.signature.inputs),
                                           ("outputs", self.signature.outputs))}
            return 200, {"name": "digits", **tensors}
        self.infers += 1
        if self.infers > self.answered:
            return 503, {"error": "overloaded"}
        outputs = self.golden.outputs["logits"]
        return 200, {"outputs": [{"name": "logits", "datatype": "FP32", "shape": list(outputs.shape),
                                  "data": outputs.reshape(-1).tolist()}]}


def test_an_endpoint_that_answers_the_golden_set_and_fails_every_load_request_fails(digits_onnx):
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    with FakeServer(_GoldenThenFailing(signature, golden, answered=1)) as server:
        result = validate(OipRestTarget(server.url, "digits", signature), golden, load_seconds=0.3,
                          concurrency=[1, 4])
    assert all(c.passed for c in result.comparisons)  # the numbers were right ...
    assert not result.passed  # ... and the verdict is still no
    assert all(lv.requests > 0 and lv.errors == lv.requests for lv in result.load)
    assert result.slo_problems[0] == "no request succeeded at concurrency 1" \
        f" ({result.load[0].requests} sent, {result.load[0].requests} failed)"
    assert "error rate 100.0% at concurrency 4 exceeds 0.0%" in result.failure_line()


@pytest.mark.server
def test_a_server_killed_during_the_load_phase_fails_the_verdict_with_every_error_counted(
        digits_repository, digits_onnx, tmp_path, monkeypatch):
    """Clients that cannot reconnect keep counting their failures: the levels after the kill
    report what they sent and that it failed, never 0 requests and 0 errors."""
    from kfp_serve.components.local import triton_server

    monkeypatch.setenv("KFP_SERVE_STATE_DIR", str(tmp_path / "state"))
    record = triton_server.start_server(digits_repository, "digits", "killed-during-load")
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    killer = threading.Timer(0.8, triton_server.stop_server, args=(record,))
    try:
        killer.start()
        started = time.monotonic()
        result = validate(OipRestTarget(record.url, "digits", signature), golden, load_seconds=0.5,
                          concurrency=[1, 2, 4, 8])
    finally:
        killer.cancel()
        triton_server.stop_server(record)
    assert time.monotonic() - started < 60
    assert not result.passed
    after_kill = result.load[-1]
    assert after_kill.requests > 0 and after_kill.errors == after_kill.requests
    assert all(lv.requests > 0 for lv in result.load)
    assert any("error rate" in p or "no request succeeded" in p for p in result.slo_problems)


def test_answers_of_other_models_behind_the_endpoint_are_counted_apart(digits_onnx):
    """A canary's neighbours answer part of the load: only the model under test is measured."""
    from kfp_serve.components.validate.http import HttpEndpoint
    from kfp_serve.components.validate.load import run_requests

    calls = {"n": 0}

    def every_third_is_ours(method, path, query, body):
        calls["n"] += 1
        return 200, {}, {"X-Served-By": "canary" if calls["n"] % 3 == 0 else "production"}

    with FakeServer(every_third_is_ours) as server:
        endpoint = HttpEndpoint.parse(server.url)
        [level] = run_requests(endpoint.connection, "/infer", [(b"{}", {})], [2], 0.3,
                               ("X-Served-By", lambda value, body: value == "canary"))
    assert level.requests > 0 and level.errors == 0
    assert level.excluded == pytest.approx(2 * level.requests, abs=4)
    assert np.isfinite(level.p50_ms)


def test_a_client_that_starts_after_the_deadline_still_sends_one_request():
    """On a busy machine a client thread may start after its level's time is up: it still
    measures one request, so a level never reports 0 requests for a server that answers."""
    from kfp_serve.components.validate.load import _Level

    level = _Level(clients=3, seconds=0.0)
    level.run_threads(lambda: object(), lambda client, i: True)
    assert len(level.latencies) == 3 and level.errors == 0
