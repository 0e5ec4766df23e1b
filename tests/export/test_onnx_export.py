"""ONNX export with real torch, onnx and onnxruntime: verified at two batch sizes (and a second
sequence length), on the digits CNN and a multi-input transformer, and its bad input."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from model_zoo import (
    build_text_encoder,
    text_encoder_inputs,
)

from kfp_serve.components.errors import UserError, VerificationError
from kfp_serve.components.export.onnx_export import export_onnx, onnxruntime_session
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.signature import ModelSignature, TensorSpec


def test_onnx_export_is_verified_at_two_batch_sizes(digits_model, tmp_path):
    result = export_onnx(digits_model, tmp_path / "onnx", opset=18)
    assert list(result.comparisons) == ["batch 16", "batch 1"]
    for comparisons in result.comparisons.values():
        [logits] = comparisons
        assert logits.passed and logits.max_abs_error < 1e-4
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays dynamic
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [
        "golden.npz", "model.onnx", "signature.json"]
    assert "| `logits` |" in result.markdown()


def test_tolerance_exceeded_names_the_output_and_writes_nothing(digits_model, tmp_path):
    with pytest.raises(VerificationError, match=r"batch 16: logits: \d+/160 values exceed atol=0"):
        export_onnx(digits_model, tmp_path / "onnx", atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder


def test_unsupported_opset(digits_model, tmp_path):
    with pytest.raises(UserError, match="opset 17 is not supported; use 18-20"):
        export_onnx(digits_model, tmp_path / "onnx", opset=17)


def test_corrupt_and_missing_model_files(digits_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(digits_model, broken)
    data = (broken / "model.pt2").read_bytes()
    (broken / "model.pt2").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match=r"model.pt2 is not a loadable torch.export program .*re-save"):
        export_onnx(broken, tmp_path / "out")
    (broken / "model.pt2").write_text("this is not a model")
    with pytest.raises(UserError, match="is not a loadable torch.export program"):
        export_onnx(broken, tmp_path / "out")
    (broken / "model.pt2").unlink()
    (broken / "model.ts").unlink()
    with pytest.raises(UserError, match="model.pt2 is missing; the model artifact must hold"):
        export_onnx(broken, tmp_path / "out")
    # a model_uri that names nothing, or one file, says so (not "model.pt2 is missing")
    with pytest.raises(UserError, match=f"^{tmp_path}/nowhere does not exist; pass the folder"
                                        " save_torch_model wrote"):
        export_onnx(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(UserError, match=f"^{broken}/signature.json is a file; pass the folder"
                                        " save_torch_model wrote around it"):
        export_onnx(broken / "signature.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_keeps_signature_and_golden(digits_onnx, digits_model):
    assert ModelSignature.load(digits_onnx) == ModelSignature.load(digits_model)
    np.testing.assert_array_equal(GoldenSet.load(digits_onnx).inputs["image"],
                                  GoldenSet.load(digits_model).inputs["image"])


def test_onnx_keeps_batch_and_sequence_dynamic(text_model, tmp_path):
    result = export_onnx(text_model, tmp_path / "onnx")
    # batch 4 and 1, and the sequence cut from 12 to 8 (the golden set's resized variant)
    assert list(result.comparisons) == ["batch 4", "batch 1", "resized"]
    assert {c.name for c in result.comparisons["batch 4"]} == {"logits", "pooled"}
    assert "Other dynamic dims resized: `input_ids` [4, 8], `attention_mask` [4, 8]" in result.markdown()
    session = onnxruntime_session(result.path)
    inputs = text_encoder_inputs(3, 20, seed=7)  # another batch size AND sequence length
    logits, pooled = session.run(None, inputs)
    assert logits.shape == (3, 3) and pooled.shape == (3, 64)
    eager = build_text_encoder()(torch.from_numpy(inputs["input_ids"]),
                                 torch.from_numpy(inputs["attention_mask"]))
    np.testing.assert_allclose(logits, eager[0].detach().numpy(), atol=1e-4)
    metrics = result.metrics()
    assert set(metrics) >= {"logits_max_abs_error_batch4", "pooled_max_rel_error_batch1",
                            "logits_max_abs_error_resized"}


def test_legacy_exporter_names_the_op_it_cannot_map(text_model, tmp_path):
    with pytest.raises(UserError, match="operator\\(s\\) with no ONNX mapping: prim::is_nested"):
        export_onnx(text_model, tmp_path / "onnx", exporter="legacy")


def test_legacy_exporter_on_a_traced_cnn(digits_model, tmp_path):
    from kfp_serve.components.train.digits import SIGNATURE, build_model

    torch.manual_seed(0)
    save_torch_model(build_model(), SIGNATURE,
                     {"image": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)},
                     tmp_path / "m", torchscript="trace")
    result = export_onnx(tmp_path / "m", tmp_path / "onnx", exporter="legacy")
    assert result.details["exporter"] == "legacy" and list(result.comparisons) == ["batch 4", "batch 1"]
    save_torch_model(build_model(), SIGNATURE,
                     {"image": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)},
                     tmp_path / "no-ts", torchscript=None)
    with pytest.raises(UserError, match="model.ts is missing: it was saved with torchscript=None;"
                                        " serve the ONNX export"):
        export_onnx(tmp_path / "no-ts", tmp_path / "onnx2", exporter="legacy")


@torch.library.custom_op("kfpserve_test::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@wobble.register_fake
def _(x):
    return torch.empty_like(x)


class Wobbly(torch.nn.Module):
    def forward(self, x):
        return wobble(x) + 1


SMALL = ModelSignature((TensorSpec("x", "float32", ("batch", 4)),), (TensorSpec("y", "float32", ("batch", 4)),))


def test_an_op_without_onnx_mapping_is_named(tmp_path):
    save_torch_model(Wobbly(), SMALL, {"x": np.ones((2, 4), np.float32)}, tmp_path / "m")
    with pytest.raises(UserError) as raised:
        export_onnx(tmp_path / "m", tmp_path / "onnx")
    # both exporters were tried; each names the operator, and the line ends with what to do
    assert str(raised.value) == (
        "this model cannot be exported to ONNX: dynamo: operator(s) with no ONNX mapping:"
        " kfpserve_test.wobble.default; legacy: operator(s) with no ONNX mapping:"
        " kfpserve_test::wobble; replace those operators or register ONNX functions for them, or"
        " serve the TorchScript export (serving_format=torchscript)")
    assert not (tmp_path / "onnx").exists()


def test_wrong_file_type(digits_model, digits_onnx, tmp_path):
    fake = tmp_path / "fake"
    shutil.copytree(digits_model, fake)
    shutil.copy(digits_onnx / "model.onnx", fake / "model.pt2")  # an ONNX file named .pt2
    with pytest.raises(UserError, match="model.pt2 is not a loadable torch.export program"):
        export_onnx(fake, tmp_path / "out")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["inputs"][0].update(name="img"),
         r"golden set inputs \['image'\] do not match the signature's \['img'\]"),
        (lambda s: s["outputs"][0].update(dtype="float64"),
         r"golden output 'logits' is float32\[16, 10\] but the signature says float64"),
        (lambda s: s["inputs"][0].update(dims=["batch", 64]),
         r"golden input 'image' is float32\[16, 1, 8, 8\] but the signature says float32\['batch', 64\]"),
        (lambda s: s["outputs"].append({"name": "probs", "dtype": "float32", "dims": ["batch", 10]}),
         r"golden set outputs \['logits'\] do not match the signature's \['logits', 'probs'\]"),
    ],
)
def test_signature_that_disagrees_with_the_model(digits_model, tmp_path, edit, message):
    wrong = tmp_path / "wrong"
    shutil.copytree(digits_model, wrong)
    data = json.loads((wrong / "signature.json").read_text())
    edit(data)
    (wrong / "signature.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        export_onnx(wrong, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_exporter_and_tolerances(digits_model, tmp_path):
    with pytest.raises(UserError, match="exporter 'tvm' is not known"):
        export_onnx(digits_model, tmp_path / "o", exporter="tvm")
    with pytest.raises(UserError, match="atol and rtol must be >= 0"):
        export_onnx(digits_model, tmp_path / "o", atol=-1)


def test_an_empty_or_foreign_model_onnx_is_named_as_such(digits_onnx, tmp_path):
    """A 0-byte model.onnx parsed as an empty graph and was reported as "graph inputs []
    differ from the signature's"."""
    from kfp_serve.components.export.onnx_export import check_graph_against_signature

    signature = ModelSignature.load(digits_onnx)
    empty = tmp_path / "model.onnx"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"model.onnx is empty \(0 bytes\); export the model again"):
        check_graph_against_signature(empty, signature)
    empty.write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="model.onnx (is not an ONNX model|holds no ONNX graph)"):
        check_graph_against_signature(empty, signature)


@pytest.mark.parametrize(("change", "message"), [
    ("stale", r"golden.npz's output 'logits' is not what the model itself computes on its golden"
              r" inputs \(\d+ of \d+ values off .*\): the reference is stale"),
    ("nan", r"golden input 'image' holds 1 NaN or infinite value\(s\): no export can be checked"),
])
def test_a_broken_reference_is_not_blamed_on_the_export(digits_model, tmp_path, change, message):
    """A stale reference (the model changed after it was saved) or a NaN golden input was
    reported as "ONNX export disagrees with the eager model"."""
    model = tmp_path / "model"
    shutil.copytree(digits_model, model)
    arrays = dict(np.load(model / "golden.npz"))
    if change == "stale":
        arrays["output/logits"] = arrays["output/logits"] * 2 + 1
    else:
        arrays["input/image"].flat[7] = np.nan
    np.savez(model / "golden.npz", **arrays)
    with pytest.raises(UserError, match=message) as refused:
        export_onnx(model, tmp_path / "out")
    assert not isinstance(refused.value, VerificationError)
