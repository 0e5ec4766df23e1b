import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.triton.config import (
    InstanceKind,
    TritonModelOptions,
    build_config,
    parse_pbtxt,
    to_pbtxt,
    validate_model_name,
)

SIGNATURE = ModelSignature(
    inputs=(TensorSpec("image", "float32", ("batch", 1, 8, 8)), TensorSpec("ids", "int64", ("batch", "seq"))),
    outputs=(TensorSpec("logits", "float32", ("batch", 10)),),
)


def test_batched_config_leaves_the_batch_dim_to_triton():
    config = build_config("digits", "onnx", SIGNATURE, TritonModelOptions(max_batch_size=16,
                                                                         preferred_batch_sizes=(4, 8)))
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [list(i.dims) for i in config.input] == [[1, 8, 8], [-1]]
    assert list(config.output[0].dims) == [10]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    text = to_pbtxt(config)
    assert 'data_type: TYPE_INT64' in text
    assert parse_pbtxt(text) == config


def test_unbatched_config_keeps_every_dim():
    config = build_config("digits", "onnx", SIGNATURE, TritonModelOptions(max_batch_size=0))
    assert list(config.input[0].dims) == [-1, 1, 8, 8]
    assert not config.HasField("dynamic_batching")


def test_torchscript_platform_and_gpu_instances():
    config = build_config("m", "torchscript", SIGNATURE,
                          TritonModelOptions(instance_kind="KIND_GPU", instance_count=2))
    assert config.platform == "pytorch_libtorch"
    assert config.default_model_filename == "model.pt"
    assert config.instance_group[0].count == 2
    assert "KIND_GPU" in to_pbtxt(config)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 8, "preferred_batch_sizes": (4, 16)}, r"preferred batch sizes \[16\]"),
        ({"max_batch_size": -1}, "max_batch_size must be >= 0"),
        ({"instance_kind": "KIND_TPU"}, "instance kind 'KIND_TPU' is not valid"),
        ({"instance_count": 0}, "instance_count must be >= 1"),
        ({"version_policy": "newest"}, "version policy 'newest' is not valid"),
        ({"dynamic_batching": False, "preferred_batch_sizes": (8,)}, "preferred batch sizes belong to dynamic"),
    ],
)
def test_bad_options_are_refused_when_they_are_made(options, message):
    with pytest.raises(UserError, match=message):
        TritonModelOptions(**options)


def test_options_survive_plain_data_and_take_tuned_settings_but_keep_the_kind_asked():
    tuned = TritonModelOptions(max_batch_size=8, preferred_batch_sizes=(8,), instance_count=3,
                               parameters={"intra_op_thread_count": "1"}, instance_kind="KIND_CPU")
    assert TritonModelOptions.from_dict(tuned.to_dict()) == tuned
    asked = TritonModelOptions(instance_kind="KIND_GPU", version_policy="all", warmup=True)
    merged = asked.with_tuned(tuned)
    assert (merged.max_batch_size, merged.preferred_batch_sizes, merged.instance_count) == (8, (8,), 3)
    assert (merged.instance_kind, merged.version_policy, merged.warmup) == (InstanceKind.GPU, "all", True)


def test_batching_needs_a_batch_dim():
    fixed = ModelSignature((TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (2,)),))
    with pytest.raises(UserError, match="set max_batch_size=0"):
        build_config("m", "onnx", fixed, TritonModelOptions(max_batch_size=4))


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a b", "x" * 129, "a/b"])
def test_invalid_model_names(name):
    with pytest.raises(UserError, match="is not valid for Triton"):
        validate_model_name(name)


def test_unknown_format_and_parse_error():
    with pytest.raises(UserError, match="model format 'tflite' is not supported"):
        build_config("m", "tflite", SIGNATURE, TritonModelOptions())
    with pytest.raises(UserError, match="config.pbtxt does not parse"):
        parse_pbtxt("name: 'm'\nmax_batch_siz: 3")
