"""Format profiling: each runtime in its own process, a recommendation packaging can take."""

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.export.profile import (
    Measurement,
    profile_formats,
    recommend,
    recommend_with_reason,
)


def test_profiles_every_format_until_stable(digits_model, digits_onnx, digits_torchscript):
    result = profile_formats({"eager": digits_model, "torchscript": digits_torchscript,
                              "onnx": digits_onnx}, [1, 4], seconds_per_batch=1.0, threads=1)
    assert [(m.model_format, m.batch_size) for m in result.measurements] == [
        ("eager", 1), ("eager", 4), ("torchscript", 1), ("torchscript", 4), ("onnx", 1), ("onnx", 4)]
    assert all(m.iterations >= 3 and m.samples_per_s > 0 and m.p95_ms >= m.p50_ms
               for m in result.measurements)
    # a stable measurement ended on windows within 5%; one the cap ended says so
    assert all(m.spread <= 0.05 for m in result.measurements if m.stable)
    assert result.recommended in ("onnx", "torchscript") and result.reason
    assert "| onnx | 4 |" in result.markdown() and "recommended for serving" in result.markdown()


def test_a_budget_caps_every_measurement(digits_onnx):
    result = profile_formats({"onnx": digits_onnx}, [1, 2, 4, 8], seconds_per_batch=5.0,
                             budget_s=0.4)
    # 4 measurements in a 0.4 s budget: each capped at 0.1 s (two windows at least), plus the
    # worker's start; far below 4 x 5 s
    assert result.seconds < 15 and len(result.measurements) == 4


def test_formats_within_the_noise_are_a_tie_that_onnx_wins():
    """The documented rule keeps the recommendation steady when the formats trade places inside
    the noise (25 vs 27 samples/s flipped the transformer's recommendation run to run)."""
    def measured(ts: float, onnx: float, spread: float = 0.02) -> list:
        return [Measurement("torchscript", 8, 9, 1.0, 1.0, ts, spread),
                Measurement("onnx", 8, 9, 1.0, 1.0, onnx, spread)]

    for ts, onnx in ((27.0, 25.0), (25.0, 27.0)):
        recommended, reason = recommend_with_reason(measured(ts, onnx))
        assert recommended == "onnx" and reason.startswith("a tie at batch 8")
    assert recommend_with_reason(measured(40.0, 25.0))[0] == "torchscript"  # 38% apart: a winner
    # measured spreads wider than 10% widen the tie
    assert recommend_with_reason(measured(30.0, 25.0, spread=0.10))[0] == "onnx"
    assert recommend_with_reason(measured(30.0, 25.0, spread=0.02))[0] == "torchscript"


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
