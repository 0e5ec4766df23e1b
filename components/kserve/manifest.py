"""A pure builder for ``serving.kserve.io/v1beta1`` InferenceService manifests."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve import gke, sources
from kfp_serve.components.kserve.keda import PrometheusScaling

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
MODEL_FORMATS = ("triton", "onnx", "pytorch", "tensorrt")
#: the formats of KServe's LLM runtimes (deploy_kserve_llm checks the model before using them)
LLM_MODEL_FORMATS = ("vLLM", "huggingface")
#: the modelFormat a published artifact is served with when none is asked for
DEFAULT_MODEL_FORMATS = {"TritonRepository": "triton", "TorchServeArchive": "pytorch"}
PROTOCOLS = ("v1", "v2", "grpc-v2")
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
#: KServe's deployment modes and the deprecated spellings its mutating webhook rewrites to them
#: (pkg/constants/constants.go ParseDeploymentMode; inference_service_defaults.go). The
#: manifest carries the deprecated spelling: KServe releases before the rename accept only it
#: (anything else silently falls back to the cluster default), later ones rewrite it.
DEPLOYMENT_MODES = {"Knative": "Knative", "Serverless": "Knative",
                    "Standard": "Standard", "RawDeployment": "Standard"}
MANIFEST_MODE = {"Knative": "Serverless", "Standard": "RawDeployment"}
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
#: the metrics each autoscaler takes (KServe constants.go AutoscalerAllowed*MetricsList)
KNATIVE_METRICS, HPA_METRICS = ("concurrency", "rps"), ("cpu", "memory")
AUTOSCALER_CLASSES = ("hpa", "keda", "external", "none")  # constants.AutoscalerAllowedClassList
#: Knative Serving's max-revision-timeout-seconds default (config-defaults)
KNATIVE_MAX_TIMEOUT_S = 600
#: the port Triton serves gRPC on in KServe's runtime (kserve-tritonserver: --grpc-port=9000)
TRITON_GRPC_PORT = 9000
#: ... and REST on 8080 (kserve-tritonserver: --http-port=8080)
TRITON_HTTP_PORT = 8080
#: how a Standard-mode predictor Deployment replaces its pods (Kubernetes DeploymentStrategy)
ROLLOUT_STRATEGIES = ("RollingUpdate", "Recreate")
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "oci://", "hf://")
# InferenceService names become DNS-1035 labels of Services and Knative routes
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class InferenceServiceSpec:
    """Everything the builder needs; defaults are what most Triton deployments want."""

    name: str
    namespace: str
    storage_uri: str
    model_format: str = "triton"
    protocol_version: str = "v2"
    runtime: str | None = None
    service_account: str | None = None
    cpu: str | None = "1"
    memory: str | None = "2Gi"
    gpus: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    min_replicas: int | None = 1
    max_replicas: int | None = None
    scale_metric: str | None = None
    scale_target: int | None = None
    container_concurrency: int | None = None
    timeout_s: int | None = None
    deployment_mode: str = "Knative"
    autoscaler_class: str | None = None
    runtime_version: str | None = None
    canary_traffic_percent: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)
    #: dotted paths in ``override`` that change identity or privilege, allowed on purpose
    override_allowed: tuple[str, ...] = ()
    gke: gke.GkePresets = field(default_factory=gke.GkePresets)
    #: Standard mode: ``RollingUpdate`` (Kubernetes' default: a new pod starts before an old one
    #: stops, so a GPU model needs a spare GPU) or ``Recreate`` (the old pod stops first: a short
    #: outage, no spare GPU); None leaves KServe's default
    rollout_strategy: str | None = None
    #: namespaces whose pods may call the predictor (a NetworkPolicy); empty: no policy
    ingress_from_namespaces: tuple[str, ...] = ()
    #: Standard mode: scale on a Prometheus query through KEDA
    metric_scaling: PrometheusScaling | None = None


def validate_name(name: str, what: str = "InferenceService name") -> str:
    if len(name) > 63 or not _NAME.match(name):
        raise UserError(
            f"{what} {name!r} is not a valid DNS-1035 label: use at most 63 lowercase letters,"
            " digits and '-', starting with a letter and ending with a letter or digit"
        )
    return name


#: a DNS label (RFC 1123) and a label value have at most 63 characters
DNS_LABEL_MAX = 63


#: how a Standard-mode canary's name (``c`` and four hex digits, canary.py) shows in messages
CANARY_PLACEHOLDER = "cXXXX"


def derived_names(name: str, namespace: str, mode: str, canary: bool) -> list[tuple[str, str]]:
    """The names KServe and Knative derive from an InferenceService's name, each of which must
    be a DNS label or label value of at most 63 characters, with what makes it:

    - both modes: the predictor's Service/Knative Service ``<name>-predictor``
      (pkg/constants/constants.go PredictorServiceName);
    - Knative: the route's host label ``<name>-predictor`` (Knative's default domain template
      ``{{.Name}}.{{.Namespace}}.{{.Domain}}``) and, with tag routing, the tagged hosts
      ``latest-<name>-predictor`` and ``prev-<name>-predictor`` (tag template
      ``{{.Tag}}-{{.Name}}``); revision names are shortened by Knative and never fail;
    - Standard: the host label ``<name>-predictor-<namespace>`` and the top-level
      ``<name>-<namespace>`` (KServe's default domain template ``{{ .Name }}-{{ .Namespace }}``,
      checked by IsFullyQualifiedDomainName in reconcilers/ingress/domain.go), and the pod label
      ``app: isvc.<name>-predictor`` (constants.GetRawServiceLabel); with a canary the same
      for ``<name>-<canary>-predictor``, the canary's Deployment and Service, which become the
      stable ones when it is promoted.
    """
    predictor = f"{name}-predictor"
    names = [(predictor, "the predictor's Service")]
    if mode == "Knative":
        names.append((predictor, "Knative's route host label"))
        if canary:
            names += [(f"latest-{predictor}", "the canary's tagged host label"),
                      (f"prev-{predictor}", "the previous revision's tagged host label")]
        return names
    predictors = [predictor] + ([f"{name}-{CANARY_PLACEHOLDER}-predictor"] if canary else [])
    for service in predictors:
        whose = "the canary's" if service != predictor else "the predictor's"
        names += [(service, f"{whose} Service"), (f"{service}-{namespace}", f"{whose} host label"),
                  (f"isvc.{service}", f"{whose} pods' app label")]
    names.append((f"{name}-{namespace}", "the InferenceService's host label"))
    return names


def check_derived_names(name: str, namespace: str, mode: str, canary: bool) -> None:
    """Refuse, before anything is applied, a name whose derived names outgrow a DNS label:
    KServe would accept the InferenceService and fail to reconcile it (or, for a tagged
    Knative route, never become Ready)."""
    names = derived_names(name, namespace, mode, canary)
    for derived, what in names:
        if len(derived) > DNS_LABEL_MAX:
            most = DNS_LABEL_MAX - max(len(d) - len(name) for d, _ in names)
            fix = (f"use a name of at most {most} characters" if most >= 1 else
                   f"use a namespace of at most {DNS_LABEL_MAX - len(derived) + len(namespace)}"
                   " characters")
            raise UserError(
                f"InferenceService name {name!r} is too long for {mode} mode"
                f"{' with a canary' if canary else ''} in namespace {namespace!r}: {what}"
                f" {derived!r} has {len(derived)} characters, over the {DNS_LABEL_MAX} a DNS label"
                f" allows; {fix}")


def deployment_mode(value: str) -> str:
    """``Knative`` or ``Standard`` for any spelling KServe accepts; ModelMesh and unknown values
    are refused (an unknown one would silently fall back to the cluster's default mode)."""
    if value == "ModelMesh":
        raise UserError("deployment_mode 'ModelMesh' is not supported: kfp-serve deploys one model"
                        " per InferenceService; use 'Knative' or 'Standard'")
    if value not in DEPLOYMENT_MODES:
        raise UserError(f"deployment_mode {value!r} is not one of ['Knative', 'Standard'] (or the"
                        " deprecated 'Serverless', 'RawDeployment')")
    return DEPLOYMENT_MODES[value]


def _check_scaling(spec: InferenceServiceSpec, mode: str) -> None:
    """The autoscaling rules of KServe's webhook and reconcilers, per mode, as one-line errors
    (KServe would refuse some at admission and silently ignore others)."""
    if spec.metric_scaling is not None:
        spec.metric_scaling.check(mode, spec.autoscaler_class, spec.scale_metric)
    if mode == "Knative":
        if spec.autoscaler_class is not None:
            raise UserError("autoscaler_class applies to deployment_mode 'Standard'; Knative mode"
                            " scales with Knative's autoscaler (scale_metric concurrency or rps)")
        if spec.scale_metric in HPA_METRICS and spec.min_replicas == 0:
            raise UserError(f"scale_metric {spec.scale_metric!r} uses Knative's HPA class, which"
                            " cannot scale to zero; set min_replicas >= 1 or scale on concurrency/rps")
        if spec.timeout_s is not None and spec.timeout_s > KNATIVE_MAX_TIMEOUT_S:
            raise UserError(f"timeout_s {spec.timeout_s} is above Knative's revision timeout limit"
                            f" ({KNATIVE_MAX_TIMEOUT_S}s by default, max-revision-timeout-seconds);"
                            " lower it or raise that limit in config-defaults first")
        return
    if spec.autoscaler_class is not None and spec.autoscaler_class not in AUTOSCALER_CLASSES:
        raise UserError(f"autoscaler_class {spec.autoscaler_class!r} is not one of"
                        f" {list(AUTOSCALER_CLASSES)}")
    keda = spec.autoscaler_class == "keda" or spec.metric_scaling is not None
    if spec.scale_metric in KNATIVE_METRICS:
        raise UserError(f"scale_metric {spec.scale_metric!r} needs deployment_mode 'Knative':"
                        " Standard mode scales with an HPA on cpu or memory (KServe ignores"
                        " concurrency/rps there); for request-based scaling use autoscaler_class"
                        " 'keda' with spec.predictor.autoScaling in override")
    if keda and spec.scale_metric is not None:
        raise UserError("scale_metric is not supported with autoscaler_class 'keda' (KServe's"
                        " webhook refuses it); give the KEDA metrics as spec.predictor.autoScaling"
                        " in override")
    if spec.container_concurrency is not None:
        raise UserError("container_concurrency is a Knative setting; Standard mode has no"
                        " per-replica request limit (leave it 0 or use deployment_mode 'Knative')")
    if spec.min_replicas == 0 and not keda:
        raise UserError("Standard mode scales to zero only with KEDA: set min_replicas >= 1, or"
                        " autoscaler_class 'keda', or deployment_mode 'Knative'")


def _check(spec: InferenceServiceSpec) -> None:
    validate_name(spec.name)
    if not _NAMESPACE.match(spec.namespace) or len(spec.namespace) > 63:
        raise UserError(f"namespace {spec.namespace!r} is not a valid DNS-1123 label")
    choices = ((spec.model_format, MODEL_FORMATS + LLM_MODEL_FORMATS, "model_format"),
               (spec.protocol_version, PROTOCOLS, "protocol_version"))
    for value, allowed, what in choices:
        if value not in allowed:
            raise UserError(f"{what} {value!r} is not one of {list(allowed)}")
    if spec.scale_metric is not None and spec.scale_metric not in SCALE_METRICS:
        raise UserError(f"scale_metric {spec.scale_metric!r} is not one of {list(SCALE_METRICS)}")
    if not spec.storage_uri.startswith(STORAGE_SCHEMES):
        raise UserError(f"storage_uri {spec.storage_uri!r} must start with one of {list(STORAGE_SCHEMES)}")
    sources.check_uri(spec.storage_uri)
    if spec.canary_traffic_percent is not None and not 0 <= spec.canary_traffic_percent <= 100:
        raise UserError(f"canary_traffic_percent {spec.canary_traffic_percent} must be 0-100")
    if spec.gpus < 0:
        raise UserError("gpus must be >= 0")
    if spec.min_replicas is not None and spec.min_replicas < 0:
        raise UserError("min_replicas must be >= 0")
    if (spec.max_replicas is not None and spec.min_replicas is not None
            and spec.max_replicas < spec.min_replicas):
        raise UserError(f"max_replicas {spec.max_replicas} is below min_replicas {spec.min_replicas}")
    mode = deployment_mode(spec.deployment_mode)
    _check_scaling(spec, mode)
    if spec.rollout_strategy is not None:
        if spec.rollout_strategy not in ROLLOUT_STRATEGIES:
            raise UserError(f"rollout_strategy {spec.rollout_strategy!r} is not one of"
                            f" {list(ROLLOUT_STRATEGIES)}")
        if mode != "Standard":
            raise UserError("rollout_strategy applies to deployment_mode 'Standard' (a Deployment);"
                            " Knative mode rolls out revisions beside each other")
    gke.check(spec.gke, spec.gpus, spec.service_account)
    for namespace in spec.ingress_from_namespaces:
        if not _NAMESPACE.match(namespace):
            raise UserError(f"ingress_from_namespaces: {namespace!r} is not a namespace name")


#: pod-spec keys that change who a pod runs as or what it may touch on the node: an override
#: (a pipeline parameter) may not set them unless ``override_allowed`` names their path
PRIVILEGED_KEYS = frozenset({
    "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "hostNetwork",
    "hostPID", "hostIPC", "hostUsers", "nodeName", "privileged", "allowPrivilegeEscalation",
    "capabilities", "hostPath", "hostPort", "procMount", "runAsUser", "runAsGroup",
    "runAsNonRoot", "sysctls", "seLinuxOptions", "seccompProfile", "appArmorProfile",
})


def privileged_paths(override: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key in ``override`` that changes identity or privilege."""
    found = []
    if isinstance(override, dict):
        for key, value in override.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found += [path] if key in PRIVILEGED_KEYS else privileged_paths(value, path)
    elif isinstance(override, list):
        for index, item in enumerate(override):
            found += privileged_paths(item, f"{prefix}[{index}]")
    return found


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: dicts merge key by key, anything else
    (lists included) replaces; a ``None`` value removes the key (as in a JSON merge patch)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_inference_service(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The InferenceService manifest (a plain dict, ready for the Kubernetes API)."""
    _check(spec)
    mode = deployment_mode(spec.deployment_mode)
    gpus, node_selector, tolerations, container, preset_annotations = gke.apply(
        spec.gke, spec.gpus, mode, spec.model_format)
    node_selector.update(spec.node_selector)
    tolerations += [t for t in spec.tolerations if t not in tolerations]
    resources: dict[str, dict[str, Any]] = {}
    for key, value in (("cpu", spec.cpu), ("memory", spec.memory)):
        if value:
            resources.setdefault("requests", {})[key] = value
            resources.setdefault("limits", {})[key] = value
    if gpus:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        resources.setdefault("requests", {})["nvidia.com/gpu"] = gpus
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "protocolVersion": spec.protocol_version,
        "storageUri": spec.storage_uri,
    }
    if spec.runtime:
        model["runtime"] = spec.runtime
    if spec.runtime_version:
        model["runtimeVersion"] = spec.runtime_version
    if spec.protocol_version == "grpc-v2":
        # KServe serves gRPC only through a port named h2c; the Triton runtime listens for gRPC
        # on 9000. Knative takes one port. A Standard-mode Service exposes the first port on 80
        # and every further one on its own number (service_reconciler.go createDefaultSvc), so
        # REST stays reachable on 8080 beside gRPC
        model["ports"] = [{"name": "h2c", "protocol": "TCP", "containerPort": TRITON_GRPC_PORT}]
        if mode == "Standard" and spec.model_format in ("triton", "onnx", "tensorrt"):
            model["ports"].append({"name": "http1", "protocol": "TCP", "containerPort": TRITON_HTTP_PORT})
    if resources:
        model["resources"] = resources
    model.update(container)
    predictor: dict[str, Any] = {"model": model}
    optional = {
        "serviceAccountName": spec.service_account,
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "scaleMetric": spec.scale_metric,
        "scaleTarget": spec.scale_target,
        "containerConcurrency": spec.container_concurrency,
        "timeout": spec.timeout_s,
        # 100 % to the new revision is a full rollout: KServe's default, so no field. In
        # Standard mode the deploy turns it into a spec.canary entry (canary.py)
        "canaryTrafficPercent": None if spec.canary_traffic_percent == 100 else spec.canary_traffic_percent,
        "nodeSelector": node_selector or None,
        "tolerations": tolerations or None,
        "deploymentStrategy": {"type": spec.rollout_strategy} if spec.rollout_strategy else None,
        "autoScaling": spec.metric_scaling.to_autoscaling() if spec.metric_scaling else None,
    }
    predictor.update({k: v for k, v in optional.items() if v is not None})
    annotations = {DEPLOYMENT_MODE_ANNOTATION: MANIFEST_MODE[mode], **preset_annotations,
                   **spec.annotations}
    if spec.autoscaler_class or spec.metric_scaling:
        annotations[AUTOSCALER_CLASS_ANNOTATION] = spec.autoscaler_class or "keda"
    if mode == "Knative" and spec.scale_metric in HPA_METRICS:
        annotations.setdefault(KNATIVE_CLASS_ANNOTATION, KNATIVE_HPA_CLASS)
    if mode == "Knative" and spec.canary_traffic_percent not in (None, 100):
        # tagged revisions get their own URL, so validation can call the canary itself
        annotations.setdefault(TAG_ROUTING_ANNOTATION, "true")
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/managed-by": "kfp-serve", **spec.labels},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }
    refused = [p for p in privileged_paths(spec.override) if p not in spec.override_allowed]
    if refused:
        raise UserError(
            f"the override sets {refused}, which change the identity or privileges of the serving"
            " pod; use service_account for the pod's identity, or list those paths in"
            " override_allowed if this is intended (the models namespace's Pod Security level"
            " still applies)")
    merged = deep_merge(manifest, spec.override)
    if (merged["metadata"].get("name"), merged["metadata"].get("namespace")) != (spec.name, spec.namespace):
        raise UserError("the override may not change metadata.name or metadata.namespace")
    canary = (merged["metadata"].get("annotations", {}).get(TAG_ROUTING_ANNOTATION) == "true"
              if mode == "Knative" else spec.canary_traffic_percent not in (None, 100))
    check_derived_names(spec.name, spec.namespace, mode, canary)
    return merged


def build_network_policy(spec: InferenceServiceSpec) -> dict[str, Any] | None:
    """A NetworkPolicy admitting traffic to the predictor pods only from
    ``spec.ingress_from_namespaces`` (plus knative-serving in Knative mode, whose activator
    proxies requests while a revision scales from zero); None when none are named."""
    if not spec.ingress_from_namespaces:
        return None
    namespaces = list(dict.fromkeys(spec.ingress_from_namespaces))
    if deployment_mode(spec.deployment_mode) == "Knative" and "knative-serving" not in namespaces:
        namespaces.append("knative-serving")
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{spec.name}-ingress", "namespace": spec.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "kfp-serve"}},
        "spec": {
            "podSelector": {"matchLabels": {"serving.kserve.io/inferenceservice": spec.name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}}]}],
        },
    }
