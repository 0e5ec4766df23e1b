"""KServe: manifests checked against the real CRD schema; deploy/promote/rollback/delete through
the real kubernetes client against a fake API server whose controller serves with local Triton."""

import shutil
import signal
from dataclasses import replace

import pytest
from conftest import catches_sigterm

from kfp_serve.components import artifacts
from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.kserve.manifest import (
    InferenceServiceSpec,
    build_inference_service,
    deep_merge,
)
from kfp_serve.components.kserve.preflight import preflight
from kfp_serve.components.kserve.wait import expect_after, wait_ready
from kfp_serve.components.signature import ModelSignature

VARIANTS = [
    {},
    {"model_format": "onnx", "protocol_version": "grpc-v2", "runtime": "kserve-tritonserver"},
    {"model_format": "pytorch", "protocol_version": "v1", "runtime": "kserve-torchserve"},
    {"gpus": 1, "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    {"min_replicas": 0, "max_replicas": 4, "scale_metric": "concurrency", "scale_target": 8,
     "container_concurrency": 16, "timeout_s": 120},
    {"deployment_mode": "Standard", "min_replicas": 2, "max_replicas": 3, "scale_metric": "cpu",
     "scale_target": 70},
    {"deployment_mode": "Standard", "autoscaler_class": "keda", "min_replicas": 0, "max_replicas": 3},
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
    # the deprecated spellings: the only ones KServe releases before the rename accept, and
    # the ones later releases rewrite (KSERVE_BEHAVIOUR.md: modes)
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("Serverless", "RawDeployment")


@pytest.mark.parametrize(("given", "emitted"), [("Knative", "Serverless"), ("Serverless", "Serverless"),
                                                ("Standard", "RawDeployment"), ("RawDeployment", "RawDeployment")])
def test_every_mode_name_kserve_accepts(given, emitted):
    manifest = build_inference_service(make_spec(deployment_mode=given))
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == emitted


def test_mode_specific_knobs():
    from fakes.crd_schema import load_crd_schema, schema_errors

    grpc = build_inference_service(make_spec(protocol_version="grpc-v2"))
    assert grpc["spec"]["predictor"]["model"]["ports"] == [{"name": "h2c", "protocol": "TCP", "containerPort": 9000}]
    hpa = build_inference_service(make_spec(scale_metric="cpu", scale_target=70))
    assert hpa["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    keda = build_inference_service(make_spec(deployment_mode="Standard", autoscaler_class="keda", min_replicas=0))
    assert keda["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    pinned = build_inference_service(make_spec(runtime_version="24.08-py3"))
    assert pinned["spec"]["predictor"]["model"]["runtimeVersion"] == "24.08-py3"
    for manifest in (grpc, hpa, keda, pinned):
        assert schema_errors(manifest, load_crd_schema()) == []


def _gke(**presets):
    from kfp_serve.components.kserve.gke import GkePresets

    return make_spec(gke=GkePresets(**presets))


@pytest.mark.parametrize(("presets", "selector"), [
    ({"accelerator": "L4"}, {"cloud.google.com/gke-accelerator": "nvidia-l4"}),
    ({"accelerator": "T4", "gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 4},
     {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "cloud.google.com/gke-gpu-sharing-strategy": "time-sharing",
      "cloud.google.com/gke-max-shared-clients-per-gpu": "4"}),
    ({"accelerator": "H100", "gpu_sharing": "mig", "gpu_partition_size": "1g.10gb"},
     {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "cloud.google.com/gke-gpu-partition-size": "1g.10gb"}),
    ({"spot": True}, {"cloud.google.com/gke-spot": "true"}),
    ({"gcp_service_account": "serving@proj.iam.gserviceaccount.com"}, {"iam.gke.io/gke-metadata-server-enabled": "true"}),
])
def test_gke_presets_become_checked_scheduling(presets, selector):
    from fakes.crd_schema import load_crd_schema, schema_errors

    spec = _gke(**presets)
    if "gcp_service_account" in presets:
        spec = make_spec(gke=spec.gke, service_account="serving")
    manifest = build_inference_service(spec)
    predictor = manifest["spec"]["predictor"]
    assert predictor["nodeSelector"] == selector
    if "accelerator" in presets:
        assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    if presets.get("spot"):
        assert predictor["tolerations"] == [{"key": "cloud.google.com/gke-spot", "operator": "Equal",
                                             "value": "true", "effect": "NoSchedule"}]
    assert schema_errors(manifest, load_crd_schema()) == []


def test_large_model_probe_and_knative_progress_deadline():
    manifest = build_inference_service(_gke(model_load_timeout_s=1200))
    probe = manifest["spec"]["predictor"]["model"]["startupProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 1200
    assert manifest["metadata"]["annotations"]["serving.knative.dev/progress-deadline"] == "1260s"
    standard = build_inference_service(make_spec(deployment_mode="Standard", gke=_gke(model_load_timeout_s=1200).gke))
    assert "serving.knative.dev/progress-deadline" not in standard["metadata"]["annotations"]


@pytest.mark.parametrize(("presets", "message"), [
    ({"accelerator": "T4", "gpu_sharing": "mig", "gpu_partition_size": "1g.5gb"}, "T4 GPUs have no multi-instance"),
    ({"accelerator": "A100", "gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 2,
      "gpu_partition_size": "1g.5gb"}, "gpu_partition_size is for gpu_sharing='mig'"),
    ({"accelerator": "A100", "gpu_sharing": "mig", "gpu_partition_size": "1g.10gb"},
     r"'1g.10gb' is not a A100 MIG partition: one of \['1g.5gb'"),
    ({"accelerator": "L4", "gpu_sharing": "time-sharing"}, "max_shared_clients_per_gpu between 2 and 48"),
    ({"gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 2}, "gpu_sharing needs an accelerator"),
    ({"accelerator": "V100"}, "accelerator 'V100' is not one of"),
    ({"gcp_service_account": "serving@proj.iam.gserviceaccount.com"}, "needs service_account"),
])
def test_gke_preset_combinations_that_cannot_work(presets, message):
    with pytest.raises(UserError, match=message):
        build_inference_service(_gke(**presets))
    with pytest.raises(UserError, match="one shared GPU; gpus is 2"):
        build_inference_service(make_spec(gpus=2, gke=_gke(accelerator="L4", gpu_sharing="time-sharing",
                                                           max_shared_clients_per_gpu=2).gke))


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
     ({"deployment_mode": "Standard", "min_replicas": 0}, "Standard mode scales to zero only with KEDA"),
     ({"deployment_mode": "ModelMesh"}, "'ModelMesh' is not supported"),
     ({"deployment_mode": "Raw"}, r"deployment_mode 'Raw' is not one of \['Knative', 'Standard'\]"),
     ({"deployment_mode": "RawDeployment", "canary_traffic_percent": 10},
      "canary_traffic_percent 10 needs deployment_mode 'Knative': KServe's Standard mode ignores it"),
     ({"deployment_mode": "Standard", "scale_metric": "concurrency"},
      "scale_metric 'concurrency' needs deployment_mode 'Knative'"),
     ({"deployment_mode": "Standard", "autoscaler_class": "keda", "scale_metric": "cpu"},
      "scale_metric is not supported with autoscaler_class 'keda'"),
     ({"deployment_mode": "Standard", "container_concurrency": 4}, "container_concurrency is a Knative setting"),
     ({"autoscaler_class": "keda"}, "autoscaler_class applies to deployment_mode 'Standard'"),
     ({"timeout_s": 900}, "timeout_s 900 is above Knative's revision timeout limit"),
     ({"scale_metric": "cpu", "min_replicas": 0}, "Knative's HPA class, which cannot scale to zero"),
     ({"override": {"metadata": {"name": "other"}}}, "may not change metadata.name")],
)
def test_bad_specs(kwargs, message):
    with pytest.raises(UserError, match=message):
        build_inference_service(make_spec(**kwargs))


# ---------------------------------------------------------------------------------------------
# against the fake API server and controller


@pytest.fixture
def kube(tmp_path):
    from fakes.cluster_gateway import install_cluster_dns
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(),
                      crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    undo = install_cluster_dns()  # this process plays a pod inside the cluster
    try:
        with FakeServer(api) as server:
            yield api, server.url
    finally:
        undo()
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
    import onnx

    # torch.onnx writes IR 10 at opset 18, which KServe's default Triton (23.05) cannot load:
    # deploy sets runtimeVersion from it, as deploy_kserve does from the artifact's metadata
    ir = onnx.load(str(digits_repository / "digits" / "1" / "model.onnx"), load_external_data=False).ir_version
    return {"v1": first, "v2": second, "broken": publish(broken, "gs://kserve-models/broken").uri, "ir": ir}


def cluster_for(url, namespace="models"):
    from kfp_serve.components.kserve.api import KServeCluster, api_client

    return KServeCluster(api_client(host=url), namespace)


def _split(result):
    return [(t["revisionName"], t["percent"]) for t in result.traffic]


def _validates(url, digits_onnx):
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.validate.targets import OipRestTarget
    from kfp_serve.components.validate.validation import validate

    result = validate(OipRestTarget(url, "digits", ModelSignature.load(digits_onnx)), GoldenSet.load(digits_onnx))
    assert result.passed, result.failure_line()


def test_knative_deploy_validate_canary_roll_back_promote_delete(kube, published, digits_onnx):
    from kfp_serve.components.kserve.rollout import deploy, promote, rollback

    _, url = kube
    cluster = cluster_for(url)
    first = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"])),
                   timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert first.created and first.mode == "Knative"
    # status.url is on the ingress domain; inside the cluster validation uses status.address.url
    assert first.url == "http://digits.models.example.com"
    assert first.validation_url == first.internal_url
    assert first.internal_url.startswith("http://digits.models.svc.cluster.local:")
    assert first.latest_ready_revision == "digits-predictor-00001"
    assert any("runtimeVersion set to 24.05-py3" in note for note in first.notes)
    _validates(first.validation_url, digits_onnx)
    # a canary percentage on the first deploy: KServe splits the one revision with itself
    again = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"], canary_traffic_percent=20)),
                   timeout_s=60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert {t["revisionName"] for t in again.traffic} == {"digits-predictor-00001"}

    canary = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"], canary_traffic_percent=20)),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert not canary.created and canary.latest_ready_revision == "digits-predictor-00002"
    assert _split(canary) == [("digits-predictor-00002", 20), ("digits-predictor-00001", 80)]
    assert canary.canary_url == "http://latest-digits-predictor.models.example.com"
    assert canary.validation_url.startswith("http://latest-digits-predictor.models.svc.cluster.local:")
    _validates(canary.validation_url, digits_onnx)

    service = KServeInferenceService(name="digits", namespace="models", model_name="digits", url="")
    rolled = rollback(service, 60, url)
    assert _split(rolled) == [("digits-predictor-00002", 0), ("digits-predictor-00001", 100)]
    promoted = promote(service, 60, url)
    assert _split(promoted) == [("digits-predictor-00002", 100)]

    assert cluster.delete("digits") is True
    assert cluster.get("digits") is None and cluster.delete("digits") is False


def test_a_stale_ready_is_not_taken_for_the_new_revision(kube, published):
    """After a canary and its promotion KServe has updated the Knative Service more often than
    the InferenceService changed, so its observedGeneration (copied from the Knative Service)
    runs ahead: a replace looks 'current' and Ready while the old revision serves. The wait
    keys on the new revision instead."""
    from kfp_serve.components.kserve.rollout import deploy, promote

    api, url = kube
    cluster = cluster_for(url)
    for storage, canary in (("v1", None), ("v2", 50)):
        deploy(cluster, build_inference_service(make_spec(storage_uri=published[storage], canary_traffic_percent=canary)),
               timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    promote(KServeInferenceService(name="digits", namespace="models", model_name="digits", url=""), 60, url)
    api.controller.pause()
    before = cluster.apply(build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3")))
    isvc = cluster.get("digits")
    # the trap: what the old check accepted (generation observed, Ready) is there
    assert isvc["status"]["observedGeneration"] >= isvc["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in isvc["status"]["conditions"]}["Ready"] == "True"
    expect = expect_after(cluster, before, "digits", None)
    with pytest.raises(InfrastructureError, match="not Ready after 1s: .*no new revision yet"):
        wait_ready(cluster, "digits", 1, 0.2, expect)
    api.controller.resume()
    assert wait_ready(cluster, "digits", 120, 0.2, expect).latest_ready_revision == "digits-predictor-00003"


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
    _validates(first.validation_url, digits_onnx)

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
    _validates(second.validation_url, digits_onnx)

    service = KServeInferenceService(name="digits", namespace="models", model_name="digits", url="",
                                     mode="Standard", previous_predictor=second.previous_predictor)
    assert promote(service, 60, url).mode == "Standard"  # nothing to switch
    rollback(service, 120, url)
    assert cluster.get("digits")["spec"]["predictor"]["model"]["storageUri"] == published["v1"]
    assert cluster.deployment("digits")["metadata"]["generation"] == 3
    with pytest.raises(UserError, match="nothing to roll back to: InferenceService 'digits' was created by the deploy"):
        rollback(replace(service, previous_predictor=None), 10, url)


def test_the_mode_of_an_existing_service_cannot_change(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    cluster = cluster_for(url)
    deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"])), timeout_s=120,
           poll_s=0.2, onnx_ir_version=published["ir"])
    with pytest.raises(UserError, match="runs in Knative mode and KServe cannot change the mode of an existing one to Standard"):
        deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"], deployment_mode="Standard")),
               timeout_s=10, poll_s=0.2)


def test_webhook_denials_are_not_reported_as_rbac(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    manifest = build_inference_service(make_spec(
        storage_uri=published["v1"], deployment_mode="Standard", autoscaler_class="hpa",
        override={"spec": {"predictor": {"scaleMetric": "rps"}}}))
    with pytest.raises(UserError) as err:
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2)
    assert "RBAC" not in str(err.value)
    assert str(err.value).endswith("denied the request: [rps] is not a supported metric")


def test_knative_mode_needs_knative(kube, published):
    api, url = kube
    api.knative = False
    with pytest.raises(UserError, match="deployment_mode 'Knative' needs Knative Serving, which this cluster does not have"):
        preflight(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])))
    runtime, _ = preflight(cluster_for(url), build_inference_service(make_spec(deployment_mode="Standard")))
    assert runtime["metadata"]["name"] == "kserve-tritonserver"


def test_forbidden_cluster_runtimes_skip_the_check_and_invalid_spec_fails_at_once(kube, published):
    import time

    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    api.forbidden_lists = {"clusterservingruntimes"}
    runtime, notes = preflight(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])))
    assert runtime is None and "cannot list ClusterServingRuntimes (RBAC" in notes[0]
    result = deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3")),
                    timeout_s=120, poll_s=0.2)
    assert result.latest_ready_revision == "digits-predictor-00001"
    cluster_for(url).delete("digits")
    began = time.monotonic()
    with pytest.raises(DeployError, match="failed: NoSupportingRuntime: No runtime found"):
        deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"], runtime="kserve-mlserver")),
               timeout_s=60, poll_s=0.2)
    assert time.monotonic() - began < 30  # not the 60 s timeout


