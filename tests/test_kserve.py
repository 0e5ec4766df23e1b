"""KServe: manifests checked against the real CRD schema; deploy/promote/rollback/delete through
the real kubernetes client against a fake API server whose controller serves with local Triton."""

import shutil
import signal

import pytest
from conftest import catches_sigterm
from fakes.crd_schema import SHARED_KSERVE

pytestmark = pytest.mark.skipif(not SHARED_KSERVE.is_dir(),
                                reason=f"KServe CRD data not found at {SHARED_KSERVE}")

from kfp_serve.components.errors import InfrastructureError, UserError  # noqa: E402
from kfp_serve.components.kserve.manifest import (  # noqa: E402
    InferenceServiceSpec,
    build_inference_service,
    deep_merge,
)

VARIANTS = [
    {},
    {"model_format": "onnx", "protocol_version": "grpc-v2", "runtime": "kserve-tritonserver"},
    {"model_format": "pytorch", "protocol_version": "v1", "runtime": "kserve-torchserve"},
    {"gpus": 1, "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    {"min_replicas": 0, "max_replicas": 4, "scale_metric": "concurrency", "scale_target": 8,
     "container_concurrency": 16, "timeout_s": 120},
    {"deployment_mode": "RawDeployment", "min_replicas": 2, "max_replicas": 3, "scale_metric": "cpu",
     "scale_target": 70},
    {"canary_traffic_percent": 10, "service_account": "kfp-serve", "labels": {"team": "ml"},
     "annotations": {"sidecar.istio.io/inject": "true"}},
    {"override": {"spec": {"predictor": {"model": {"env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
                                         "minReplicas": 2}}}},
]


def make_spec(**kwargs):
    return InferenceServiceSpec(**{"name": "digits", "namespace": "models",
                                   "storage_uri": "gs://models/digits/v1", **kwargs})


@pytest.mark.parametrize("variant", VARIANTS, ids=range(len(VARIANTS)))
def test_every_variant_validates_against_the_crd(variant):
    from fakes.crd_schema import load_crd_schema, schema_errors

    manifest = build_inference_service(make_spec(**variant))
    assert schema_errors(manifest, load_crd_schema()) == []
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("Serverless", "RawDeployment")


def test_override_is_merged_not_substituted():
    manifest = build_inference_service(make_spec(
        gpus=1, override={"spec": {"predictor": {"model": {"resources": {"limits": {"memory": "8Gi"}}}}}}))
    limits = manifest["spec"]["predictor"]["model"]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "8Gi", "nvidia.com/gpu": 1}
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == "gs://models/digits/v1"
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": None}}) == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "Digits_v1"}, "'Digits_v1' is not a valid DNS-1035 label"),
     ({"name": "1digits"}, "not a valid DNS-1035 label"),
     ({"protocol_version": "v3"}, "protocol_version 'v3' is not one of"),
     ({"canary_traffic_percent": 120}, "canary_traffic_percent 120 must be 0-100"),
     ({"storage_uri": "/local/path"}, "must start with one of"),
     ({"deployment_mode": "RawDeployment", "min_replicas": 0}, "cannot scale to zero"),
     ({"override": {"metadata": {"name": "other"}}}, "may not change metadata.name")],
)
def test_bad_specs(kwargs, message):
    with pytest.raises(UserError, match=message):
        build_inference_service(make_spec(**kwargs))


# ---------------------------------------------------------------------------------------------
# against the fake API server and controller


