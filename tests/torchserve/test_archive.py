"""TorchServe archives: built with torch-model-archiver, served by a real TorchServe."""

import concurrent.futures
import json
import urllib.request
import zipfile

import numpy as np
import pytest
from fakes.torchserve_runner import torchserve
from support import requires

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive
from kfp_serve.components.validate.server_metrics import difference, read_counters


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


@pytest.mark.server
@requires("java")
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