def test_runtime_matching_follows_kserve():
    from kfp_serve.components.kserve.runtimes import choose

    def runtime(name, kind="ClusterServingRuntime", **spec):
        formats = [{"name": "onnx", "autoSelect": True, "priority": spec.pop("priority", 1)}]
        return {"kind": kind, "metadata": {"name": name}, "spec": {"supportedModelFormats": formats, **spec}}

    any_protocol = runtime("any")  # no protocolVersions: every protocol
    assert choose([any_protocol], "onnx", "v2", None) is any_protocol
    assert choose([runtime("off", disabled=True), runtime("mm", multiModel=True)], "onnx", "v2", None) is None
    preferred = [runtime("low", priority=1), runtime("high", priority=5), runtime("ns", kind="ServingRuntime")]
    assert choose(preferred, "onnx", "v2", None)["metadata"]["name"] == "ns"
    assert choose(preferred[:2], "onnx", "v2", None)["metadata"]["name"] == "high"
    with pytest.raises(UserError, match="serving runtime 'off' is disabled"):
        choose([runtime("off", disabled=True)], "onnx", "v2", "off")
    with pytest.raises(UserError, match="'v1only' does not serve model format 'onnx' over protocol 'v2'"):
        choose([runtime("v1only", protocolVersions=["v1"])], "onnx", "v2", "v1only")


