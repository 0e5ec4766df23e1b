"""The model contract a training step writes with save_torch_model: its bad inputs, each a
one-line error naming the fix, and the artifact read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_zoo import (
    ZOO,
)

from kfp_serve.components.errors import UserError
from kfp_serve.components.model_artifact import open_model, save_torch_model
from kfp_serve.components.signature import BATCH, ModelSignature, TensorSpec
from kfp_serve.components.train.digits import load_digits_split

MODELS = {z.name: z for z in ZOO}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_golden_input_of_another_dtype_names_it_and_the_fix(tmp_path):
    zoo = MODELS["multi_head"]
    example = {"features": zoo.example(4)["features"].double()}
    with pytest.raises(UserError) as err:
        save_torch_model(zoo.build(), zoo.signature, example, tmp_path / "m")
    assert _one_line(err) == ("golden input 'features' is float64 but the signature says float32;"
                              " convert it (e.g. .astype('float32')) or change the signature")
    assert not (tmp_path / "m").exists()


def test_a_golden_input_of_another_rank_names_both_shapes(tmp_path):
    zoo = MODELS["multi_head"]
    with pytest.raises(UserError) as err:
        save_torch_model(zoo.build(), zoo.signature, {"features": torch.zeros(4, 2, 16)}, tmp_path / "m")
    assert _one_line(err) == ("golden input 'features' has shape [4, 2, 16] but the signature says"
                              " ['batch', 16] (rank 2)")


def test_missing_or_extra_golden_inputs_are_named(tmp_path):
    zoo = MODELS["bert"]
    example = zoo.example(4)
    example.pop("token_type_ids")
    with pytest.raises(UserError, match=r"golden inputs are \['attention_mask', 'input_ids'\] but the"
                                        r" signature's inputs are \['input_ids', 'attention_mask',"
                                        r" 'token_type_ids'\]"):
        save_torch_model(zoo.build(), zoo.signature, example, tmp_path / "m")


def test_a_dynamic_dim_of_size_one_is_refused_before_torch_export_fixes_it(tmp_path):
    zoo = MODELS["gru"]
    with pytest.raises(UserError) as err:
        save_torch_model(zoo.build(), zoo.signature, {"tokens": torch.zeros(1, 12, dtype=torch.int64)},
                         tmp_path / "m")
    assert _one_line(err) == ("golden input 'tokens' has size 1 on its dynamic dim 'batch' (axis 0);"
                              " give it at least 2 (torch.export fixes a size-1 dim to 1)")


def test_a_signature_output_the_dict_does_not_hold_is_named_with_the_keys_it_has(tmp_path):
    zoo = MODELS["multi_head"]
    signature = ModelSignature(inputs=zoo.signature.inputs,
                               outputs=(TensorSpec("probs", "float32", (BATCH, 5)),
                                        TensorSpec("embedding", "float32", (BATCH, 8))))
    with pytest.raises(UserError) as err:
        save_torch_model(zoo.build(), signature, zoo.example(4), tmp_path / "m")
    assert _one_line(err) == ("the model's output has no ['probs'] (it returns ['embedding',"
                              " 'probabilities']); name the signature's outputs after the keys the"
                              " model returns")


def test_a_tuple_of_another_length_says_how_many(tmp_path):
    zoo = MODELS["resnet18"]
    signature = ModelSignature(inputs=zoo.signature.inputs,
                               outputs=(*zoo.signature.outputs, TensorSpec("extra", "float32", (BATCH, 1))))
    with pytest.raises(UserError, match=r"^the model returned 1 value\(s\) but the signature names"
                                        r" \['logits', 'extra'\]; return a tensor, a tuple in that"
                                        r" order or a dict by output name$"):
        save_torch_model(zoo.build(), signature, zoo.example(2), tmp_path / "m")


def test_a_dim_torch_export_cannot_keep_is_named_with_torchs_reason(tmp_path):
    """Without the TorchScript way in (torchscript=None), the GRU's sequence dim cannot be
    saved: the error names the input, the axis and the signature's dim, and keeps torch's own
    explanation instead of cutting it at a colon."""
    zoo = MODELS["gru"]
    with pytest.raises(UserError) as err:
        save_torch_model(zoo.build(), zoo.signature, zoo.example(4), tmp_path / "m", torchscript=None)
    assert _one_line(err) == (
        "torch.export cannot keep input 'tokens' dim 1 ('seq') dynamic: You marked"
        " L['args'][0].size()[1] as dynamic but your code specialized it to be a constant (12);"
        " TorchScript cannot take it either (not asked for (torchscript=None))")


def test_nan_references_are_refused(tmp_path):
    class Nan(torch.nn.Module):
        def forward(self, x):
            return x / 0.0 * 0.0

    signature = ModelSignature(inputs=(TensorSpec("x", "float32", (BATCH, 3)),),
                               outputs=(TensorSpec("y", "float32", (BATCH, 3)),))
    with pytest.raises(UserError, match="^the eager model produced NaN/Inf in output 'y' on the golden"
                                        " inputs; fix the model or choose other sample inputs$"):
        save_torch_model(Nan(), signature, {"x": np.ones((2, 3), np.float32)}, tmp_path / "m")


def test_an_explicit_torchscript_method_that_cannot_work_fails_loudly(tmp_path):
    zoo = MODELS["multi_head"]  # its dict output cannot be served by Triton's pytorch backend
    with pytest.raises(UserError, match="^torch.jit.script cannot take the model: the scripted module"
                                        " returns a dict or list, which Triton's pytorch backend"
                                        " refuses; return a tensor or a tuple$"):
        save_torch_model(zoo.build(), zoo.signature, zoo.example(4), tmp_path / "m", torchscript="script")


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


SMALL = ModelSignature((TensorSpec("x", "float32", ("batch", 4)),), (TensorSpec("y", "float32", ("batch", 4)),))


class Divider(torch.nn.Module):
    def forward(self, x):
        return x / 0.0


def test_nan_or_inf_reference_outputs_are_refused(tmp_path):
    with pytest.raises(UserError, match="produced NaN/Inf in output 'y' on the golden inputs"):
        save_torch_model(Divider(), SMALL, {"x": np.ones((2, 4), np.float32)}, tmp_path / "m")
