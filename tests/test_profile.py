"""Format profiling: each runtime in its own process, a recommendation packaging can take."""

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.export.profile import Measurement, profile_formats, recommend


def test_profiles_every_format_in_its_own_process(digits_model, digits_onnx, digits_torchscript):
    result = profile_formats({"eager": digits_model, "torchscript": digits_torchscript,
                              "onnx": digits_onnx}, [1, 4], seconds_per_batch=0.2, threads=1)
    assert [(m.model_format, m.batch_size) for m in result.measurements] == [
        ("eager", 1), ("eager", 4), ("torchscript", 1), ("torchscript", 4), ("onnx", 1), ("onnx", 4)]
    assert all(m.iterations >= 5 and m.samples_per_s > 0 and m.p95_ms >= m.p50_ms
               for m in result.measurements)
    assert result.recommended in ("onnx", "torchscript")
    assert "| onnx | 4 |" in result.markdown()


def test_recommendation_ignores_formats_packaging_cannot_take():
    measurements = [
        Measurement("eager", 32, 10, 1.0, 1.0, 9e9),
        Measurement("torchscript", 32, 10, 1.0, 1.0, 200.0),
        Measurement("onnx", 32, 10, 1.0, 1.0, 100.0),
        Measurement("onnx", 1, 10, 1.0, 1.0, 1e6),
    ]
    assert recommend(measurements) == "torchscript"
    with pytest.raises(UserError, match="no servable format was profiled"):
        recommend(measurements[:1])


def test_bad_profile_requests(digits_onnx):
    with pytest.raises(UserError, match=r"cannot profile \['tflite'\]"):
        profile_formats({"tflite": digits_onnx}, [1])
    with pytest.raises(UserError, match="must be a non-empty list"):
        profile_formats({"onnx": digits_onnx}, [0])
