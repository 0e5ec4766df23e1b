"""TensorRT: the build plan is tested everywhere; the real build only on a GPU with TensorRT."""

import importlib.util

import pytest
from model_zoo import text_encoder_signature
from support import requires

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.export.tensorrt_export import export_tensorrt, optimization_profile
from kfp_serve.components.train.digits import SIGNATURE as DIGITS


def test_batch_profile_from_the_signature():
    profile = optimization_profile(DIGITS, 1, 8, 32)
    assert profile == {"image": ((1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8))}


def test_other_dynamic_dims_need_ranges():
    signature = text_encoder_signature(3, 64)
    with pytest.raises(UserError, match=r"input 'input_ids' has dynamic dim 'seq': give its range, e.g. dim_ranges=\{'seq'"):
        optimization_profile(signature, 1, 4, 16)
    profile = optimization_profile(signature, 1, 4, 16, {"seq": [1, 128, 512]})
    assert profile["attention_mask"] == ((1, 1), (4, 128), (16, 512))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 2, None), r"1 <= min \(0\) <= opt \(1\) <= max \(2\)"),
        ((1, 8, 4, None), r"opt \(8\) <= max \(4\)"),
        ((1, 2, 4, {"seq": [1, 2]}), r"dim range 'seq'=\[1, 2\] must be \[min, opt, max\]"),
        ((1, 2, 4, {"seq": [4, 2, 8]}), "1 <= min <= opt <= max"),
    ],
)
def test_bad_profiles(args, message):
    with pytest.raises(UserError, match=message):
        optimization_profile(text_encoder_signature(3, 64), *args)


def test_bad_precision_and_workspace(digits_onnx, tmp_path):
    with pytest.raises(UserError, match="int8 needs calibration data"):
        export_tensorrt(digits_onnx, tmp_path / "trt", precision="int8")
    with pytest.raises(UserError, match="precision 'bf8' is not supported"):
        export_tensorrt(digits_onnx, tmp_path / "trt", precision="bf8")
    with pytest.raises(UserError, match="workspace_mib=1 is too small"):
        export_tensorrt(digits_onnx, tmp_path / "trt", workspace_mib=1)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_error_says_where_it_runs(digits_onnx, tmp_path):
    with pytest.raises(InfrastructureError, match="TensorRT is not installed here: .*Dockerfile.gpu"):
        export_tensorrt(digits_onnx, tmp_path / "trt")
    assert not (tmp_path / "trt").exists()


@pytest.mark.gpu
@requires("tensorrt")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_build_and_verification(digits_onnx, tmp_path, precision):
    atol = 1e-3 if precision == "fp32" else 5e-2
    result = export_tensorrt(digits_onnx, tmp_path / "trt", precision=precision, max_batch=16,
                             atol=atol, rtol=atol)
    assert result.path.name == "model.plan" and (tmp_path / "trt" / "timing.cache").is_file()
    assert sorted(result.comparisons) == [1, 16]
