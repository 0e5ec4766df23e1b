"""A pure builder for ``serving.kserve.io/v1beta1`` InferenceService manifests."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.errors import UserError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
MODEL_FORMATS = ("triton", "onnx", "pytorch", "tensorrt")
#: the modelFormat a published artifact is served with when none is asked for
DEFAULT_MODEL_FORMATS = {"TritonRepository": "triton", "TorchServeArchive": "pytorch"}
PROTOCOLS = ("v1", "v2", "grpc-v2")
DEPLOYMENT_MODES = ("Serverless", "RawDeployment")
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "oci://")
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
    deployment_mode: str = "Serverless"
    canary_traffic_percent: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)
    #: dotted paths in ``override`` that change identity or privilege, allowed on purpose
    override_allowed: tuple[str, ...] = ()


def validate_name(name: str, what: str = "InferenceService name") -> str:
    if len(name) > 63 or not _NAME.match(name):
        raise UserError(
            f"{what} {name!r} is not a valid DNS-1035 label: use at most 63 lowercase letters,"
            " digits and '-', starting with a letter and ending with a letter or digit"
        )
    return name


def _check(spec: InferenceServiceSpec) -> None:
    validate_name(spec.name)
    if not _NAMESPACE.match(spec.namespace) or len(spec.namespace) > 63:
        raise UserError(f"namespace {spec.namespace!r} is not a valid DNS-1123 label")
    choices = ((spec.model_format, MODEL_FORMATS, "model_format"),
               (spec.protocol_version, PROTOCOLS, "protocol_version"),
               (spec.deployment_mode, DEPLOYMENT_MODES, "deployment_mode"))
    for value, allowed, what in choices:
        if value not in allowed:
            raise UserError(f"{what} {value!r} is not one of {list(allowed)}")
    if spec.scale_metric is not None and spec.scale_metric not in SCALE_METRICS:
        raise UserError(f"scale_metric {spec.scale_metric!r} is not one of {list(SCALE_METRICS)}")
    if not spec.storage_uri.startswith(STORAGE_SCHEMES):
        raise UserError(f"storage_uri {spec.storage_uri!r} must start with one of {list(STORAGE_SCHEMES)}")
    if spec.canary_traffic_percent is not None and not 0 <= spec.canary_traffic_percent <= 100:
        raise UserError(f"canary_traffic_percent {spec.canary_traffic_percent} must be 0-100")
    if spec.gpus < 0:
        raise UserError("gpus must be >= 0")
    if spec.min_replicas is not None and spec.min_replicas < 0:
        raise UserError("min_replicas must be >= 0")
    if (spec.max_replicas is not None and spec.min_replicas is not None
            and spec.max_replicas < spec.min_replicas):
        raise UserError(f"max_replicas {spec.max_replicas} is below min_replicas {spec.min_replicas}")
    if spec.deployment_mode == "RawDeployment" and spec.min_replicas == 0:
        raise UserError("RawDeployment cannot scale to zero; set min_replicas >= 1 or use Serverless")


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
    resources: dict[str, dict[str, Any]] = {}
    for key, value in (("cpu", spec.cpu), ("memory", spec.memory)):
        if value:
            resources.setdefault("requests", {})[key] = value
            resources.setdefault("limits", {})[key] = value
    if spec.gpus:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = spec.gpus
        resources.setdefault("requests", {})["nvidia.com/gpu"] = spec.gpus
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "protocolVersion": spec.protocol_version,
        "storageUri": spec.storage_uri,
    }
    if spec.runtime:
        model["runtime"] = spec.runtime
    if resources:
        model["resources"] = resources
    predictor: dict[str, Any] = {"model": model}
    optional = {
        "serviceAccountName": spec.service_account,
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "scaleMetric": spec.scale_metric,
        "scaleTarget": spec.scale_target,
        "containerConcurrency": spec.container_concurrency,
        "timeout": spec.timeout_s,
        # 100 % to the new revision is a full rollout: KServe's default, so no field
        "canaryTrafficPercent": None if spec.canary_traffic_percent == 100 else spec.canary_traffic_percent,
        "nodeSelector": dict(spec.node_selector) or None,
        "tolerations": list(spec.tolerations) or None,
    }
    predictor.update({k: v for k, v in optional.items() if v is not None})
    annotations = {DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode, **spec.annotations}
    if spec.canary_traffic_percent not in (None, 100):
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
    return merged