@pytest.fixture
def kube(tmp_path):
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, runtimes_from_shared

    api = FakeKubeApi(namespaces=("models",), runtimes=runtimes_from_shared(SHARED_KSERVE),
                      crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    with FakeServer(api) as server:
        yield api, server.url
    controller.stop()


@pytest.fixture(scope="module")
def published(gcs, digits_repository, tmp_path_factory):
    """Two committed versions of the digits repository, and one whose model is corrupt."""
    from kfp_serve.components.storage.publish import publish

    gcs.create_bucket("kserve-models")
    first = publish(digits_repository, "gs://kserve-models/digits").uri
    second = publish(digits_repository, "gs://kserve-models/digits").uri
    broken = tmp_path_factory.mktemp("broken") / "repo"
    shutil.copytree(digits_repository, broken)
    (broken / "digits" / "1" / "model.onnx").write_bytes(b"corrupt")
    return {"v1": first, "v2": second, "broken": publish(broken, "gs://kserve-models/broken").uri}


def cluster_for(url, namespace="models"):
    from kfp_serve.components.kserve.cluster import KServeCluster, api_client

    return KServeCluster(api_client(host=url), namespace)


def test_deploy_validate_canary_promote_rollback_delete(kube, published, digits_onnx):
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.kserve.cluster import deploy
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.validate.targets import OipRestTarget
    from kfp_serve.components.validate.validation import validate

    _, url = kube
    cluster = cluster_for(url)
    first = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"])),
                   timeout_s=120, poll_s=0.2)
    assert first.created and first.url.startswith("http://127.0.0.1:")
    assert first.latest_ready_revision == "digits-predictor-00001"
    result = validate(OipRestTarget(first.url, "digits", ModelSignature.load(digits_onnx)),
                      GoldenSet.load(digits_onnx))
    assert result.passed, result.failure_line()

    canary = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"],
                                                               canary_traffic_percent=20)),
                    timeout_s=120, poll_s=0.2)
    assert not canary.created
    assert [(t["revisionName"], t["percent"]) for t in canary.traffic] == [
        ("digits-predictor-00001", 80), ("digits-predictor-00002", 20)]
    assert canary.canary_url and canary.canary_url != first.url

    cluster.patch_predictor("digits", {"canaryTrafficPercent": 0})  # roll back
    rolled = cluster.wait_ready("digits", 60, 0.2)
    assert [t["percent"] for t in rolled.traffic] == [100, 0] and rolled.url == first.url

    cluster.patch_predictor("digits", {"canaryTrafficPercent": None})  # promote
    promoted = cluster.wait_ready("digits", 60, 0.2)
    assert promoted.traffic == [{"revisionName": "digits-predictor-00002", "percent": 100, "latestRevision": True}]

    assert cluster.delete("digits") is True
    assert cluster.get("digits") is None and cluster.delete("digits") is False


def test_unknown_field_is_refused_by_the_schema(kube, published):
    from kfp_serve.components.kserve.cluster import deploy

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"],
                                                 override={"spec": {"predictor": {"modell": {}}}}))
    with pytest.raises(UserError, match='is invalid: unknown field "spec.predictor.modell"'):
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2)
    assert api.objects == {}  # the dry run refused it: nothing was created


def test_rbac_namespace_and_runtime_preflight(kube, published):
    from fakes.kube_api import FakeKubeApi

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"]))
    api.denied_verbs = {"create", "patch"}
    with pytest.raises(UserError, match="RBAC: the service account may not create/patch inferenceservices in namespace 'models'"):
        cluster_for(url).preflight(manifest)
    api.denied_verbs = set()
    with pytest.raises(UserError, match="namespace 'elsewhere' does not exist"):
        cluster_for(url, "elsewhere").preflight(build_inference_service(make_spec(namespace="elsewhere")))
    with pytest.raises(UserError, match="serving runtime 'kserve-mlserver' exists neither"):
        cluster_for(url).preflight(build_inference_service(make_spec(runtime="kserve-mlserver")))
    with pytest.raises(UserError, match="serves model format 'tensorrt' over protocol 'v1'"):
        cluster_for(url).preflight(build_inference_service(make_spec(model_format="tensorrt", protocol_version="v1")))
    assert isinstance(api, FakeKubeApi) and api.objects == {}


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [("missing-storage", UserError, r"ModelLoadFailed in storage-initializer: gs://kserve-models/nothing/v9 is not a committed"),
     ("broken-model", UserError, r"ModelLoadFailed in kserve-container: .*INVALID_PROTOBUF"),
     ("never-ready", InfrastructureError, r"not Ready after 2s: conditions: none yet"),
     ("image-pull", InfrastructureError, r"cannot start: container kserve-container is ImagePullBackOff"),
     ("unschedulable", InfrastructureError, r"unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu")],
)
def test_failures_are_classified_diagnosed_and_cleaned_up(kube, published, case, error, message):
    from kfp_serve.components.kserve.cluster import DeployError, deploy

    api, url = kube
    storage = {"missing-storage": "gs://kserve-models/nothing/v9", "broken-model": published["broken"]}
    behavior = {} if case in storage else {"fake.kserve.io/behavior": case}
    manifest = build_inference_service(make_spec(storage_uri=storage.get(case, published["v1"]),
                                                 annotations=behavior, gpus=1 if case == "unschedulable" else 0))
    with pytest.raises(DeployError, match=message) as caught:
        deploy(cluster_for(url), manifest, timeout_s=2 if case == "never-ready" else 60, poll_s=0.2)
    assert isinstance(caught.value.cause, error)
    report = caught.value.diagnostics
    assert "## Conditions" in report and "## Pods" in report and "## Warning events" in report
    if case == "missing-storage":
        assert "storage-initializer: terminated Error (exit 1)" in report
        assert "is not a committed kfp-serve version" in report  # the initializer's log tail
    assert "has been deleted (keep_failed=False)" in report
    assert api.objects == {}


