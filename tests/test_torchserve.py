"""TorchServe archives: built with torch-model-archiver, served by a real TorchServe."""

import concurrent.futures
import json
import urllib.request
import zipfile

import numpy as np
import pytest
from fakes.torchserve_runner import java_missing_reason, torchserve

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive
from kfp_serve.components.torchserve.handler import RequestError, format_response, parse_request
from kfp_serve.components.validate.server_metrics import difference, read_counters

SIGNATURE = {"inputs": [{"name": "image", "dtype": "float32", "dims": ["batch", 1, 8, 8]}],
             "outputs": [{"name": "logits", "dtype": "float32", "dims": ["batch", 10]}]}


def test_handler_parses_v1_and_v2_bodies():
    image = np.arange(128, dtype=np.float32).reshape(2, 1, 8, 8)
    v1, protocol = parse_request(json.dumps({"instances": image.tolist()}).encode(), SIGNATURE)
    assert protocol == "v1" and v1["image"].shape == (2, 1, 8, 8)
    body = {"inputs": [{"name": "image", "shape": [2, 1, 8, 8], "datatype": "FP32",
                        "data": image.reshape(-1).tolist()}]}
    v2, protocol = parse_request(body, SIGNATURE)
    assert protocol == "v2"
    np.testing.assert_array_equal(v1["image"], v2["image"])
    out = {"logits": np.ones((2, 10), np.float32)}
    assert format_response(out, SIGNATURE, "v1", "m") == {"predictions": out["logits"].tolist()}
    assert format_response(out, SIGNATURE, "v2", "m")["outputs"][0]["shape"] == [2, 10]


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{nope", "not JSON"), ({"x": 1}, "needs 'instances'"), ({"instances": []}, "non-empty"),
     ({"instances": [[1, 2]]}, r"has shape \[1, 2\]; the model takes"),
     ({"inputs": [{"name": "other", "shape": [1], "data": [1]}]}, "unknown input 'other'")],
)
def test_handler_rejects_bad_bodies(body, message):
    with pytest.raises(RequestError, match=message):
        parse_request(body, SIGNATURE)


def test_archive_layouts_for_kserve_and_vertex(digits_onnx, tmp_path):
    result = build_archive(digits_onnx, "onnx", tmp_path / "ts", "digits",
                           ArchiveOptions(batch_size=4, max_batch_delay_ms=20, workers=2))
    names = sorted(zipfile.ZipFile(result.mar).namelist())
    # nothing is pip-installed when the model loads: no requirements.txt rides along
    assert names == ["MAR-INF/MANIFEST.json", "handler.py", "model.onnx", "signature.json"]
    properties = (tmp_path / "ts" / "config" / "config.properties").read_text()
    assert "model_store=/mnt/models/model-store" in properties
    # only inference faces the pod network; management (which loads code) and metrics do not
    assert "inference_address=http://0.0.0.0:8085" in properties
    assert "management_address=http://127.0.0.1:8081" in properties
    assert "metrics_address=http://127.0.0.1:8082" in properties
    assert "grpc_management_address=127.0.0.1" in properties
    assert "allowed_urls=file:///mnt/models/model\\-store/.*" in properties
    assert "install_py_dep_per_model=false" in properties
    assert '"batchSize":4,"maxBatchDelay":20' in properties and '"minWorkers":2' in properties
    assert (tmp_path / "ts" / "model.mar").read_bytes() == result.mar.read_bytes()


def test_a_handler_that_fails_to_import_is_caught_at_build_time(digits_onnx, tmp_path):
    broken = tmp_path / "handler.py"
    broken.write_text("import no_such_module_here\n\ndef handle(data, context):\n    return data\n")
    with pytest.raises(UserError, match="handler handler.py does not import: ModuleNotFoundError: No module named 'no_such_module_here'"):
        build_archive(digits_onnx, "onnx", tmp_path / "ts", "digits", handler=broken)
    assert not (tmp_path / "ts").exists()
    no_entry = tmp_path / "nohandle.py"
    no_entry.write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no handle"):
        build_archive(digits_onnx, "onnx", tmp_path / "ts", "digits", handler=no_entry)


