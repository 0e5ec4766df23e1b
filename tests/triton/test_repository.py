"""Triton repositories for every export format, served by a real Triton server where possible."""

import json
import shutil

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local import triton_server
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.triton.config import (
    TritonModelOptions,
    parse_pbtxt,
    parse_version_policy,
)
from kfp_serve.components.triton.repository import (
    ModelEntry,
    build_multi_model_repository,
    build_repository,
)
from kfp_serve.components.validate.targets import OipRestTarget
from kfp_serve.components.validate.validation import validate


def test_torchscript_tensors_follow_the_pytorch_backend_convention(digits_torchscript, tmp_path):
    result = build_repository(digits_torchscript, "torchscript", tmp_path / "repo", "digits_ts",
                              TritonModelOptions(max_batch_size=16))
    config = parse_pbtxt((tmp_path / "repo" / "digits_ts" / "config.pbtxt").read_text())
    assert config.platform == "pytorch_libtorch" and config.default_model_filename == "model.pt"
    assert [i.name for i in config.input] == ["image__0"]
    assert [o.name for o in config.output] == ["logits__0"]
    assert result.tensor_names == {"image": "image__0", "logits": "logits__0"}
    assert (tmp_path / "repo" / "digits_ts" / "1" / "model.pt").is_file()


@pytest.mark.server
def test_one_server_serves_onnx_and_torchscript_with_warmup(digits_onnx, digits_torchscript, tmp_path):
    options = TritonModelOptions(max_batch_size=16, warmup=True, version_policy="latest:1")
    result = build_multi_model_repository(
        [ModelEntry(digits_onnx, "onnx", "digits_onnx", options),
         ModelEntry(digits_torchscript, "torchscript", "digits_ts", options)],
        tmp_path / "repo",
    )
    assert result.model_name == "digits_onnx"
    warmup = parse_pbtxt((tmp_path / "repo" / "digits_ts" / "config.pbtxt").read_text()).model_warmup[0]
    assert warmup.inputs["image__0"].input_data_file == "image__0.bin"
    assert (tmp_path / "repo" / "digits_ts" / "warmup" / "image__0.bin").stat().st_size == 64 * 4
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    record = triton_server.start_server(tmp_path / "repo", "digits_onnx", "two-models")
    try:
        onnx = validate(OipRestTarget(record.url, "digits_onnx", signature), golden, max_batch_size=5)
        ts = validate(OipRestTarget(record.url, "digits_ts", signature,
                                    {"image": "image__0", "logits": "logits__0"}),
                      golden, max_batch_size=5)
    finally:
        triton_server.stop_server(record)
    assert onnx.passed, onnx.failure_line()
    assert ts.passed, ts.failure_line()
    assert ts.comparisons[0].max_abs_error < 1e-4


def test_tensorrt_repository_and_the_local_runtime_refusing_it(digits_onnx, tmp_path):
    engine = tmp_path / "trt"
    shutil.copytree(digits_onnx, engine)
    (engine / "model.plan").write_bytes(b"a serialized engine")
    build_repository(engine, "tensorrt", tmp_path / "repo", "digits_trt",
                     TritonModelOptions(instance_kind="KIND_GPU"))
    config = parse_pbtxt((tmp_path / "repo" / "digits_trt" / "config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == 1  # KIND_GPU
    with pytest.raises(UserError, match="the local runtime serves .*'digits_trt' is 'tensorrt_plan'"):
        triton_server.start_server(tmp_path / "repo", "digits_trt", "trt")


def test_config_is_checked_against_the_model_file(digits_onnx, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(digits_onnx, wrong)
    signature = json.loads((wrong / "signature.json").read_text())
    signature["outputs"][0]["dims"] = ["batch", 12]
    (wrong / "signature.json").write_text(json.dumps(signature))
    golden = GoldenSet.load(wrong)
    golden.outputs["logits"] = golden.outputs["logits"].repeat(2, axis=1)[:, :12]
    golden.save(wrong)
    with pytest.raises(UserError, match="ONNX output 'logits' dim 1 is 10, the signature says 12"):
        build_repository(wrong, "onnx", tmp_path / "repo", "m", TritonModelOptions())
    assert not (tmp_path / "repo").exists()
    (wrong / "model.onnx").unlink()
    with pytest.raises(UserError, match="model.onnx is missing"):
        build_repository(wrong, "onnx", tmp_path / "repo", "m", TritonModelOptions())


def test_duplicate_names_and_bad_versions(digits_onnx, tmp_path):
    entry = ModelEntry(digits_onnx, "onnx", "same", TritonModelOptions())
    with pytest.raises(UserError, match="model names in one repository must differ"):
        build_multi_model_repository([entry, entry], tmp_path / "repo")
    with pytest.raises(UserError, match="version 0 must be >= 1"):
        build_repository(digits_onnx, "onnx", tmp_path / "repo", "m", TritonModelOptions(), version=0)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [("latest", "latest", 1), ("latest:3", "latest", 3), ("all", "all", None),
     ("specific:1,4", "specific", [1, 4])],
)
def test_version_policies(text, field, value):
    policy = parse_version_policy(text)
    assert policy.WhichOneof("policy_choice") == field
    if field == "latest":
        assert policy.latest.num_versions == value
    if field == "specific":
        assert list(policy.specific.versions) == value


def test_bad_version_policy():
    with pytest.raises(UserError, match="version policy 'newest' is not valid"):
        parse_version_policy("newest")
