"""Several models in one Triton repository: packed from published versions, served by one
local Triton, each validated against its own golden set."""

import pytest

from kfp_serve.components.errors import UserError


@pytest.fixture(scope="module")
def two_published(digits_repository, digits_torchscript, tmp_path_factory):
    from kfp_serve.components.storage.publish import publish
    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    root = tmp_path_factory.mktemp("pack")
    scripted = build_repository(digits_torchscript, "torchscript", root / "ts-repo", "digits_ts",
                                TritonModelOptions(max_batch_size=8))
    uris = [publish(digits_repository, str(root / "store" / "digits")).uri,
            publish(scripted.repository, str(root / "store" / "digits_ts")).uri]
    return uris, scripted.tensor_names  # TorchScript is served as INPUT__0/OUTPUT__0


@pytest.mark.server
def test_two_models_share_one_server_and_both_validate(two_published, digits_onnx, digits_torchscript, tmp_path):
    uris, scripted_names = two_published
    from kfp import dsl

    from kfp_serve.components import pack_triton_repositories
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.local.triton_server import start_server, stop_server
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.validate.targets import OipRestTarget
    from kfp_serve.components.validate.validation import validate

    packed = dsl.Artifact(name="repository", uri=str(tmp_path / "packed"))
    pack_triton_repositories.python_func(published_uris=uris, repository=packed,
                                         instance_counts={"digits": 2}, instance_kind="KIND_CPU")
    assert packed.metadata["models"] == ["digits", "digits_ts"] and packed.metadata["model_name"] == "digits"
    assert packed.metadata["onnx_ir_version"] >= 9
    config = (tmp_path / "packed" / "digits" / "config.pbtxt").read_text()
    assert "count: 2" in config and "KIND_CPU" in config
    record = start_server(tmp_path / "packed", "digits", "packed-test", timeout_s=120)
    try:
        for name, model_dir, names, batch in (("digits", digits_onnx, None, 0),
                                              ("digits_ts", digits_torchscript, scripted_names, 8)):
            result = validate(OipRestTarget(record.url, name, ModelSignature.load(model_dir), names),
                              GoldenSet.load(model_dir), max_batch_size=batch, load_seconds=0.3,
                              concurrency=[1, 2])
            assert result.passed, f"{name}: {result.failure_line()}"
    finally:
        stop_server(record)


def test_packing_refuses_what_cannot_be_served(two_published, digits_repository, tmp_path):
    from kfp_serve.components.storage.fetch import fetch_version
    from kfp_serve.components.triton.pack import pack_repositories

    uris, _ = two_published
    first = fetch_version(uris[0], tmp_path / "a")
    with pytest.raises(UserError, match="model 'digits' is in two of the repositories"):
        pack_repositories([first, digits_repository], tmp_path / "out")
    second = fetch_version(uris[1], tmp_path / "b")
    with pytest.raises(UserError, match=r"instance_counts names \['other'\], which are not among the models"):
        pack_repositories([first, second], tmp_path / "out", {"other": 1})
    with pytest.raises(UserError, match="packing needs at least two repositories"):
        pack_repositories([first], tmp_path / "out")
    assert not (tmp_path / "out").exists()
