"""deploy/promote/rollback/undeploy on Vertex AI, and validation through predict/rawPredict,
against a behavioural fake of the Vertex AI REST API that serves for real (local Triton,
TorchServe) from fake-gcs-server."""

import os
import signal
import threading
import uuid

import pytest
from fakes.http_fake import FakeServer
from fakes.torchserve_runner import java_missing_reason
from fakes.vertex_api import FakeVertexApi

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.storage.publish import publish
from kfp_serve.components.validate.validation import validate
from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import api as vertex_api
from kfp_serve.components.vertex import rollout as vertex
from kfp_serve.components.vertex.spec import (
    VertexDeploySpec,
    check_machine,
    check_region,
    traffic_split,
)

IMAGE = "us-central1-docker.pkg.dev/my-project/serving/tritonserver:24.09-py3"


def _spec(uri, **overrides) -> VertexDeploySpec:
    fields = dict(project="my-project", location="us-central1", display_name="digits",
                  artifact_uri=uri, content_kind="TritonRepository", model_name="digits",
                  serving_image=IMAGE, endpoint="digits-endpoint")
    fields.update(overrides)
    return VertexDeploySpec(**fields)


# -- bad input, each a one-line error before any call ------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ({"location": "us-central"}, "location 'us-central' is not a Vertex AI prediction region (did you mean us-central1?)"),
    ({"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
     "machine type 'n1-standard-4' cannot take NVIDIA_L4 on Vertex AI (use g2-standard-<N>)"),
    ({"machine_type": "a2-highgpu-2g", "accelerator_type": "NVIDIA_TESLA_A100", "accelerator_count": 1},
     "a2-highgpu-2g takes 2 x NVIDIA_TESLA_A100, not 1"),
    ({"machine_type": "g2-standard-8"}, "machine type 'g2-standard-8' comes with GPUs"),
    ({"accelerator_count": 2}, "accelerator_count=2 needs an accelerator_type"),
    ({"traffic_percentage": 101}, "traffic_percentage 101 must be between 0 and 100"),
    ({"traffic_percentage": -5}, "traffic_percentage -5 must be between 0 and 100"),
    ({"artifact_uri": "s3://models/digits/v1"}, "artifact URI 's3://models/digits/v1' is not on GCS"),
    ({"artifact_uri": "/tmp/digits/v1"}, "artifact URI '/tmp/digits/v1' is not on GCS"),
    ({"min_replicas": 0}, "Vertex AI endpoints do not scale to zero"),
    ({"serving_image": "nvcr.io/nvidia/tritonserver:24.09-py3"}, "Vertex AI pulls serving images only from"),
    ({"serving_image": ""}, "a Triton repository needs serving_image"),
    ({"project": "My Project"}, "is not a Google Cloud project id"),
    ({"content_kind": "OnnxModel"}, "Vertex AI serves a published TritonRepository or TorchServeArchive"),
])
def test_bad_input_is_one_line_before_any_call(overrides, message):
    with pytest.raises(UserError) as info:
        _spec("gs://models-bucket/digits/v1", **overrides).check()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_machine_and_accelerator_combinations_vertex_allows():
    check_machine("n1-standard-8", "NVIDIA_TESLA_T4", 2)
    check_machine("g2-standard-24", "NVIDIA_L4", 2)
    check_machine("a2-highgpu-4g", "NVIDIA_TESLA_A100", 4)
    check_machine("a3-highgpu-8g", "NVIDIA_H100_80GB", 8)
    check_machine("e2-standard-4", "", 0)
    assert check_region("europe-west4") == "europe-west4"
    # regions and GPUs the hand-written lists refused, now from aiplatform's own lists
    for region in ("asia-south2", "europe-west12", "us-east7"):
        assert check_region(region) == region
    for machine, accelerator, count in (("a3-highgpu-1g", "NVIDIA_H100_80GB", 1),
                                        ("a3-highgpu-2g", "NVIDIA_H100_80GB", 2),
                                        ("a3-highgpu-4g", "NVIDIA_H100_80GB", 4),
                                        ("a3-megagpu-8g", "NVIDIA_H100_MEGA_80GB", 8),
                                        ("a3-ultragpu-8g", "NVIDIA_H200_141GB", 8),
                                        ("a4-highgpu-8g", "NVIDIA_B200", 8)):
        check_machine(machine, accelerator, count)