def test_keep_failed_keeps_the_service(kube, published):
    from kfp_serve.components.kserve.cluster import DeployError, deploy

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["broken"]))
    with pytest.raises(DeployError):
        deploy(cluster_for(url), manifest, timeout_s=60, poll_s=0.2, keep_failed=True)
    assert ("models", "digits") in api.objects


def _artifact(kind, location="", **metadata):
    from kfp import dsl

    return dsl.Artifact(name=kind, uri=location, metadata={"kfp_serve_kind": kind, **metadata})


def test_components_deploy_validate_and_roll_back(kube, published, digits_onnx, tmp_path):
    """The KFP wrappers themselves, called as a task would call them."""
    from kfp import dsl

    from kfp_serve.components import delete_kserve, deploy_kserve, rollback_kserve, validate_endpoint

    api, url = kube
    model = _artifact("PublishedVersion", published["v1"], uri=published["v1"],
                      content_kind="TritonRepository", model_name="digits")
    isvc = _artifact("KServeInferenceService", str(tmp_path / "isvc"))
    report = _artifact("Markdown", str(tmp_path / "report.md"))
    outputs = deploy_kserve.python_func(model=model, inference_service=isvc, report=report,
                                        name="digits", namespace="models", api_host=url,
                                        ready_timeout_s=120)
    assert outputs.url == isvc.metadata["url"] and isvc.metadata["model_name"] == "digits"
    assert "Ready" in (tmp_path / "report.md").read_text()
    onnx = _artifact("OnnxModel", str(digits_onnx))
    passed = validate_endpoint.python_func(
        endpoint=isvc, model=onnx, metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / "m")),
        report=dsl.Markdown(name="report", uri=str(tmp_path / "v.md")),
        html_report=dsl.HTML(name="html", uri=str(tmp_path / "v.html")),
        load_seconds=0.3, concurrency=[1, 2], max_error_rate=0.0)
    assert passed is True
    assert "<svg" in (tmp_path / "v.html").read_text()
    second = _artifact("PublishedVersion", published["v2"], uri=published["v2"],
                       content_kind="TritonRepository", model_name="digits")
    deploy_kserve.python_func(model=second, inference_service=isvc, report=report, name="digits",
                              namespace="models", api_host=url, canary_traffic_percent=25,
                              ready_timeout_s=120)
    assert [t["percent"] for t in isvc.metadata["traffic"]] == [75, 25]
    assert rollback_kserve.python_func(inference_service=isvc, api_host=url) == outputs.url
    assert delete_kserve.python_func(name="digits", namespace="models", api_host=url) is True
    assert api.objects == {}