def test_onnx_ir_and_the_runtimes_triton(kube, published):
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    _, url = kube
    with pytest.raises(UserError, match="runtime_version '23.05-py3' is Triton 23.05, whose onnxruntime cannot load"):
        deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="23.05-py3")),
               timeout_s=10, poll_s=0.2, onnx_ir_version=published["ir"])
    # without the IR in the artifact nothing is changed, and the load fails as real Triton's does
    with pytest.raises(DeployError, match="Unsupported model IR version: 10, max supported IR version: 9"):
        deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])), timeout_s=60, poll_s=0.2)


def test_workload_identity_is_checked_and_the_network_policy_applied(kube, published):
    from kfp_serve.components.kserve.gke import GkePresets
    from kfp_serve.components.kserve.manifest import build_network_policy
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    google = "serving@proj.iam.gserviceaccount.com"
    spec = make_spec(storage_uri=published["v1"], runtime_version="24.05-py3", service_account="serving",
                     gke=GkePresets(gcp_service_account=google), ingress_from_namespaces=("istio-system",))
    manifest, policy = build_inference_service(spec), build_network_policy(spec)
    with pytest.raises(UserError, match="service account 'serving' does not exist in namespace 'models'"):
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2, workload_identity=("serving", google))
    api.service_accounts[("models", "serving")] = {"kind": "ServiceAccount", "metadata": {"name": "serving"}}
    with pytest.raises(UserError, match="mapped to no Google service account instead of serving@.*kubectl annotate"
                                        " serviceaccount serving -n models --overwrite iam.gke.io/gcp-service-account="):
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2, workload_identity=("serving", google))
    assert api.objects == {}
    api.service_accounts[("models", "serving")]["metadata"]["annotations"] = {"iam.gke.io/gcp-service-account": google}
    for _ in range(2):  # created, then replaced
        deploy(cluster_for(url), manifest, timeout_s=120, poll_s=0.2, workload_identity=("serving", google),
               network_policy=policy)
    stored = api.network_policies[("models", "digits-ingress")]
    assert stored["spec"]["podSelector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "digits"}}
    allowed = stored["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert allowed == ["istio-system", "knative-serving"]


def test_an_unschedulable_pod_gets_a_grace_period(kube, published):
    """With a cluster autoscaler a GPU pod waits for a node: not fatal within the grace."""
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3",
                                                 annotations={"fake.kserve.io/behavior": "unschedulable-for-a-while"}))
    result = deploy(cluster_for(url), manifest, timeout_s=120, poll_s=0.2, unschedulable_grace_s=60)
    assert result.latest_ready_revision == "digits-predictor-00001"