@pytest.mark.parametrize(("machine", "accelerator", "count", "message"), [
    ("n1-standard-16", "NVIDIA_TESLA_V100", 1, "n1-standard-16 takes 2 or 4 or 8 x NVIDIA_TESLA_V100, not 1"),
    ("n1-highmem-96", "NVIDIA_TESLA_P100", 4, "more vCPUs than any count of NVIDIA_TESLA_P100 allows \\(at most 64\\)"),
    ("a3-highgpu-8g", "NVIDIA_H200_141GB", 8, "use a3-ultragpu-8g"),
    ("n1-standard-4", "NVIDIA_TESLA_K80", 1, "is not one Vertex AI serves on"),
])
def test_vcpu_per_gpu_limits_and_families_are_checked_before_any_call(machine, accelerator, count, message):
    with pytest.raises(UserError, match=message):
        check_machine(machine, accelerator, count)


def test_docker_hub_images_are_refused():
    from kfp_serve.components.vertex.spec import check_image

    with pytest.raises(UserError, match="only from Artifact Registry .* or Container Registry"):
        check_image("docker.io/pytorch/torchserve:latest")
    assert check_image("us-docker.pkg.dev/p/r/triton:24.05") == "us-docker.pkg.dev/p/r/triton:24.05"


def test_traffic_split_is_computed_from_the_live_split():
    assert traffic_split({}, "0", 20) == {"0": 100}  # nothing else serves
    assert traffic_split({"a": 100}, "0", 20) == {"a": 80, "0": 20}
    assert traffic_split({"a": 50, "b": 50}, "0", 33) == {"a": 34, "b": 33, "0": 33}
    assert traffic_split({"a": 70, "b": 30}, "0", 100) == {"0": 100}
    assert traffic_split({"a": 100}, "0", 0) == {"a": 100}
    for current in ({"a": 1, "b": 2, "c": 97}, {"a": 33, "b": 33, "c": 34}):
        for percent in range(0, 101, 7):
            assert sum(traffic_split(current, "0", percent).values()) == 100


# -- against the fake Vertex AI API ------------------------------------------------------
@pytest.fixture
def fake_vertex(tmp_path):
    api = FakeVertexApi(tmp_path)
    with FakeServer(api) as server:
        api.url = server.url
        yield api
    api.stop()


@pytest.fixture
def published_repository(gcs, digits_repository):
    bucket = f"vertex-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)
    return publish(digits_repository, f"gs://{bucket}/digits").uri


def _target(api, result, signature, model_name="digits"):
    base = vertex_api.rest_url("us-central1", result.endpoint, api.url)
    return VertexTarget(base, result.deployed_model_id, result.protocol, model_name, signature)


def test_deploy_canary_validate_promote_and_rollback_on_triton(fake_vertex, published_repository,
                                                               digits_onnx, digits_repository):
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    first = vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert first.traffic == {first.deployed_model_id: 100} and first.previous_traffic == {}
    assert first.protocol == "vertex-raw"
    result = validate(_target(fake_vertex, first, signature), golden, max_batch_size=16)
    assert result.passed, result.failure_line()
    assert result.samples == golden.batch_size

    # a new version of the same model, as a 30 % canary: the split comes from the live state
    second_uri = publish(digits_repository, published_repository.rsplit("/", 1)[0]).uri
    assert second_uri.endswith("/v2")
    second = vertex.deploy(_spec(second_uri, traffic_percentage=30), fake_vertex.url, 120, 0.2)
    assert second.model == first.model and second.model_version_id == "2"  # a version, not a model
    assert second.traffic == {first.deployed_model_id: 70, second.deployed_model_id: 30}
    canary = validate(_target(fake_vertex, second, signature), golden, max_batch_size=8)
    assert canary.passed, canary.failure_line()

    split = vertex.rollback("my-project", "us-central1", second.endpoint, second.deployed_model_id,
                            second.previous_traffic, True, fake_vertex.url, 60, 0.2)
    assert split == {first.deployed_model_id: 100}
    assert [d["id"] for d in fake_vertex.endpoints[second.endpoint.rsplit("/", 1)[-1]]["deployedModels"]] \
        == [first.deployed_model_id]

    third = vertex.deploy(_spec(second_uri, traffic_percentage=10), fake_vertex.url, 120, 0.2)
    assert third.traffic == {first.deployed_model_id: 90, third.deployed_model_id: 10}
    versions = fake_vertex.models[first.model.rsplit("/", 1)[-1]]
    assert ["default" in v["versionAliases"] for v in versions] == [True, False]  # uploads leave it
    split = vertex.promote("my-project", "us-central1", third.endpoint, third.deployed_model_id, True,
                           fake_vertex.url, 60, 0.2)
    assert split == {third.deployed_model_id: 100}
    endpoint = fake_vertex.endpoints[third.endpoint.rsplit("/", 1)[-1]]
    assert [d["id"] for d in endpoint["deployedModels"]] == [third.deployed_model_id]
    assert fake_vertex.calls.count("upload") == 2  # the third deploy reused version 2
    assert ["default" in v["versionAliases"] for v in versions] == [False, True]  # promote moved it


