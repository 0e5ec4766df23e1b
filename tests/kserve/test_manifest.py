"""InferenceService manifests from the builder, checked against KServe's real CRD schema."""


import pytest
from support.kserve import make_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.manifest import (
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
    {"deployment_mode": "Standard", "min_replicas": 2, "max_replicas": 3, "scale_metric": "cpu",
     "scale_target": 70},
    {"deployment_mode": "Standard", "autoscaler_class": "keda", "min_replicas": 0, "max_replicas": 3},
    {"canary_traffic_percent": 10, "service_account": "kfp-serve", "labels": {"team": "ml"},
     "annotations": {"sidecar.istio.io/inject": "true"}},
    {"override": {"spec": {"predictor": {"model": {"env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
                                         "minReplicas": 2}}}},
]


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


@pytest.mark.parametrize(("name", "namespace", "variant", "refused"), [
    ("a" * 46, "models", {"canary_traffic_percent": 10}, None),
    ("a" * 47, "models", {"canary_traffic_percent": 10},
     "the canary's tagged host label 'latest-a{47}-predictor' has 64 characters.* at most 46 characters"),
    ("a" * 53, "models", {}, None),
    ("a" * 54, "models", {}, "the predictor's Service 'a{54}-predictor' has 64 characters.* at most 53"),
    ("a" * 46, "models", {"deployment_mode": "Standard"}, None),
    ("a" * 47, "models", {"deployment_mode": "Standard"},
     "the predictor's host label 'a{47}-predictor-models' has 64 characters.* at most 46 characters"),
    ("digits", "n" * 60, {"deployment_mode": "Standard"}, "use a namespace of at most 46 characters"),
    # a Standard-mode canary's Deployment <name>-cXXXX-predictor becomes the stable one on promotion
    ("a" * 40, "models", {"deployment_mode": "Standard", "canary_traffic_percent": 10}, None),
    ("a" * 41, "models", {"deployment_mode": "Standard", "canary_traffic_percent": 10},
     "with a canary in namespace 'models': the canary's host label 'a{41}-cXXXX-predictor-models' has 64"
     " characters.* at most 40 characters"),
])
def test_names_kserve_would_fail_to_reconcile_are_refused_before_the_apply(name, namespace, variant, refused):
    """Each limit is derived from the name upstream builds (manifest.derived_names)."""
    spec = make_spec(name=name, namespace=namespace, **variant)
    if refused is None:
        build_inference_service(spec)
        return
    with pytest.raises(UserError, match=refused) as info:
        build_inference_service(spec)
    assert info.value.exit_code == 2


def test_standard_mode_grpc_keeps_rest_reachable_and_takes_a_rollout_strategy():
    """A Standard-mode Service exposes the first container port on 80 and the others on their
    own numbers: gRPC first (h2c), REST beside it on 8080; Knative takes one port."""
    standard = build_inference_service(make_spec(deployment_mode="Standard", protocol_version="grpc-v2",
                                                 rollout_strategy="Recreate"))
    model = standard["spec"]["predictor"]["model"]
    assert [p["containerPort"] for p in model["ports"]] == [9000, 8080]
    assert standard["spec"]["predictor"]["deploymentStrategy"] == {"type": "Recreate"}
    knative = build_inference_service(make_spec(protocol_version="grpc-v2"))
    assert [p["name"] for p in knative["spec"]["predictor"]["model"]["ports"]] == ["h2c"]
    with pytest.raises(UserError, match="rollout_strategy applies to deployment_mode 'Standard'"):
        build_inference_service(make_spec(rollout_strategy="Recreate"))
    with pytest.raises(UserError, match="rollout_strategy 'BlueGreen' is not one of"):
        build_inference_service(make_spec(deployment_mode="Standard", rollout_strategy="BlueGreen"))
