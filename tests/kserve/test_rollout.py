"""Deploy, promote, roll back and delete through the real kubernetes client against the fake API
server, whose controller serves with a local Triton."""

from dataclasses import replace

import pytest
from support.kserve import cluster_for, make_spec, split_of, validates

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.kserve.manifest import (
    build_inference_service,
)
from kfp_serve.components.kserve.wait import expect_after, wait_ready
from kfp_serve.components.signature import ModelSignature


def test_knative_deploy_validate_canary_roll_back_promote_delete(kube, published, digits_onnx):
    from kfp_serve.components.kserve.rollout import deploy, promote, rollback

    _, url = kube
    cluster = cluster_for(url)
    # a canary percentage on the first deploy: KServe splits the one revision with itself
    first = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"], canary_traffic_percent=20)),
                   timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert first.created and first.mode == "Knative"
    # status.url is on the ingress domain; inside the cluster validation uses status.address.url
    assert first.url == "http://digits.models.example.com"
    assert first.internal_url.startswith("http://digits.models.svc.cluster.local:")
    # with tag routing the latest revision is validated at its own tagged address
    assert first.validation_url.startswith("http://latest-digits-predictor.models.svc.cluster.local:")
    assert first.latest_ready_revision == "digits-predictor-00001"
    assert any("runtimeVersion set to 24.05-py3" in note for note in first.notes)
    validates(first.validation_url, digits_onnx)
    # the same spec again: nothing to roll out
    again = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"], canary_traffic_percent=20)),
                   timeout_s=60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert {t["revisionName"] for t in again.traffic} == {"digits-predictor-00001"}

    canary = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"], canary_traffic_percent=20)),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert not canary.created and canary.latest_ready_revision == "digits-predictor-00002"
    assert split_of(canary) == [("digits-predictor-00002", 20), ("digits-predictor-00001", 80)]
    assert canary.canary_url == "http://latest-digits-predictor.models.example.com"
    assert canary.validation_url.startswith("http://latest-digits-predictor.models.svc.cluster.local:")
    validates(canary.validation_url, digits_onnx)

    service = KServeInferenceService(name="digits", namespace="models", model_name="digits", url="")
    rolled = rollback(service, 60, url)
    assert split_of(rolled) == [("digits-predictor-00002", 0), ("digits-predictor-00001", 100)]
    promoted = promote(service, 60, url)
    assert split_of(promoted) == [("digits-predictor-00002", 100)]

    assert cluster.delete("digits") is True
    assert cluster.get("digits") is None and cluster.delete("digits") is False


def test_standard_mode_rolls_out_validates_and_rolls_back_by_reapplying(kube, published, digits_onnx):
    from kfp_serve.components.kserve.rollout import deploy, promote, rollback

    api, url = kube
    cluster = cluster_for(url)
    spec = {"deployment_mode": "Standard", "runtime_version": "24.05-py3"}
    first = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"], **spec)),
                   timeout_s=120, poll_s=0.2)
    assert first.mode == "Standard" and first.traffic == [] and first.previous_predictor is None
    assert first.url == "http://digits-models.example.com"
    assert first.validation_url.startswith("http://digits-predictor.models.svc.cluster.local:")
    validates(first.validation_url, digits_onnx)

    api.controller.pause()  # a lagging controller: the Deployment still has the old template
    manifest = build_inference_service(make_spec(storage_uri=published["v2"], **spec))
    generation = cluster.generation("digits")
    before = cluster.apply(manifest)
    expect = expect_after(cluster, before, "digits", generation)
    with pytest.raises(InfrastructureError, match="the predictor Deployment is not updated yet"):
        wait_ready(cluster, "digits", 1, 0.2, expect)
    api.controller.resume()
    second = wait_ready(cluster, "digits", 120, 0.2, expect)
    assert cluster.deployment("digits")["metadata"]["generation"] == 2
    assert second.previous_predictor["model"]["storageUri"] == published["v1"]
    validates(second.validation_url, digits_onnx)

    service = KServeInferenceService(name="digits", namespace="models", model_name="digits", url="",
                                     mode="Standard", previous_predictor=second.previous_predictor)
    assert promote(service, 60, url).mode == "Standard"  # nothing to switch
    rollback(service, 120, url)
    assert cluster.get("digits")["spec"]["predictor"]["model"]["storageUri"] == published["v1"]
    assert cluster.deployment("digits")["metadata"]["generation"] == 3
    with pytest.raises(UserError, match="nothing to roll back to: InferenceService 'digits' was created by the deploy"):
        rollback(replace(service, previous_predictor=None), 10, url)


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [("missing-storage", UserError, r"ModelLoadFailed in storage-initializer: NoModelFound: Failed to fetch model\. No model found in gs://kserve-models/nothing/v9\."),
     ("broken-model", UserError, r"ModelLoadFailed in kserve-container: .*INVALID_PROTOBUF"),
     ("never-ready", InfrastructureError, r"not Ready after 2s: conditions: .*Ready=Unknown; latest created"
                                         r" revision digits-predictor-00001, latest ready none"),
     ("image-pull", InfrastructureError, r"cannot start: container kserve-container is ImagePullBackOff"),
     ("unschedulable", InfrastructureError, r"unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu")],
)
def test_failures_are_classified_diagnosed_and_cleaned_up(kube, published, case, error, message):
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    storage = {"missing-storage": "gs://kserve-models/nothing/v9", "broken-model": published["broken"]}
    behavior = {} if case in storage else {"fake.kserve.io/behavior": case}
    manifest = build_inference_service(make_spec(storage_uri=storage.get(case, published["v1"]),
                                                 annotations=behavior, gpus=1 if case == "unschedulable" else 0))
    with pytest.raises(DeployError, match=message) as caught:
        deploy(cluster_for(url), manifest, timeout_s=2 if case == "never-ready" else 60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert isinstance(caught.value.cause, error)
    report = caught.value.diagnostics
    assert "## Conditions" in report and "## Pods" in report and "## Warning events" in report
    if case == "missing-storage":
        assert "storage-initializer: terminated Error (exit 1)" in report
        assert "No model found in gs://kserve-models/nothing/v9" in report  # the initializer's log tail
    assert "has been deleted (keep_failed=False)" in report
    assert api.objects == {}


def test_keep_failed_keeps_the_service(kube, published):
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["broken"]))
    with pytest.raises(DeployError):
        deploy(cluster_for(url), manifest, timeout_s=60, poll_s=0.2, keep_failed=True, onnx_ir_version=published["ir"])
    assert ("models", "digits") in api.objects