def test_a_retry_resumes_instead_of_duplicating(fake_vertex, published_repository):
    fake_vertex.op_seconds = 2.5
    with pytest.raises(InfrastructureError, match=r"not done after 1s: still running; created"):
        vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=1, poll_s=0.2)
    # the step is retried while the first attempt's operation is still running
    fake_vertex.op_seconds = 0.1
    result = vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert fake_vertex.calls.count("upload") == 1
    assert fake_vertex.calls.count("create_endpoint") == 1
    assert fake_vertex.calls.count("deployModel") <= 1
    endpoint = fake_vertex.endpoints[result.endpoint.rsplit("/", 1)[-1]]
    assert len(endpoint["deployedModels"]) == 1
    assert any(r.startswith(("operation", "deployed model", "model version")) for r in result.reused)
    again = vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert again.deployed_model_id == result.deployed_model_id
    assert fake_vertex.calls.count("deployModel") <= 1


def test_an_operation_that_ends_with_a_quota_error_fails_with_it(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "quota"
    with pytest.raises(UserError) as info:
        vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    message = str(info.value)
    assert "deploying the model failed" in message and "quota exhausted" in message
    assert "custom_model_serving_cpus" in message and "request more quota" in message


def test_permission_denied_names_the_role(fake_vertex, published_repository):
    fake_vertex.faults["upload"] = "permission"
    with pytest.raises(UserError) as info:
        vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    assert "uploading the model: Vertex AI answered 403 Permission 'aiplatform.upload' denied" in str(info.value)
    assert "roles/aiplatform.user" in str(info.value)


def test_an_operation_that_never_finishes_times_out_with_its_status(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "hang"
    with pytest.raises(InfrastructureError) as info:
        vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=1.5, poll_s=0.2)
    assert "deploying the model: operation projects/my-project/locations/us-central1/endpoints/" in str(info.value)
    assert "not done after 2s: still running; created" in str(info.value)


def test_sigterm_cancels_the_running_operation(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "hang"
    stop = threading.Event()

    def sigterm_once_waiting() -> None:
        """SIGTERM only once the deploy operation exists and the step's handler is installed:
        a timer could fire before, on a busy machine, and kill the whole test run."""
        while not stop.wait(0.05):
            waiting = any("DeployModel" in op["metadata"]["@type"] for op in list(fake_vertex.operations.values()))
            if waiting and callable(signal.getsignal(signal.SIGTERM)):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    killer = threading.Thread(target=sigterm_once_waiting, daemon=True)
    killer.start()
    try:
        with pytest.raises(InfrastructureError, match="cancelled \\(SIGTERM\\)"):
            vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    finally:
        stop.set()
        killer.join(timeout=5)
    deploys = [op for name, op in fake_vertex.operations.items() if "DeployModel" in op["metadata"]["@type"]]
    assert deploys and all(op["error"]["code"] == 1 for op in deploys)  # CANCELLED
    assert fake_vertex.calls.count("cancel_operation") == 1


@pytest.mark.skipif(bool(java_missing_reason()), reason=java_missing_reason() or "ok")
def test_torchserve_archive_is_served_and_validated_through_predict(fake_vertex, gcs, digits_torchscript, tmp_path):
    """The prebuilt PyTorch container's way: its own TorchServe configuration, the JSON service
    envelope (the handler gets one instance per item), model.mar as "model"."""
    from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive

    build_archive(digits_torchscript, "torchscript", tmp_path / "ts", "digits",
                  ArchiveOptions(batch_size=4, max_batch_delay_ms=20))
    bucket = f"vertex-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)
    uri = publish(tmp_path / "ts", f"gs://{bucket}/digits-mar").uri
    result = vertex.deploy(_spec(uri, content_kind="TorchServeArchive", serving_image=""),
                           fake_vertex.url, timeout_s=240, poll_s=0.5)
    assert result.protocol == "vertex-predict"
    uploaded = fake_vertex.models[result.model.rsplit("/", 1)[-1]][0]
    assert uploaded["containerSpec"]["imageUri"].startswith("us-docker.pkg.dev/vertex-ai/prediction/pytorch-cpu")
    assert uploaded["containerSpec"]["predictRoute"] == "/predictions/model"
    checked = validate(_target(fake_vertex, result, ModelSignature.load(digits_torchscript)),
                       GoldenSet.load(digits_torchscript), max_batch_size=8)
    assert checked.passed, checked.failure_line()


def test_an_onnx_archive_is_refused_for_the_prebuilt_pytorch_container():
    spec = _spec("gs://models-bucket/digits-mar/v1", content_kind="TorchServeArchive", serving_image="",
                 archive_format="onnx")
    with pytest.raises(UserError, match="an ONNX .mar cannot run on Vertex AI's prebuilt PyTorch container"):
        spec.check()
    _spec("gs://models-bucket/digits-mar/v1", content_kind="TorchServeArchive", archive_format="onnx",
          serving_image="us-docker.pkg.dev/p/r/torchserve-onnx:1").check()  # an image of one's own


def test_a_transient_unavailable_answer_is_retried(fake_vertex, published_repository):
    fake_vertex.faults["upload"] = "unavailable"
    fake_vertex.faults["deployModel"] = "unavailable"
    result = vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert result.deployed_model_id and fake_vertex.faults == {}
    assert fake_vertex.calls.count("upload") == 2 and fake_vertex.calls.count("deployModel") == 2


def test_pending_operations_are_found_on_every_page(fake_vertex):
    """A retry resumes an operation an earlier attempt left running, wherever it is listed."""
    resource = "projects/my-project/locations/us-central1/models/digits"
    metadata = {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelOperationMetadata"}
    fake_vertex.extra_operations[resource] = [
        *({"name": f"{resource}/operations/{i}", "done": True, "metadata": metadata} for i in range(3)),
        {"name": f"{resource}/operations/late", "done": False, "metadata": metadata}]
    client = vertex_api.VertexClient("my-project", "us-central1", fake_vertex.url)
    assert client.pending_operations(client.models, resource) == [f"{resource}/operations/late"]


def test_an_operation_of_a_type_this_client_lacks_is_one_line(fake_vertex):
    resource = "projects/my-project/locations/us-central1/models/digits"
    fake_vertex.extra_operations[resource] = [{"name": f"{resource}/operations/1", "done": False, "metadata": {
        "@type": "type.googleapis.com/google.cloud.aiplatform.v1.SomethingNewerOperationMetadata"}}]
    client = vertex_api.VertexClient("my-project", "us-central1", fake_vertex.url)
    with pytest.raises(InfrastructureError) as info:
        client.pending_operations(client.models, resource)
    message = str(info.value)
    assert message.startswith(f"listing operations of {resource}: Vertex AI answered with something")
    assert "upgrade it" in message and "\n" not in message


def test_a_version_found_by_label_must_hold_this_deploys_artifact(fake_vertex, published_repository):
    vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    for versions in fake_vertex.models.values():  # another version carries the same label
        for version in versions:
            version["artifactUri"] = "gs://elsewhere/other/v3"
    with pytest.raises(UserError, match="carries this deploy's label but another artifact"):
        vertex.deploy(_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)


def test_rate_limits_and_failed_servers_are_told_apart_from_quota():
    from google.api_core import exceptions as gexc

    limited = vertex_api.translate(gexc.TooManyRequests("Quota exceeded for quota metric 'Online prediction"
                                                    " requests' per minute"), "reading the endpoint")
    assert isinstance(limited, InfrastructureError) and "per-minute request limit" in str(limited)
    failed = vertex_api.operation_error("op/1", 9, "Model server never became ready", "deploying the model")
    assert isinstance(failed, UserError) and "Cloud Logging" in str(failed)
    denied = vertex_api.translate(gexc.Forbidden("Permission denied on bucket"), "uploading the model")
    assert "Vertex AI Service Agent" in str(denied)


def test_requests_over_the_vertex_size_limit_are_split_and_a_single_one_is_refused():
    import json

    import numpy as np
    from fakes.vertex_api import REQUEST_LIMIT_BYTES

    from kfp_serve.components.signature import TensorSpec
    from kfp_serve.components.validate.vertex import MAX_REQUEST_BYTES

    sizes = []

    def predict(method, path, query, body):  # Vertex AI's predict with its request size limit
        sizes.append(len(json.dumps(body)))
        if sizes[-1] > REQUEST_LIMIT_BYTES:
            return 400, {"error": {"code": 400, "message": "Request payload size exceeds the limit"}}
        return 200, {"predictions": [[sum(row)] for row in body["instances"]], "deployedModelId": "7"}

    signature = ModelSignature(inputs=[TensorSpec("x", "float32", ("batch", 20000))],
                               outputs=[TensorSpec("y", "float32", ("batch", 1))])
    with FakeServer(predict) as server:
        target = VertexTarget(f"{server.url}/v1/projects/p/locations/us-central1/endpoints/e", "7",
                              "vertex-predict", "m", signature)
        x = np.random.default_rng(0).random((16, 20000), dtype=np.float32)
        outputs, problems = target.infer({"x": x})
        assert problems == [] and np.allclose(outputs["y"][:, 0], x.sum(axis=1), rtol=1e-4)
        assert len(sizes) > 1 and max(sizes) <= MAX_REQUEST_BYTES
        with pytest.raises(UserError, match="over Vertex AI's 1.5 MB limit on prediction requests"):
            target.infer({"x": np.random.default_rng(1).random((1, 200000), dtype=np.float32)})


def test_triton_runs_in_its_vertex_mode_and_refuses_a_default_model_it_lacks(fake_vertex, published_repository):
    """The fake runs tritonserver's Vertex AI mode from the container spec Vertex AI receives
    (AIP_* variables, $(AIP_STORAGE_URI) expanded, routes, default model): a default model the
    repository lacks fails the deploy as Triton does, and points to the container's log."""
    with pytest.raises(UserError) as info:
        vertex.deploy(_spec(published_repository, model_name="missing"), fake_vertex.url, timeout_s=60, poll_s=0.2)
    message = str(info.value)
    assert "Expect the default model 'missing' is loaded" in message and "Cloud Logging" in message


def test_dedicated_endpoints_are_called_on_their_own_host_and_private_ones_refused(
        fake_vertex, published_repository, digits_onnx):
    """A dedicated endpoint refuses predictions on the shared regional host (here 127.0.0.1)
    and takes them on its dedicatedEndpointDns (here localhost); a VPC-peered private endpoint
    cannot split traffic: refused in one line."""
    port = fake_vertex.url.rsplit(":", 1)[1]
    parent = "projects/my-project/locations/us-central1"
    fake_vertex.endpoints["555"] = {"name": f"{parent}/endpoints/555", "displayName": "dedicated",
                                    "deployedModels": [], "trafficSplit": {}, "dedicatedEndpointEnabled": True,
                                    "dedicatedEndpointDns": f"localhost:{port}"}
    result = vertex.deploy(_spec(published_repository, endpoint="555"), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert result.dedicated_dns == f"localhost:{port}"
    record = result.endpoint_record(_spec(published_repository), fake_vertex.url, {})
    assert record.predict_base == f"http://localhost:{port}/v1/{parent}/endpoints/555"
    signature = ModelSignature.load(digits_onnx)
    target = VertexTarget(record.predict_base, result.deployed_model_id, result.protocol, "digits",
                          signature, api_base=record.api_base)
    checked = validate(target, GoldenSet.load(digits_onnx), max_batch_size=16)
    assert checked.passed, checked.failure_line()
    shared = VertexTarget(record.api_base, result.deployed_model_id, result.protocol, "digits", signature)
    with pytest.raises(UserError, match="Dedicated endpoint cannot be accessed through the shared domain"):
        validate(shared, GoldenSet.load(digits_onnx), max_batch_size=16)

    fake_vertex.endpoints["777"] = {"name": f"{parent}/endpoints/777", "displayName": "private",
                                    "deployedModels": [], "trafficSplit": {},
                                    "network": "projects/123/global/networks/default"}
    with pytest.raises(UserError, match="is a private endpoint on projects/123/global/networks/default"):
        vertex.deploy(_spec(published_repository, endpoint="777"), fake_vertex.url, timeout_s=60, poll_s=0.2)
