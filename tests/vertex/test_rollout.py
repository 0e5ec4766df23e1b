"""deploy/promote/rollback on Vertex AI against a behavioural fake of its REST API that serves for
real (local Triton, TorchServe) from fake-gcs-server."""

import uuid

import pytest
from support import requires
from support.vertex import vertex_spec, vertex_target

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.storage.publish import publish
from kfp_serve.components.validate.validation import validate
from kfp_serve.components.vertex import rollout as vertex


def test_deploy_canary_validate_promote_and_rollback_on_triton(fake_vertex, published_repository,
                                                               digits_onnx, digits_repository):
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    first = vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert first.traffic == {first.deployed_model_id: 100} and first.previous_traffic == {}
    assert first.protocol == "vertex-raw"
    result = validate(vertex_target(fake_vertex, first, signature), golden, max_batch_size=16)
    assert result.passed, result.failure_line()
    assert result.samples == golden.batch_size

    # a new version of the same model, as a 30 % canary: the split comes from the live state
    second_uri = publish(digits_repository, published_repository.rsplit("/", 1)[0]).uri
    assert second_uri.endswith("/v2")
    second = vertex.deploy(vertex_spec(second_uri, traffic_percentage=30), fake_vertex.url, 120, 0.2)
    assert second.model == first.model and second.model_version_id == "2"  # a version, not a model
    assert second.traffic == {first.deployed_model_id: 70, second.deployed_model_id: 30}
    target = vertex_target(fake_vertex, second, signature)
    canary = validate(target, golden, max_batch_size=8, load_seconds=0.5, concurrency=[2])
    assert canary.passed, canary.failure_line()
    # the load phase measured the canary alone: the first model's answers were counted apart
    [level] = canary.load
    assert level.requests > 0 and level.excluded > level.requests  # 70 % went to the first model
    assert "answered by other models (not counted)" in canary.markdown()
    # the golden phase says so only when the split did send it elsewhere (a few requests at
    # 30 %: all of them may reach the canary)
    sent_elsewhere = any(k != second.deployed_model_id for k in target.served_by)
    assert ("other deployed models" in canary.markdown()) == sent_elsewhere

    record = second.endpoint_record(vertex_spec(second_uri), fake_vertex.url, {})
    split = vertex.rollback(record, True, 60, 0.2)
    assert split == {first.deployed_model_id: 100}
    assert [d["id"] for d in fake_vertex.endpoints[second.endpoint.rsplit("/", 1)[-1]]["deployedModels"]] \
        == [first.deployed_model_id]

    third = vertex.deploy(vertex_spec(second_uri, traffic_percentage=10), fake_vertex.url, 120, 0.2)
    assert third.traffic == {first.deployed_model_id: 90, third.deployed_model_id: 10}
    versions = fake_vertex.models[first.model.rsplit("/", 1)[-1]]
    assert ["default" in v["versionAliases"] for v in versions] == [True, False]  # uploads leave it
    split = vertex.promote(third.endpoint_record(vertex_spec(second_uri), fake_vertex.url, {}), True, 60, 0.2)
    assert split == {third.deployed_model_id: 100}
    endpoint = fake_vertex.endpoints[third.endpoint.rsplit("/", 1)[-1]]
    assert [d["id"] for d in endpoint["deployedModels"]] == [third.deployed_model_id]
    assert fake_vertex.calls.count("upload") == 2  # the third deploy reused version 2
    assert ["default" in v["versionAliases"] for v in versions] == [False, True]  # promote moved it


def test_a_retry_resumes_instead_of_duplicating(fake_vertex, published_repository):
    fake_vertex.op_seconds = 2.5
    with pytest.raises(InfrastructureError, match=r"not done after 1s: still running; created"):
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=1, poll_s=0.2)
    # the step is retried while the first attempt's operation is still running
    fake_vertex.op_seconds = 0.1
    result = vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert fake_vertex.calls.count("upload") == 1
    assert fake_vertex.calls.count("create_endpoint") == 1
    assert fake_vertex.calls.count("deployModel") <= 1
    endpoint = fake_vertex.endpoints[result.endpoint.rsplit("/", 1)[-1]]
    assert len(endpoint["deployedModels"]) == 1
    assert any(r.startswith(("operation", "deployed model", "model version")) for r in result.reused)
    again = vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert again.deployed_model_id == result.deployed_model_id
    assert fake_vertex.calls.count("deployModel") <= 1


@requires("java")
def test_torchserve_archive_is_served_and_validated_through_predict(fake_vertex, gcs, digits_torchscript, tmp_path):
    """The prebuilt PyTorch container's way: its own TorchServe configuration, the JSON service
    envelope (the handler gets one instance per item), model.mar as "model"."""
    from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive

    build_archive(digits_torchscript, "torchscript", tmp_path / "ts", "digits",
                  ArchiveOptions(batch_size=4, max_batch_delay_ms=20))
    bucket = f"vertex-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)
    uri = publish(tmp_path / "ts", f"gs://{bucket}/digits-mar").uri
    result = vertex.deploy(vertex_spec(uri, content_kind="TorchServeArchive", serving_image=""),
                           fake_vertex.url, timeout_s=240, poll_s=0.5)
    assert result.protocol == "vertex-predict"
    uploaded = fake_vertex.models[result.model.rsplit("/", 1)[-1]][0]
    assert uploaded["containerSpec"]["imageUri"].startswith("us-docker.pkg.dev/vertex-ai/prediction/pytorch-cpu")
    assert uploaded["containerSpec"]["predictRoute"] == "/predictions/model"
    checked = validate(vertex_target(fake_vertex, result, ModelSignature.load(digits_torchscript)),
                       GoldenSet.load(digits_torchscript), max_batch_size=8)
    assert checked.passed, checked.failure_line()


def test_an_onnx_archive_is_refused_for_the_prebuilt_pytorch_container():
    spec = vertex_spec("gs://models-bucket/digits-mar/v1", content_kind="TorchServeArchive", serving_image="",
                 archive_format="onnx")
    with pytest.raises(UserError, match="an ONNX .mar cannot run on Vertex AI's prebuilt PyTorch container"):
        spec.check()
    vertex_spec("gs://models-bucket/digits-mar/v1", content_kind="TorchServeArchive", archive_format="onnx",
          serving_image="us-docker.pkg.dev/p/r/torchserve-onnx:1").check()  # an image of one's own
