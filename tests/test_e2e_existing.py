"""deploy_existing_model end to end under kfp.local: a model trained elsewhere (a small text
encoder: two int64 inputs, dynamic batch and sequence), saved in the model contract, imported
with dsl.importer, exported, published, served by local Triton and validated."""

import pytest

from kfp_serve.pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def test_a_model_trained_elsewhere_is_imported_served_and_validated(tmp_path):
    from model_zoo import (
        build_text_encoder,
        text_encoder_inputs,
        text_encoder_signature,
    )

    from kfp_serve.components.model_artifact import save_torch_model

    saved = tmp_path / "my-encoder"
    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64), text_encoder_inputs(6, 12), saved)

    params = {"model_uri": str(saved), "publish_destination": str(tmp_path / "serving"),
              "model_name": "encoder"}
    result = run_local("deploy_existing_model", tmp_path / "runs", params)
    assert result.succeeded, result.error
    report = next(p for p in result.summary_paths if p.parent.name == "validate-endpoint")
    text = report.read_text()
    assert "Endpoint validation: PASSED" in text and "model `encoder`" in text
    assert (tmp_path / "serving" / "v1").is_dir()


def test_a_folder_outside_the_model_contract_is_a_clear_error(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "weights.bin").write_bytes(b"\0" * 16)
    params = {"model_uri": str(tmp_path / "not-a-model"), "publish_destination": str(tmp_path / "serving")}
    result = run_local("deploy_existing_model", tmp_path / "runs", params)
    assert not result.succeeded
    assert "export-onnx" in result.error