def test_unknown_field_is_refused_by_the_schema(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"],
                                                 override={"spec": {"predictor": {"modell": {}}}}))
    with pytest.raises(UserError, match='is invalid: unknown field "spec.predictor.modell"'):
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2, onnx_ir_version=published["ir"])
    assert api.objects == {}  # the dry run refused it: nothing was created


def test_rbac_namespace_and_runtime_preflight(kube, published):
    from fakes.kube_api import FakeKubeApi

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"]))
    api.denied_verbs = {"create", "patch"}
    with pytest.raises(UserError, match="RBAC: the service account may not create/patch inferenceservices in namespace 'models'"):
        preflight(cluster_for(url), manifest)
    api.denied_verbs = set()
    with pytest.raises(UserError, match="namespace 'elsewhere' does not exist"):
        preflight(cluster_for(url, "elsewhere"), build_inference_service(make_spec(namespace="elsewhere")))
    with pytest.raises(UserError, match="serving runtime 'kserve-mlserver' exists neither"):
        preflight(cluster_for(url), build_inference_service(make_spec(runtime="kserve-mlserver")))
    with pytest.raises(UserError, match="auto-selects model format 'tensorrt' over protocol 'v1'"):
        preflight(cluster_for(url), build_inference_service(make_spec(model_format="tensorrt", protocol_version="v1")))
    assert isinstance(api, FakeKubeApi) and api.objects == {}


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


