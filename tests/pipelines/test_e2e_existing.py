"""deploy_existing_model end to end under kfp.local: a model trained elsewhere (a small text
encoder: two int64 inputs, dynamic batch and sequence), saved in the model contract, imported
with dsl.importer, exported, published, served by local Triton and validated."""

import pytest

from kfp_serve.pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def test_a_model_trained_elsewhere_is_imported_served_and_validated(tmp_path, gcs):
    """From gs:// as users keep models (here fake-gcs-server): kfp.local gives the importer's
    artifact the path /gcs/..., which exists only where KFP mounts buckets; the steps copy the
    objects instead (this failed, blaming a /gcs/... path the user never typed)."""
    from model_zoo import (
        build_text_encoder,
        text_encoder_inputs,
        text_encoder_signature,
    )

    from kfp_serve.components.model_artifact import save_torch_model
    from kfp_serve.components.storage.gcs_store import storage_client

    saved = tmp_path / "my-encoder"
    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64), text_encoder_inputs(6, 12), saved)
    bucket = storage_client().create_bucket("byom-models")
    for path in saved.rglob("*"):
        if path.is_file():
            bucket.blob(f"team/encoder/{path.relative_to(saved)}").upload_from_filename(str(path))

    params = {"model_uri": "gs://byom-models/team/encoder",
              "publish_destination": str(tmp_path / "serving"), "model_name": "encoder"}
    result = run_local("deploy_existing_model", tmp_path / "runs", params)
    assert result.succeeded, result.error
    report = next(p for p in result.summary_paths if p.parent.name == "validate-endpoint")
    text = report.read_text()
    assert "Endpoint validation: PASSED" in text and "model `encoder`" in text
    assert (tmp_path / "serving" / "v1").is_dir()


@pytest.mark.parametrize(("zoo_name", "served_as", "transport"), [
    ("packed_lstm", "pytorch_libtorch", "rest"),  # no ONNX route: TorchScript, by default
    ("float16_mlp", "onnxruntime_onnx", "rest-binary"),  # float16: binary tensors, by default
])
def test_models_the_defaults_once_could_not_serve_are_served(tmp_path, zoo_name, served_as, transport):
    from model_zoo import ZOO

    from kfp_serve.components.model_artifact import save_torch_model

    entry = next(e for e in ZOO if e.name == zoo_name)
    save_torch_model(entry.build(), entry.signature, entry.example(4), tmp_path / "model")
    params = {"model_uri": str(tmp_path / "model"), "publish_destination": str(tmp_path / "serving"),
              "model_name": zoo_name, "max_batch_size": entry.triton_max_batch_size}
    result = run_local("deploy_existing_model", tmp_path / "runs", params)
    assert result.succeeded, result.error
    config = (tmp_path / "serving" / "v1" / zoo_name / "config.pbtxt").read_text()
    assert f'platform: "{served_as}"' in config or f'backend: "{served_as.split("_")[0]}' in config
    text = next(p for p in result.summary_paths if p.parent.name == "validate-endpoint").read_text()
    assert "Endpoint validation: PASSED" in text and f"## Load ({transport})" in text


def test_a_folder_outside_the_model_contract_is_a_clear_error(tmp_path, capfd):
    """Run as a user would (the CLI): the failing step's own one-line error is the last line on
    stderr, and the exit code says it is the input (2), not "task failed" (1)."""
    from kfp_serve.pipelines.cli import main

    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "weights.bin").write_bytes(b"\0" * 16)
    code = main(["run", "deploy_existing_model", "--output", str(tmp_path / "runs"),
                 "--param", f"model_uri={tmp_path / 'not-a-model'}",
                 "--param", f"publish_destination={tmp_path / 'serving'}"])
    captured = capfd.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2
    assert err[-1] == (f"error: step export_model: {tmp_path}/not-a-model/model.pt2 is missing; the"
                       " model artifact must hold a torch.export program written by save_torch_model")
    # the step's own log (kfp.local relays it) ends with the same line, where the Kubeflow UI
    # shows it
    log = (captured.out + captured.err).splitlines()
    last = [line for line in log if "kfp-serve: error: " in line]
    assert len(last) == 1 and last[0].endswith("written by save_torch_model")