def test_component_failure_prints_diagnostics_and_raises_the_cause(kube, published, tmp_path, capsys):
    from kfp_serve.components import deploy_kserve

    _, url = kube
    model = _artifact("PublishedVersion", published["broken"], uri=published["broken"],
                      content_kind="TritonRepository")
    with pytest.raises(UserError, match="ModelLoadFailed in kserve-container"):
        deploy_kserve.python_func(model=model, inference_service=_artifact("x", str(tmp_path / "i")),
                                  report=_artifact("Markdown", str(tmp_path / "r")), name="digits",
                                  namespace="models", api_host=url, ready_timeout_s=60)
    assert "# InferenceService `models/digits`: diagnostics" in capsys.readouterr().out


def test_sigterm_stops_waiting_cleanly(kube, published):
    """Pipeline cancellation sends SIGTERM: the wait ends at once with a one-line error."""
    import subprocess
    import sys
    import time

    _, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"],
                                                 annotations={"fake.kserve.io/behavior": "never-ready"}))
    cluster_for(url).apply(manifest)
    code = ("import sys\n"
            "from kfp_serve.components.kserve.cluster import KServeCluster, api_client\n"
            f"cluster = KServeCluster(api_client(host={url!r}), 'models')\n"
            "try:\n    cluster.wait_ready('digits', 120, 0.2)\n"
            "except Exception as err:\n    print(err)\n    sys.exit(3)\n")
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # signal only once the waiter catches SIGTERM (its handler is installed around the wait):
    # a fixed sleep races interpreter start-up on a busy machine
    deadline = time.monotonic() + 60
    while not catches_sigterm(waiter.pid) and time.monotonic() < deadline and waiter.poll() is None:
        time.sleep(0.05)
    began = time.monotonic()
    waiter.send_signal(signal.SIGTERM)
    out, _ = waiter.communicate(timeout=20)
    assert waiter.returncode == 3 and time.monotonic() - began < 5
    assert out.startswith("cancelled while waiting for 'digits' (conditions: none yet)")


def test_transient_api_errors_are_retried_and_every_call_has_a_timeout(kube, published):
    """An API server that answers 429/503 for a moment (overloaded, restarting) does not fail
    the deploy: each call is retried with backoff."""
    from kfp_serve.components.kserve.cluster import deploy

    api, url = kube
    api.faults = [503, 429, 500, 503]
    result = deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])),
                    timeout_s=120, poll_s=0.2)
    assert result.created and api.faults == []


def test_an_api_server_that_cannot_be_reached_is_one_line_naming_it():
    import socket

    from kfp_serve.components.kserve.cluster import KServeCluster, api_client, deploy

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens here once the socket closes
    cluster = KServeCluster(api_client(host=f"http://127.0.0.1:{port}"), "models", retry_budget_s=2)
    with pytest.raises(InfrastructureError) as err:
        deploy(cluster, build_inference_service(make_spec()), timeout_s=10)
    message = str(err.value)
    assert message.startswith(f"cannot reach the Kubernetes API at http://127.0.0.1:{port}"
                              " (create_self_subject_access_review, ")
    assert "\n" not in message


def test_persistent_server_errors_end_as_one_line_with_diagnostics_and_cleanup(kube, published):
    """A 503 that outlasts the retry budget while waiting: the deploy fails with one line, and
    the InferenceService it created is deleted (the path a connection error used to skip)."""
    from kfp_serve.components.kserve.cluster import DeployError, KServeCluster, api_client, deploy

    api, url = kube
    cluster = KServeCluster(api_client(host=url), "models", retry_budget_s=1)
    manifest = build_inference_service(make_spec(storage_uri=published["v1"]))
    original = cluster.wait_ready

    def wait_through_an_outage(name, timeout_s, poll_s=2.0):
        api.faults = [503] * 2  # the API fails while we wait, then recovers for the cleanup
        return original(name, timeout_s, poll_s)

    cluster.wait_ready = wait_through_an_outage
    with pytest.raises(DeployError) as err:
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2)
    assert "the API server answered 503" in str(err.value) and "\n" not in str(err.value)
    assert cluster.get("digits") is None  # created by this deploy, so deleted
