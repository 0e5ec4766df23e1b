"""TorchScript export: the saved trace or script, a trace of the exported program, freezing."""

import pytest

from kfp_serve.components.errors import UserError, VerificationError
from kfp_serve.components.export.torchscript_export import export_torchscript


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