def _artifact(name, location="", record=None):
    from kfp import dsl

    artifact = dsl.Artifact(name=name, uri=location)
    if record is not None:
        artifacts.mark(artifact, record)
    return artifact


def _published(uri, digits_onnx, ir):
    signature = ModelSignature.load(digits_onnx) if digits_onnx else None
    repository = artifacts.TritonRepository(model_name="digits", signature=signature,
                                            model_format="onnx", onnx_ir_version=ir)
    return _artifact("published", uri, artifacts.PublishedVersion(uri=uri, published_version=1, content=repository))


def test_components_deploy_validate_and_roll_back(kube, published, digits_onnx, tmp_path):
    """The KFP wrappers themselves, called as a task would call them."""
    from kfp import dsl

    from kfp_serve.components import delete_kserve, deploy_kserve, rollback_kserve, validate_endpoint

    api, url = kube
    model = _published(published["v1"], digits_onnx, published["ir"])
    isvc = _artifact("inference_service", str(tmp_path / "isvc"))
    report = _artifact("report", str(tmp_path / "report.md"))
    outputs = deploy_kserve.python_func(model=model, inference_service=isvc, report=report,
                                        name="digits", namespace="models", api_host=url,
                                        ready_timeout_s=120)
    assert outputs.url == isvc.metadata["url"] and isvc.metadata["model_name"] == "digits"
    assert "Ready" in (tmp_path / "report.md").read_text()
    onnx = _artifact("onnx_model", str(digits_onnx), artifacts.OnnxModel(ModelSignature.load(digits_onnx)))
    passed = validate_endpoint.python_func(
        endpoint=isvc, model=onnx, metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / "m")),
        report=dsl.Markdown(name="report", uri=str(tmp_path / "v.md")),
        html_report=dsl.HTML(name="html", uri=str(tmp_path / "v.html")),
        load_seconds=0.3, concurrency=[1, 2], max_error_rate=0.0)
    assert passed is True
    assert "<svg" in (tmp_path / "v.html").read_text()
    second = _published(published["v2"], digits_onnx, published["ir"])
    deploy_kserve.python_func(model=second, inference_service=isvc, report=report, name="digits",
                              namespace="models", api_host=url, canary_traffic_percent=25,
                              ready_timeout_s=120)
    assert [t["percent"] for t in isvc.metadata["traffic"]] == [25, 75]
    assert isvc.metadata["validation_url"].startswith("http://latest-digits-predictor.models.svc.cluster.local:")
    assert rollback_kserve.python_func(inference_service=isvc, api_host=url) == outputs.url
    assert delete_kserve.python_func(name="digits", namespace="models", api_host=url) is True
    assert api.objects == {}