def test_persistent_server_errors_end_as_one_line_with_diagnostics_and_cleanup(kube, published, monkeypatch):
    """A 503 that outlasts the retry budget while waiting: the deploy fails with one line, and
    the InferenceService it created is deleted (the path a connection error used to skip)."""
    from kfp_serve.components.kserve import rollout
    from kfp_serve.components.kserve.api import KServeCluster, api_client
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    cluster = KServeCluster(api_client(host=url), "models", retry_budget_s=1)
    manifest = build_inference_service(make_spec(storage_uri=published["v1"]))
    original = rollout.wait_ready

    def wait_through_an_outage(*args, **kwargs):
        api.faults = [503] * 2  # the API fails while we wait, then recovers for the cleanup
        return original(*args, **kwargs)

    monkeypatch.setattr(rollout, "wait_ready", wait_through_an_outage)
    with pytest.raises(DeployError) as err:
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert "the API server answered 503" in str(err.value) and "\n" not in str(err.value)
    assert cluster.get("digits") is None  # created by this deploy, so deleted


def test_a_packed_multi_model_repository_deploys_and_serves_both(kube, published, digits_repository, digits_onnx, tmp_path):
    """Two models in one repository behind one InferenceService (small models sharing a GPU)."""
    from kfp_serve.components.kserve.rollout import deploy
    from kfp_serve.components.storage.publish import publish
    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.pack import pack_repositories
    from kfp_serve.components.triton.repository import build_repository

    second = build_repository(digits_onnx, "onnx", tmp_path / "b", "digits_b", TritonModelOptions()).repository
    packed = pack_repositories([digits_repository, second], tmp_path / "packed", {"digits": 2, "digits_b": 1}, "KIND_CPU")
    uri = publish(packed.repository, "gs://kserve-models/packed").uri
    _, url = kube
    result = deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=uri)), timeout_s=120,
                    poll_s=0.2, onnx_ir_version=packed.onnx_ir_version)
    for name in packed.models:
        from kfp_serve.components.golden import GoldenSet
        from kfp_serve.components.validate.targets import OipRestTarget
        from kfp_serve.components.validate.validation import validate

        verdict = validate(OipRestTarget(result.validation_url, name, ModelSignature.load(digits_onnx)),
                           GoldenSet.load(digits_onnx))
        assert verdict.passed, f"{name}: {verdict.failure_line()}"


def test_the_storage_initializer_copies_what_lies_under_the_uri_unchecked(kube, published, digits_onnx):
    """KServe's storage initializer reads no manifest and checks no checksum: a version whose
    manifest was never written (a publish killed before its commit) is copied, with the claim,
    and served as it is. Only publish_model's committed output is safe to deploy."""
    from kfp_serve.components.kserve.rollout import deploy
    from kfp_serve.components.storage.gcs_store import storage_client
    from kfp_serve.components.storage.manifest import CLAIM, MANIFEST

    _, url = kube
    client = storage_client()
    bucket = client.bucket("kserve-models")
    source = published["v1"].removeprefix("gs://kserve-models/")
    for blob in client.list_blobs("kserve-models", prefix=f"{source}/"):
        if not blob.name.endswith(MANIFEST):  # the uncommitted copy: every object but the manifest
            name = f"uncommitted/v1/{blob.name.removeprefix(source + '/')}"
            bucket.blob(name).upload_from_string(blob.download_as_bytes())
    result = deploy(cluster_for(url), build_inference_service(make_spec(
        storage_uri="gs://kserve-models/uncommitted/v1")), timeout_s=120, poll_s=0.2,
        onnx_ir_version=published["ir"])
    validates(result.validation_url, digits_onnx)
    log = next(text for (_, container), text in kube[0].logs.items() if container == "storage-initializer")
    assert log == "Copied gs://kserve-models/uncommitted/v1 to /mnt/models\n"
    assert bucket.blob(f"uncommitted/v1/{CLAIM}").exists()
