"""The model signature: names, dtypes, dims, their mappings and their files."""

import json

import pytest
from support import make_signature

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import (
    ModelSignature,
    TensorSpec,
    dtype_from_protocol,
    protocol_dtype,
    triton_config_dtype,
)


def test_round_trip_through_json(tmp_path):
    signature = make_signature(task="demo")
    signature.save(tmp_path)
    loaded = ModelSignature.load(tmp_path)
    assert loaded == signature
    assert loaded.metadata == {"task": "demo"}
    assert json.loads((tmp_path / "signature.json").read_text())["inputs"][0]["dims"] == ["batch", "seq"]


def test_batched_and_unknown_dims():
    signature = make_signature()
    assert signature.batched
    assert signature.inputs[0].shape_with_unknowns() == [-1, -1]
    assert signature.outputs[0].shape_with_unknowns() == [-1, 3]
    unbatched = ModelSignature((TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (2,)),))
    assert not unbatched.batched


def test_matches_shape():
    spec = TensorSpec("x", "float32", ("batch", 1, 8, 8))
    assert spec.matches_shape((5, 1, 8, 8))
    assert not spec.matches_shape((5, 8, 8))
    assert not spec.matches_shape((5, 1, 8, 9))


def test_dtype_mappings():
    assert triton_config_dtype("float32") == "TYPE_FP32"
    assert protocol_dtype("int64") == "INT64"
    assert dtype_from_protocol("FP16") == "float16"
    with pytest.raises(UserError, match="unsupported tensor datatype 'BYTES'"):
        dtype_from_protocol("BYTES")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x y", "dtype": "float32", "dims": (1,)}, "tensor name 'x y' is not valid"),
        ({"name": "x", "dtype": "complex64", "dims": (1,)}, "has dtype 'complex64'; use one of"),
        ({"name": "x", "dtype": "float32", "dims": (0,)}, "fixed dim 0 must be >= 1"),
        ({"name": "x", "dtype": "float32", "dims": (1.5,)}, "must be an int or a name"),
    ],
)
def test_bad_tensor_specs(kwargs, message):
    with pytest.raises(UserError, match=message):
        TensorSpec(**kwargs)


def test_duplicate_names_and_empty_sides():
    x = TensorSpec("x", "float32", ("batch",))
    with pytest.raises(UserError, match=r"unique across inputs and outputs: \['x'\]"):
        ModelSignature((x,), (x,))
    with pytest.raises(UserError, match="at least one input and one output"):
        ModelSignature((x,), ())


def test_missing_and_corrupt_signature_files(tmp_path):
    with pytest.raises(UserError, match="signature.json is missing"):
        ModelSignature.load(tmp_path)
    (tmp_path / "signature.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        ModelSignature.load(tmp_path)
    (tmp_path / "signature.json").write_text('{"inputs": []}')
    with pytest.raises(UserError, match="'inputs' and 'outputs'"):
        ModelSignature.load(tmp_path)


LOGITS = TensorSpec("logits", "float32", ("batch", "seq", 300), masked_by="attention_mask")
IDS = TensorSpec("input_ids", "int64", ("batch", "seq"))
MASK = TensorSpec("attention_mask", "int64", ("batch", "seq"))


def test_an_output_masked_by_an_input_round_trips_and_unmasked_files_are_unchanged(tmp_path):
    signature = ModelSignature((IDS, MASK), (LOGITS,))
    signature.save(tmp_path)
    assert ModelSignature.load(tmp_path).output("logits").masked_by == "attention_mask"
    assert "masked_by" not in json.dumps(ModelSignature((IDS, MASK), (TensorSpec(
        "pooled", "float32", ("batch", 8)),)).to_dict())


@pytest.mark.parametrize(("inputs", "outputs", "message"), [
    ((IDS,), (LOGITS,), r"output 'logits' is masked_by 'attention_mask', which is not an input;"
                        r" use one of \['input_ids'\]"),
    ((IDS, TensorSpec("attention_mask", "int64", ("batch", 7))), (LOGITS,),
     r"the mask's dims \['batch', 7\] do not lead the output's \['batch', 'seq', 300\]"),
    ((TensorSpec("x", "float32", ("batch",), masked_by="x"),), (LOGITS,),
     r"input 'x' has masked_by; only outputs are masked"),
])
def test_a_mask_must_be_an_input_whose_dims_lead_the_output(inputs, outputs, message):
    with pytest.raises(UserError, match=message):
        ModelSignature(inputs, outputs)
