"""Every export format on a multi-input transformer and on the digits CNN, and its bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from model_zoo import (
    build_text_encoder,
    text_encoder_inputs,
    text_encoder_signature,
)

from kfp_serve.components.errors import UserError, VerificationError
from kfp_serve.components.export.onnx_export import export_onnx, onnxruntime_session
from kfp_serve.components.export.torchscript_export import export_torchscript
from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.signature import ModelSignature, TensorSpec


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """Two named inputs (int64 ids, float mask), dynamic batch and sequence, two outputs."""
    path = tmp_path_factory.mktemp("text") / "model"
    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64),
                     text_encoder_inputs(4, 12), path, torchscript="script")
    return path


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


def test_scripted_transformer_exports_to_torchscript(text_model, tmp_path):
    result = export_torchscript(text_model, tmp_path / "ts", method="saved")
    assert result.path.name == "model.pt"
    assert all(c.passed for cs in result.comparisons.values() for c in cs)
    assert "- method: saved\n- source: model.ts, script" in result.markdown()


def test_a_trace_that_fixed_the_shapes_is_caught(text_model, tmp_path):
    with pytest.raises(VerificationError, match=r"\(trace_program\) failed at batch size 1: .*use"
                                                r" method='saved' or 'auto'"):
        export_torchscript(text_model, tmp_path / "ts", method="trace_program")
    assert list(tmp_path.iterdir()) == []


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


def test_digits_torchscript_variants(digits_model, tmp_path):
    frozen = export_torchscript(digits_model, tmp_path / "frozen", method="trace_program", freeze=True)
    assert frozen.details["frozen"] == "True"
    with pytest.raises(UserError, match="does not survive save and reload.*optimize_for_inference=False"):
        export_torchscript(digits_model, tmp_path / "opt", optimize_for_inference=True)
    assert not (tmp_path / "opt").exists()
    with pytest.raises(UserError, match="needs freeze=True"):
        export_torchscript(digits_model, tmp_path / "x", freeze=False, optimize_for_inference=True)
    with pytest.raises(UserError, match="method 'compile' is not known"):
        export_torchscript(digits_model, tmp_path / "x", method="compile")
    with pytest.raises(UserError, match="method 'script' is not known; use one of"
                                        r" \['auto', 'saved', 'trace_program'\]"):
        export_torchscript(digits_model, tmp_path / "x", method="script")
    with pytest.raises(UserError, match="method 'trace' is now 'trace_program' \\(it traces the exported"):
        export_torchscript(digits_model, tmp_path / "x", method="trace")


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
    with pytest.raises(UserError, match=r"no ONNX mapping: kfpserve_test\.wobble\.default; replace"):
        export_onnx(tmp_path / "m", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


class Divider(torch.nn.Module):
    def forward(self, x):
        return x / 0.0


def test_nan_or_inf_reference_outputs_are_refused(tmp_path):
    with pytest.raises(UserError, match="produced NaN/Inf in output 'y' on the golden inputs"):
        save_torch_model(Divider(), SMALL, {"x": np.ones((2, 4), np.float32)}, tmp_path / "m")


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
