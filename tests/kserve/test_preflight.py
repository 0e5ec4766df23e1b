"""Before anything changes: RBAC, the namespace, Knative, the serving runtime, Workload Identity."""


import pytest
from support.kserve import cluster_for, make_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.manifest import (
    build_inference_service,
)
from kfp_serve.components.kserve.preflight import preflight


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


def test_rbac_namespace_and_runtime_preflight(kube, published):
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
    assert api.objects == {} and api.network_policies == {}  # refused before anything was written