def test_bad_archive_requests(digits_onnx, tmp_path):
    with pytest.raises(UserError, match="is not valid for Triton"):
        build_archive(digits_onnx, "onnx", tmp_path / "a", "bad name")
    with pytest.raises(UserError, match="take \\['onnx', 'torchscript'\\] models, not 'tensorrt'"):
        build_archive(digits_onnx, "tensorrt", tmp_path / "a", "m")
    with pytest.raises(UserError, match="model.pt is missing"):
        build_archive(digits_onnx, "torchscript", tmp_path / "a", "m")


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.skipif(bool(java_missing_reason()), reason=java_missing_reason() or "ready")
@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_real_torchserve_answers_the_golden_set(digits_onnx, digits_torchscript, tmp_path, model_format):
    exported = digits_onnx if model_format == "onnx" else digits_torchscript
    build_archive(exported, model_format, tmp_path / "ts", "digits",
                  ArchiveOptions(batch_size=4, max_batch_delay_ms=200))
    golden = GoldenSet.load(exported)
    assert ModelSignature.load(exported).input_names == ["image"]
    work = tmp_path / "work"
    work.mkdir()
    with torchserve(tmp_path / "ts", "digits", work, with_metrics=True) as (url, metrics_url):
        _, before = read_counters(metrics_url, "digits")
        v1 = _post(f"{url}/predictions/digits", {"instances": golden.inputs["image"].tolist()})
        np.testing.assert_allclose(np.asarray(v1["predictions"]), golden.outputs["logits"], atol=1e-4)
        body = {"inputs": [{"name": "image", "shape": [3, 1, 8, 8], "datatype": "FP32",
                            "data": golden.inputs["image"][:3].reshape(-1).tolist()}]}
        v2 = _post(f"{url}/predictions/digits", body)
        [logits] = v2["outputs"]
        assert logits["name"] == "logits" and logits["shape"] == [3, 10]
        np.testing.assert_allclose(np.asarray(logits["data"]).reshape(3, 10),
                                   golden.outputs["logits"][:3], atol=1e-4)
        # concurrent single-sample requests are batched by TorchServe and split back correctly
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda i: _post(f"{url}/predictions/digits",
                                {"instances": golden.inputs["image"][i:i + 1].tolist()}), range(8)))
        for i, answer in enumerate(answers):
            np.testing.assert_allclose(answer["predictions"][0], golden.outputs["logits"][i], atol=1e-4)
        # the server's own view, from its metrics API (what validate_endpoint's metrics_url reads)
        server, after = read_counters(metrics_url, "digits")
        stats = difference(server, before, after, "digits")
        assert server == "torchserve" and stats.requests == 10 and stats.failures == 0
        assert stats.request_ms > 0 and stats.queue_ms >= 0 and stats.mean_batch is None


@pytest.mark.skipif(bool(java_missing_reason()), reason=java_missing_reason() or "ready")
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


def test_the_handler_answers_under_torchserves_json_envelope(digits_onnx):
    """Vertex AI's prebuilt PyTorch container runs TorchServe with ``service_envelope=json``:
    the envelope unwraps the instances, and the handler gets one instance per item (a list for
    a one-input model). Run through TorchServe's own JSONEnvelope class."""
    import json

    import numpy as np
    from ts.torch_handler.request_envelope.json import JSONEnvelope

    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.torchserve import handler

    service = handler.KfpServeHandler()
    service.runner = handler.ModelRunner(str(digits_onnx))
    golden = GoldenSet.load(digits_onnx)
    name = service.runner.input_names[0]
    rows = golden.inputs[name].tolist()
    envelope = JSONEnvelope(service.handle)
    answers = envelope.handle([{"body": {"instances": rows[:3]}}, {"body": {"instances": rows[3:5]}}], None)
    predictions = [json.loads(answer)["predictions"] for answer in answers]
    assert [len(p) for p in predictions] == [3, 2]
    expected = golden.outputs[service.runner.output_names[0]][:5]
    assert np.allclose(np.asarray(predictions[0] + predictions[1]), expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"kfp-serve handler: input .image. has shape \[1, 2\]"):
        envelope.handle([{"body": {"instances": [[1.0, 2.0]]}}], None)