def test_component_failure_prints_diagnostics_and_raises_the_cause(kube, published, tmp_path, capsys):
    from kfp_serve.components import deploy_kserve

    _, url = kube
    model = _published(published["broken"], None, published["ir"])
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
            "from kfp_serve.components.kserve.api import KServeCluster, api_client\n"
            "from kfp_serve.components.kserve.wait import wait_ready\n"
            f"cluster = KServeCluster(api_client(host={url!r}), 'models')\n"
            "try:\n    wait_ready(cluster, 'digits', 120, 0.2)\n"
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
    assert out.startswith("cancelled while waiting for 'digits' (conditions: ")


def test_transient_api_errors_are_retried_and_every_call_has_a_timeout(kube, published):
    """An API server that answers 429/503 for a moment (overloaded, restarting) does not fail
    the deploy: each call is retried with backoff."""
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    api.faults = [503, 429, 500, 503]
    result = deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert result.created and api.faults == []


def test_an_api_server_that_cannot_be_reached_is_one_line_naming_it():
    import socket

    from kfp_serve.components.kserve.api import KServeCluster, api_client
    from kfp_serve.components.kserve.rollout import deploy

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
        from kfp_serve.components.signature import ModelSignature
        from kfp_serve.components.validate.targets import OipRestTarget
        from kfp_serve.components.validate.validation import validate

        verdict = validate(OipRestTarget(result.validation_url, name, ModelSignature.load(digits_onnx)),
                           GoldenSet.load(digits_onnx))
        assert verdict.passed, f"{name}: {verdict.failure_line()}"


def test_grpc_validation_dials_the_cluster_local_address_on_its_scheme_port(digits_onnx):
    """A grpc-v2 InferenceService is validated at status.address.url, which has no port:
    Knative serves h2c on 80 there (a bare host would make gRPC dial 443)."""
    from kfp_serve.components.validate.targets import target_for

    signature = ModelSignature.load(digits_onnx)
    service = KServeInferenceService(name="digits", namespace="models", model_name="digits",
                                     validation_url="http://digits.models.svc.cluster.local",
                                     url="http://digits.models.example.com", protocol="grpc-v2")
    assert target_for(service, signature).address == "digits.models.svc.cluster.local:80"
    local = replace(service, validation_url="http://127.0.0.1:9000")
    assert target_for(local, signature).address == "127.0.0.1:9000"
