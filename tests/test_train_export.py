"""Training and ONNX export with real torch, onnx and onnxruntime."""

import json
import shutil

import numpy as np
import onnx
import pytest

from kfp_serve.components.errors import UserError, VerificationError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.model_artifact import open_model
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.train.digits import load_digits_split, train_digits


def test_model_artifact_round_trip(digits_model):
    artifact = open_model(digits_model)
    program, signature, golden = artifact.program(), artifact.signature, artifact.golden
    assert signature.input_names == ["image"] and signature.output_names == ["logits"]
    assert golden.batch_size == 16
    module = program.module()
    import torch

    for batch in (1, 3, 16):  # the exported program kept the batch dim dynamic
        [out] = module(torch.from_numpy(golden.inputs["image"][:batch]))  # a tuple, signature order
        out = out.detach().numpy()
        np.testing.assert_allclose(out, golden.outputs["logits"][:batch], atol=1e-4)
    # the golden outputs are the model's real predictions: the held-out images they come from
    # (the first 16 of the seed-0 test split) are classified right, as training's gate demands
    _, _, x_test, y_test = load_digits_split(seed=0)
    np.testing.assert_array_equal(golden.inputs["image"], x_test[:16])
    assert (golden.outputs["logits"].argmax(axis=1) == y_test[:16]).mean() >= 0.9


def test_accuracy_gate_fails_training(tmp_path):
    with pytest.raises(UserError, match=r"test accuracy 0\.\d+ is below min_accuracy=0.999"):
        train_digits(tmp_path / "m", epochs=1, min_accuracy=0.999)
    assert not (tmp_path / "m").exists()


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
    assert not (tmp_path / "out").exists()


def test_signature_that_disagrees_with_the_model(digits_model, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(digits_model, wrong)
    data = json.loads((wrong / "signature.json").read_text())
    data["inputs"][0]["dims"] = ["batch", 64]
    (wrong / "signature.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"golden input 'image' is float32\[16, 1, 8, 8\] but the"
                                        r" signature says float32\['batch', 64\]"):
        export_onnx(wrong, tmp_path / "out")


def test_export_keeps_signature_and_golden(digits_onnx, digits_model):
    assert ModelSignature.load(digits_onnx) == ModelSignature.load(digits_model)
    np.testing.assert_array_equal(GoldenSet.load(digits_onnx).inputs["image"],
                                  GoldenSet.load(digits_model).inputs["image"])
