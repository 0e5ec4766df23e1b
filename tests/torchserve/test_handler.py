"""The suite's TorchServe handler: KServe v1 / Vertex instances, Open Inference Protocol v2 and
TorchServe's JSON envelope, parsed and answered."""

import json

import numpy as np
import pytest

from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.torchserve.handler import RequestError, format_response, parse_request

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


def test_the_handler_answers_under_torchserves_json_envelope(digits_onnx):
    """Vertex AI's prebuilt PyTorch container runs TorchServe with ``service_envelope=json``:
    the envelope unwraps the instances, and the handler gets one instance per item (a list for
    a one-input model). Run through TorchServe's own JSONEnvelope class."""
    import json

    import numpy as np
    from ts.torch_handler.request_envelope.json import JSONEnvelope

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
