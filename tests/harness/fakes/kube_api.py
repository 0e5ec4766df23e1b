"""A behavioural fake of the Kubernetes API for KServe, and a fake KServe controller.

The API side speaks the real REST protocol the official client uses: namespaces, pods, pod
logs, events, SelfSubjectAccessReview, (Cluster)ServingRuntimes and InferenceServices with
create/get/replace/merge-patch/delete, the status subresource, generation/resourceVersion
bookkeeping, 409 on a stale resourceVersion or an existing name, dryRun=All, 422 when an object
violates the CRD schema, and unknown fields refused (400, fieldValidation=Strict) or pruned
(otherwise, the API server's Warn default).

KServe's admission webhooks are part of the API side: the deprecated mode names are rewritten,
a mode change and autoscaling settings KServe refuses are denied with 403, as
controller-runtime's validators do. API discovery lists ``serving.knative.dev`` only when
Knative is installed (``knative``); listing ClusterServingRuntimes can be forbidden
(``forbidden_lists``). ``standard_canary=False`` plays a KServe before 0.20: its CRD has no
``spec.canary`` (with ``crd_schema``: refused or pruned as above; without one, as with KServe's
minimal CRD that keeps unknown fields, it is stored) and its controller and webhook ignore it.

The controller reconciles each InferenceService the way KServe does in its mode, on this
machine (tests/harness/fakes/KSERVE_BEHAVIOUR.md is the list of behaviours, with their upstream
sources): it copies ``storageUri`` from the GCS emulator as the storage initializer does (every
object under the prefix, unchecked: fakes/storage_copy.py), serves
it with the local Triton runtime, and writes status (conditions, revisions, traffic, URLs,
observedGeneration of the child object); a gateway routes the cluster-local hosts. The
annotation ``fake.kserve.io/behavior`` asks for failures instead: ``never-ready``,
``image-pull``, ``unschedulable``, ``unschedulable-for-a-while``.
"""

from __future__ import annotations

import copy
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fakes.cluster_gateway import CLUSTER_SUFFIX
from fakes.crd_schema import (
    KSERVE_DATA,
    load_monitoring_schema,
    prune,
    schema_errors,
    unknown_fields,
    without_canary,
)
from fakes.storage_copy import copy_prefix

MODE_KEY = "serving.kserve.io/deploymentMode"
TAG_KEY = "serving.kserve.io/enable-tag-routing"
LEGACY_MODES = {"Serverless": "Knative", "RawDeployment": "Standard"}
WEBHOOK = 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")
SERVICE_ACCOUNT = re.compile(r"^/api/v1/namespaces/([^/]+)/serviceaccounts/([^/]+)$")

ISVC = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?(/status)?$")
RUNTIMES = re.compile(r"^/apis/serving\.kserve\.io/v1alpha1/(?:namespaces/([^/]+)/)?(servingruntimes|clusterservingruntimes)$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
OWNED = re.compile(r"^/api(?:s/(monitoring\.googleapis\.com|monitoring\.coreos\.com)/v1|/v1)/namespaces/([^/]+)/"
                   r"(services|podmonitorings|servicemonitors)(?:/([^/]+))?$")
MONITORING_GROUPS = {"podmonitorings": "monitoring.googleapis.com", "servicemonitors": "monitoring.coreos.com"}


def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                  "reason": reason, "code": code}


class FakeKubeApi:
    def __init__(self, namespaces=("models",), runtimes=(), denied_verbs=(), crd_schema=None,
                 knative=True, default_mode="Knative", forbidden_lists=(), standard_canary=True,
                 monitoring=()):
        self.knative = knative
        #: monitoring API groups installed (monitoring.googleapis.com, monitoring.coreos.com)
        self.monitoring = tuple(monitoring)
        #: Services and monitoring objects: (kind plural, namespace, name) -> object
        self.owned: dict[tuple[str, str, str], dict] = {}
        self.standard_canary = standard_canary
        if crd_schema is not None and not standard_canary:
            crd_schema = without_canary(crd_schema)
        self.default_mode = default_mode
        self.forbidden_lists = set(forbidden_lists)
        self.deployments: dict[tuple[str, str], dict] = {}
        self.service_accounts: dict[tuple[str, str], dict] = {}
        self.network_policies: dict[tuple[str, str], dict] = {}
        #: (namespace, name) -> ConfigMap; those in forbidden_config_maps the caller may not
        #: read (RBAC), though KServe's controller reads them
        self.config_maps: dict[tuple[str, str], dict] = {}
        self.forbidden_config_maps: set[tuple[str, str]] = set()
        #: what hf:// and oci:// sources hold: "owner/model[:revision]" or an image reference ->
        #: a local folder (the Hub and the registry, on this machine)
        self.hub: dict[str, Path] = {}
        self.images: dict[str, Path] = {}
        self.namespaces = set(namespaces)
        self.runtimes = list(runtimes)
        self.denied_verbs = set(denied_verbs)
        self.schema = crd_schema
        self.objects: dict[tuple[str, str], dict] = {}
        self.pods: dict[str, list[dict]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.events: list[dict] = []
        self.lock = threading.RLock()
        self.version = 0
        self.controller: FakeKServeController | None = None
        # failure injection: the next requests answer these statuses, as an overloaded or
        # restarting API server does (429 TooManyRequests, 5xx), then everything is normal
        self.faults: list[int] = []
        self.requests = 0
        #: the step that writes an InferenceService next dies right after the write: the request
        #: after it is never answered (the client sees its connection reset)
        self.die_after_write = False

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def __call__(self, method, path, query, body):
        with self.lock:
            self.requests += 1
            if self.faults:
                code = self.faults.pop(0)
                reason = "TooManyRequests" if code == 429 else "ServiceUnavailable"
                return _status(code, reason, "the server is currently unable to handle the request")
            if self.die_after_write == "dead":
                self.die_after_write = False
                return _status(401, "Unauthorized", "the step's token was revoked: it is gone")
            answer = self._route(method, path, query, body)
            if (self.die_after_write is True and method in ("POST", "PUT") and ISVC.match(path)
                    and not query.get("dryRun") and answer[0] < 300):
                self.die_after_write = "dead"
            return answer

    def _route(self, method, path, query, body):
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            attributes = body["spec"]["resourceAttributes"]
            allowed = attributes["verb"] not in self.denied_verbs
            return 201, dict(body, status={"allowed": allowed})
        if path in ("/apis", "/apis/") and method == "GET":
            groups = ["serving.kserve.io", "apps", *self.monitoring] + (
                ["serving.knative.dev"] if self.knative else [])
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]}
        for pattern, store, kind in ((DEPLOYMENT, self.deployments, "deployments.apps"),
                                     (SERVICE_ACCOUNT, self.service_accounts, "serviceaccounts")):
            match = pattern.match(path)
            if match and method == "GET":  # read-only objects the tests place
                found = store.get((match.group(1), match.group(2)))
                if found is None:
                    return _status(404, "NotFound", f'{kind} "{match.group(2)}" not found')
                return 200, copy.deepcopy(found)
        match = OWNED.match(path)
        if match and (match.group(1) is None or match.group(1) in self.monitoring):
            return self._owned(method, match.group(2), match.group(3), match.group(4), query, body)
        match = re.match(r"^/api/v1/namespaces/([^/]+)/configmaps/([^/]+)$", path)
        if match and method == "GET":
            found = self.config_maps.get((match.group(1), match.group(2)))
            if (match.group(1), match.group(2)) in self.forbidden_config_maps:
                return _status(403, "Forbidden", f'configmaps "{match.group(2)}" is forbidden: User'
                               ' "system:serviceaccount:kubeflow:kfp-serve-deployer" cannot get'
                               f' resource "configmaps" in the namespace "{match.group(1)}"')
            if found is None:
                return _status(404, "NotFound", f'configmaps "{match.group(2)}" not found')
            return 200, copy.deepcopy(found)
        match = re.match(r"^/apis/networking\.k8s\.io/v1/namespaces/([^/]+)/networkpolicies(?:/([^/]+))?$", path)
        if match:
            return self._network_policy(method, match.group(1), match.group(2), body)
        match = re.match(r"^/api/v1/namespaces/([^/]+)$", path)
        if match and method == "GET":
            if match.group(1) not in self.namespaces:
                return _status(404, "NotFound", f'namespaces "{match.group(1)}" not found')
            return 200, {"kind": "Namespace", "metadata": {"name": match.group(1)}}
        match = re.match(r"^/api/v1/namespaces/([^/]+)/pods$", path)
        if match:
            label, _, value = query.get("labelSelector", "").partition("=")
            items = [pod for pods in self.pods.values() for pod in pods
                     if pod["metadata"]["labels"].get(label) == value]
            return 200, {"kind": "PodList", "items": copy.deepcopy(items)}
        match = POD_LOG.match(path)
        if match:
            return 200, self.logs.get((match.group(2), query.get("container", "")), "")
        if re.match(r"^/api/v1/namespaces/([^/]+)/events$", path):
            return 200, {"kind": "EventList", "items": copy.deepcopy(self.events)}
        match = RUNTIMES.match(path)
        if match:
            namespaced = match.group(2) == "servingruntimes"
            if match.group(2) in self.forbidden_lists:
                return _status(403, "Forbidden", f'{match.group(2)}.serving.kserve.io is forbidden: User'
                               ' "system:serviceaccount:kubeflow:kfp-serve-deployer" cannot list resource'
                               f' "{match.group(2)}" in API group "serving.kserve.io" at the cluster scope')
            items = [r for r in self.runtimes if (r["kind"] == "ServingRuntime") == namespaced]
            return 200, {"items": copy.deepcopy(items)}
        match = ISVC.match(path)
        if match:
            return self._isvc(method, match.group(1), match.group(2), bool(match.group(3)), query, body)
        return _status(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _owned(self, method, namespace, plural, name, query, body):
        """Services, PodMonitorings and ServiceMonitors: create (409 when it exists), get,
        replace at the current resourceVersion; monitoring objects checked against their CRD
        (422), unknown fields refused under strict validation."""
        key = (plural, namespace, name or (body or {}).get("metadata", {}).get("name", ""))
        current = self.owned.get(key)
        if method == "GET":
            if current is None:
                return _status(404, "NotFound", f'{plural} "{key[2]}" not found')
            return 200, copy.deepcopy(current)
        if plural != "services":
            schema = load_monitoring_schema(MONITORING_GROUPS[plural], plural)
            errors = schema_errors(body, schema)
            port = [e.get("port") for e in body.get("spec", {}).get("endpoints", [])]
            if plural == "podmonitorings" and 0 in port:  # the CRD's CEL rule self != 0
                errors.append("spec.endpoints.port: Invalid value: Port is required")
            if errors:
                return _status(422, "Invalid", f"{body.get('kind')}.{MONITORING_GROUPS[plural]}"
                               f' "{key[2]}" is invalid: ' + "; ".join(errors))
        elif not body.get("spec", {}).get("ports"):
            return _status(422, "Invalid", f'Service "{key[2]}" is invalid: spec.ports: Required value')
        new = copy.deepcopy(body)
        if method == "POST":
            if current is not None:
                return _status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
        elif method == "PUT":
            if current is None:
                return _status(404, "NotFound", f'{plural} "{key[2]}" not found')
            if new.get("metadata", {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'the object "{key[2]}" has been modified')
        else:
            return _status(405, "MethodNotAllowed", method)
        new["metadata"].update(namespace=namespace, resourceVersion=self._next_version())
        self.owned[key] = new
        return (201 if method == "POST" else 200), copy.deepcopy(new)

    def _network_policy(self, method, namespace, name, body):
        key = (namespace, name or body.get("metadata", {}).get("name", ""))
        current = self.network_policies.get(key)
        if method == "POST":
            if current is not None:
                return _status(409, "AlreadyExists", f'networkpolicies.networking.k8s.io "{key[1]}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"]["resourceVersion"] = self._next_version()
            self.network_policies[key] = obj
            return 201, copy.deepcopy(obj)
        if current is None:
            return _status(404, "NotFound", f'networkpolicies.networking.k8s.io "{key[1]}" not found')
        if method == "GET":
            return 200, copy.deepcopy(current)
        if method == "PUT":
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified")
            obj = copy.deepcopy(body)
            obj["metadata"]["resourceVersion"] = self._next_version()
            self.network_policies[key] = obj
            return 200, copy.deepcopy(obj)
        return _status(405, "MethodNotAllowed", method)

    def _invalid(self, obj, strict) -> tuple[int, dict] | None:
        """400 for unknown fields under fieldValidation=Strict (the strict decoder), 422 for
        what the schema refuses; unknown fields are pruned from ``obj`` otherwise."""
        if self.schema is None:
            return None
        unknown = unknown_fields(obj, self.schema)
        if unknown and strict:
            return _status(400, "BadRequest", "strict decoding error: "
                           + ", ".join(f'unknown field "{f}"' for f in unknown))
        if unknown:
            pruned = prune(obj, self.schema)
            obj.clear()
            obj.update(pruned)
        errors = schema_errors(obj, self.schema)
        if errors:
            name = obj.get("metadata", {}).get("name", "")
            return _status(422, "Invalid",
                           f'InferenceService.serving.kserve.io "{name}" is invalid: ' + "; ".join(errors))
        return None

    def _isvc(self, method, namespace, name, status_sub, query, body):
        if namespace not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{namespace}" not found')
        dry = query.get("dryRun") == "All"
        key = (namespace, name or body.get("metadata", {}).get("name", ""))
        current = self.objects.get(key)
        if method == "GET":
            if name is None:
                return 200, {"items": [copy.deepcopy(o) for (ns, _), o in self.objects.items() if ns == namespace]}
            if current is None:
                return _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
            return 200, copy.deepcopy(current)
        if method == "POST":
            if current is not None:
                return _status(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{key[1]}" already exists')
            body = copy.deepcopy(body)
            invalid = self._invalid(body, query.get("fieldValidation") == "Strict")
            if invalid:
                return invalid
            body = _mutate(body)
            denied = _validate(body, None, self.standard_canary)
            if denied:
                return _status(403, "Forbidden", WEBHOOK + denied)
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1,
                                   resourceVersion=self._next_version())
            obj["status"] = {}
            if not dry:
                self.objects[key] = obj
                self._reconcile(key)
            return 201, copy.deepcopy(obj)
        if current is None:
            return _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
        if method == "DELETE":
            uid = self.objects[key]["metadata"]["uid"]
            del self.objects[key]
            for owned, obj in list(self.owned.items()):  # garbage collection by owner
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", [])):
                    del self.owned[owned]
            if self.controller:
                self.controller.forget(key)
            return 200, {"kind": "Status", "status": "Success"}
        if method == "PUT":
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": the object has been modified; please apply your changes to the latest version and try again')
            new = copy.deepcopy(body)
        elif method == "PATCH":  # JSON merge patch
            new = _merge_patch(copy.deepcopy(current), body)
        else:
            return _status(405, "MethodNotAllowed", method)
        if status_sub:
            updated = copy.deepcopy(current)
            updated["status"] = new.get("status", {})
        else:
            status = new.pop("status", None)
            invalid = self._invalid(new, query.get("fieldValidation") == "Strict")
            if invalid:
                return invalid
            if status is not None:
                new["status"] = status
            new = _mutate(new)
            denied = _validate(new, current, self.standard_canary)
            if denied:
                return _status(403, "Forbidden", WEBHOOK + denied)
            updated = copy.deepcopy(new)
            updated["status"] = current.get("status", {})
            for field in ("uid", "namespace", "generation"):
                updated["metadata"][field] = current["metadata"][field]
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] += 1
        updated["metadata"]["resourceVersion"] = self._next_version()
        if dry:
            return 200, updated
        self.objects[key] = updated
        # KServe watches InferenceServices with no predicate (controller.go SetupWithManager:
        # For(&InferenceService{})): any change but the status, metadata included, reconciles
        if not status_sub and _observed(updated) != _observed(current):
            self._reconcile(key)
        return 200, copy.deepcopy(updated)

    def _reconcile(self, key):
        if self.controller:
            self.controller.enqueue(key)

    # used by the controller
    def set_status(self, key, status):
        with self.lock:
            if key in self.objects:
                self.objects[key]["status"] = status
                self.objects[key]["metadata"]["resourceVersion"] = self._next_version()


def _observed(obj):
    """What a controller watching the object reacts to: all but its status and bookkeeping."""
    metadata = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion",)}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


def _mutate(obj):
    """KServe's mutating webhook (inference_service_defaults.go): deprecated mode names become
    Knative/Standard."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if annotations.get(MODE_KEY) in LEGACY_MODES:
        annotations[MODE_KEY] = LEGACY_MODES[annotations[MODE_KEY]]
    return obj


def _validate(obj, old, standard_canary=True):
    """KServe's validating webhook (inference_service_validation.go): the mode of an existing
    InferenceService cannot change; autoscaling fields per mode and autoscaler class; since
    0.20 the canaries (validateCanarySpecs) and a predictor rename (validatePredictorNameChange)."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    mode = annotations.get(MODE_KEY)
    was = (old or {}).get("status", {}).get("deploymentMode", "")
    if was and mode is not None and mode != was:
        return f"update rejected: deploymentMode cannot be changed from '{was}' to '{mode}'"
    predictor = obj.get("spec", {}).get("predictor", {})
    if standard_canary:
        refused = _canary_refusal(obj, mode) or _rename_refusal(predictor, (old or {}).get("spec", {}).get("predictor"))
        if refused:
            return refused
    metric = predictor.get("scaleMetric")
    if mode == "Standard":
        scaler = annotations.get("serving.kserve.io/autoscalerClass")
        if scaler == "hpa" and (metric or "cpu") not in ("cpu", "memory"):
            return f"[{metric}] is not a supported metric"
        if scaler == "keda" and metric:
            return "ScaleMetric is not supported for KEDA"
        return _autoscaling_refusal(scaler, (predictor.get("autoScaling") or {}).get("metrics") or [])
    if annotations.get("autoscaling.knative.dev/class") == "hpa.autoscaling.knative.dev":
        return f"[{metric}] is not a supported metric" if (metric or "cpu") not in ("cpu", "memory") else ""
    if (metric or "concurrency") not in ("concurrency", "rps"):
        return f"[{metric}] is not a supported metric"
    return ""


def _autoscaling_refusal(scaler, metrics):
    """validateScalingHPACompExtension / validateScalingKedaCompExtension: HPA takes Resource
    metrics only; KEDA's External and PodMetric need a query and a target value."""
    for metric in metrics:
        kind = metric.get("type")
        if scaler == "hpa" and kind != "Resource":
            return (f"invalid HPA metric source type with value [{kind}],valid metric source types"
                    " are Resource")
        if scaler == "keda" and kind in ("External", "PodMetric"):
            spec = metric.get("external" if kind == "External" else "podmetric")
            if spec is None:
                return f"metricSpec.{kind} is not set for {kind.lower()} metric source type"
            if not (spec.get("metric") or {}).get("query"):
                return "the query should not be empty"
            if (spec.get("target") or {}).get("value") is None:
                return "the target threshold value should not be empty"
        elif scaler == "keda" and kind != "Resource":
            return f"unknown KEDA metric type with value [{kind}].Valid types are Resource,External,PodMetric"
    return ""


def _canary_refusal(obj, mode):
    """validateCanarySpecs: canaries in Standard mode only, each named (not as the stable
    predictor, not twice), without autoscaling, at most the stable predictor's minReplicas, and
    trafficPercent 0-100 summing to at most 100."""
    entries = obj.get("spec", {}).get("canary") or []
    if not entries:
        return ""
    if mode != "Standard":
        return "canary is only supported in Standard deployment mode"
    stable = obj["spec"].get("predictor", {})
    names, total = set(), 0
    for i, entry in enumerate(entries):
        predictor = entry.get("predictor", {})
        name = predictor.get("name", "")
        if not name:
            return f"canary[{i}] predictor.name is required"
        if name in names:
            return f'canary predictor.name "{name}" is duplicated'
        names.add(name)
        if name == stable.get("name", ""):
            return f'canary predictor.name "{name}" conflicts with stable predictor name'
        percent = entry.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            return f'canary "{name}" trafficPercent must be between 0 and 100, got {percent}'
        total += percent
        for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(key):
                return f'canary "{name}" must not set {key} (canary uses fixed replicas)'
        minimum = stable.get("minReplicas", 1)
        if predictor.get("minReplicas") is not None and predictor["minReplicas"] > minimum:
            return (f'canary "{name}" minReplicas ({predictor["minReplicas"]}) must not exceed stable'
                    f" predictor minReplicas ({minimum})")
    if total > 100:
        return f"sum of canary trafficPercent values ({total}) must be <= 100"
    return ""


def _rename_refusal(predictor, old):
    """validatePredictorNameChange: a new predictor.name needs a new model."""
    if old is None or old.get("name", "") == predictor.get("name", ""):
        return ""
    if (old.get("model") or {}).get("storageUri") == (predictor.get("model") or {}).get("storageUri"):
        return "predictor.name change requires a model change (e.g. storageUri)"
    return ""


def _merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge_patch(target[key], value)
        else:
            target[key] = value
    return target


def _mode(obj, default):
    """The mode KServe runs an InferenceService in: its annotation (after the webhook rewrote
    the deprecated names), else the cluster default; an unknown value falls back to the default
    (KSERVE_BEHAVIOUR.md: modes)."""
    value = obj["metadata"].get("annotations", {}).get(MODE_KEY, "")
    return value if value in ("Knative", "Standard") else default


#: annotations and labels KServe does not copy onto the revision template
#: (constants.ServiceAnnotationDisallowedList, RevisionTemplateLabelDisallowedList)
_NOT_PROPAGATED = ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
                   "internal.serving.kserve.io/storage-initializer-sourceuri",
                   "kubectl.kubernetes.io/last-applied-configuration", "modelFormat",
                   "networking.knative.dev/visibility")


def _template(obj, mode):
    """What a new revision (Knative) or a Deployment rollout (Standard) is made of: the predictor
    and the InferenceService's labels and annotations, which KServe copies onto the revision's
    (or pods') template (knative_service_reconciler.go / raw deployment reconciler: componentMeta)."""
    predictor = obj["spec"]["predictor"]
    ignored = ("canaryTrafficPercent",) if mode == "Knative" else (
        "canaryTrafficPercent", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "autoScaling",
        "name")  # the predictor's name names its Deployment, it is not in the pods' template
    metadata = obj["metadata"]
    return {"predictor": {k: v for k, v in predictor.items() if k not in ignored},
            "labels": {k: v for k, v in metadata.get("labels", {}).items() if k not in _NOT_PROPAGATED},
            "annotations": {k: v for k, v in metadata.get("annotations", {}).items()
                            if k not in _NOT_PROPAGATED}}


@dataclass
class _Revision:
    name: str
    template: dict
    storage_uri: str
    server: object


@dataclass
class _State:
    """One InferenceService as KServe and its child (Knative Service or Deployment) hold it."""

    mode: str
    created: int = 0  # revisions created (failed ones included)
    revisions: list = field(default_factory=list)  # ready ones, oldest first
    template: dict | None = None  # of the latest created revision / Deployment template
    latest_created: str = ""
    latest_ready: str = ""
    rolled_latest: str = ""
    rolled_previous: str = ""
    child_generation: int = 0
    traffic: list = field(default_factory=list)
    deployment: dict | None = None
    failure: dict | None = None  # (conditions, modelStatus) of the latest failed revision
    last_failure_info: dict | None = None  # kept across revisions, as KServe keeps it
    service: str = ""  # Standard: the stable predictor's Deployment and Service
    canaries: dict = field(default_factory=dict)  # Standard: canary name -> _Canary


@dataclass
class _Canary:
    """A Standard-mode canary's own Deployment (predictor.go reconcileCanaryDeployments)."""

    service: str  # <isvc>-<name>-predictor: its Deployment and Service
    template: dict
    deployment: dict
    revision: _Revision | None = None  # None while it starts, or when it failed


class FakeKServeController:
    """Reconciles InferenceServices the way KServe does per mode (KSERVE_BEHAVIOUR.md), with
    real storage and serving, in background threads; a gateway routes cluster-local hosts."""

    def __init__(self, api: FakeKubeApi, workdir: Path, unschedulable_for_s: float = 1.5):
        from fakes.cluster_gateway import Gateway

        self.api = api
        api.controller = self
        self.workdir = workdir
        self.states: dict[tuple[str, str], _State] = {}
        self.lock = threading.RLock()
        self.key_locks: dict[tuple[str, str], threading.Lock] = {}
        self.unschedulable_for_s = unschedulable_for_s
        self.gateway = Gateway(self._routes)
        self.paused: list | None = None  # keys queued while paused (a controller that lags)
        self.failed_once: set = set()  # InferenceServices whose reconcile failed once already
        #: serve=False: revisions become ready with no server (the control plane alone)
        self.serve = True
        self.pod_images: dict[str, str] = {}  # pod -> the kserve-container image KServe chose

    # -- network ----------------------------------------------------------------------
    def _routes(self, host):
        with self.lock:
            for (namespace, name), st in self.states.items():
                by_name = {r.name: r.server.url for r in st.revisions}
                if st.mode == "Standard" and host == f"{st.service}.{namespace}{CLUSTER_SUFFIX}":
                    return [(st.revisions[-1].server.url, 1)] if st.revisions else []
                for canary in st.canaries.values():  # each canary's own Service
                    if host == f"{canary.service}.{namespace}{CLUSTER_SUFFIX}" and canary.revision:
                        return [(canary.revision.server.url, 1)]
                if st.mode != "Knative":
                    continue
                if host == f"{name}.{namespace}{CLUSTER_SUFFIX}":
                    return [(by_name[t["revisionName"]], t["percent"]) for t in st.traffic
                            if t["revisionName"] in by_name]
                for t in st.traffic:
                    if t.get("tag") and host == f"{t['tag']}-{name}-predictor.{namespace}{CLUSTER_SUFFIX}":
                        return [(by_name[t["revisionName"]], 1)] if t["revisionName"] in by_name else []
        return []

    # -- reconcile --------------------------------------------------------------------
    def enqueue(self, key):
        if self.paused is not None:
            self.paused.append(key)
            return
        threading.Thread(target=self._reconcile, args=(key,), daemon=True).start()

    def pause(self):
        self.paused = []

    def resume(self):
        queued, self.paused = self.paused or [], None
        for key in dict.fromkeys(queued):
            self.enqueue(key)

    def _reconcile(self, key):
        with self.lock:
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self.api.lock:
                obj = copy.deepcopy(self.api.objects.get(key))
            if obj is None:
                return
            mode = _mode(obj, self.api.default_mode)
            if mode == "Knative" and not self.api.knative:
                return  # no Knative Service can be made: never Ready, no status
            with self.lock:
                st = self.states.setdefault(key, _State(mode))
            invalid = self._runtime_problem(obj)
            if invalid:
                self.api.set_status(key, {"modelStatus": {"transitionStatus": "InvalidSpec",
                                                          "lastFailureInfo": invalid}})
                return
            failed = self._reconcile_failure(key, obj, mode)
            if failed:  # predictor.go: PropagateRawStatusWithMessages(..., "ReconcileFailed", err)
                conditions = [{"type": t, "status": "False", "reason": "ReconcileFailed", "message": failed}
                              for t in ("PredictorReady", "Ready")]
                self.api.set_status(key, {"conditions": conditions, "deploymentMode": mode})
                return
            template = _template(obj, mode)
            pending = []
            if mode == "Standard":
                # canaries first, as predictor.go does; then the stable predictor, whose
                # Deployment a promotion renames to the canary's. Status is written once the
                # objects are reconciled; pods start after, as a Deployment's do
                pending = self._reconcile_canaries(key, obj, st)
            if mode == "Standard" and self._renamed(key, obj, st, template):
                pass
            elif template != st.template:
                self._roll(key, obj, st, template)
            else:
                self._publish(key, st)
            self._start_canaries(key, st, pending)

    # -- Standard-mode canaries (components/predictor.go, KServe 0.20+) ---------------------
    def _reconcile_canaries(self, key, obj, st):
        """Each spec.canary entry runs the stable predictor with its fields merged over it
        (buildCanaryPredictor) in its own Deployment; Deployments no entry and not the stable
        predictor names are deleted as orphans. A KServe before 0.20 ignores spec.canary."""
        namespace, name = key
        entries = obj["spec"].get("canary") or [] if self.api.standard_canary else []
        stable = obj["spec"]["predictor"]
        stable_service = _service(name, stable.get("name"))
        wanted = {}
        for entry in entries:
            merged = _merged(stable, entry["predictor"])
            wanted[entry["predictor"]["name"]] = (merged, _template(
                {**obj, "spec": {**obj["spec"], "predictor": merged}}, "Standard"))
        with self.lock:
            for cname, canary in list(st.canaries.items()):
                if cname not in wanted and canary.service != stable_service:
                    self._drop_canary(key, st, cname)
        pending = []
        for cname, (merged, template) in wanted.items():
            with self.lock:
                canary = st.canaries.get(cname)
                if canary is not None and canary.template == template:
                    continue
                if canary is not None:
                    self._drop_canary(key, st, cname)
                service = _service(name, cname)
                canary = _Canary(service, template, _deployment(namespace, service, 1, "RollingUpdate", 0))
                st.canaries[cname] = canary
                self.api.deployments[(namespace, service)] = canary.deployment
                pending.append((cname, canary, merged))
        return pending

    def _start_canaries(self, key, st, pending):
        """The canaries' pods: the storage initializer and the model server, then Available."""
        name = key[1]
        for cname, canary, merged in pending:
            service, template = canary.service, canary.template
            pod = f"{service}-0"
            server = self._start(key, {"metadata": {"name": name}, "spec": {"predictor": merged}}, pod,
                                 f"{service}-1",
                                 failed=lambda _, *args, c=cname: self._canary_failed(key, c, *args))
            with self.lock:
                if server is None or st.canaries.get(cname) is not canary:
                    if server is not None:
                        _stop(server)
                    continue
                canary.revision = _Revision(service, template, merged["model"]["storageUri"], server)
                _complete(canary.deployment)
                self.api.pods[f"{name}/{cname}"] = [_pod_object(pod, name, "Running", app=f"isvc.{service}",
                                                                image=self.pod_images.get(pod, "kserve-tritonserver"))]
            self._publish(key, st)

    def _canary_failed(self, key, cname, revision, pod, container, message, log=None):
        """The canary's pod crash-loops; KServe's modelStatus follows the stable pods only."""
        st = self.states.get(key)
        canary = st.canaries.get(cname) if st else None
        if canary is None:
            return
        self.api.logs[(pod, container)] = (message if log is None else log) + "\n"
        self.api.pods[f"{key[1]}/{cname}"] = [_pod_object(pod, key[1], "Pending", failed_container=container,
                                                           app=f"isvc.{canary.service}")]

    def _drop_canary(self, key, st, cname):
        canary = st.canaries.pop(cname)
        self.api.deployments.pop((key[0], canary.service), None)
        self.api.pods.pop(f"{key[1]}/{cname}", None)
        if canary.revision:
            _stop(canary.revision.server)

    def _renamed(self, key, obj, st, template):
        """A new predictor.name: the Deployment of that name (a promoted canary's) becomes the
        stable one and the old stable Deployment is deleted as an orphan. A canary whose pods
        run this very template carries on without a restart (True: nothing left to roll);
        otherwise its Deployment rolls to the template, and with no such Deployment a new one
        starts after the old is gone."""
        namespace, name = key
        service = _service(name, obj["spec"]["predictor"].get("name"))
        with self.lock:
            if not st.service:
                st.service = service
            if st.service == service:
                return False
            self.api.deployments.pop((namespace, st.service), None)
            for revision in st.revisions:
                _stop(revision.server)
            st.revisions, st.deployment, st.template, st.service = [], None, None, service
            self.api.pods.pop(name, None)
            cname = next((c for c, canary in st.canaries.items() if canary.service == service), None)
            if cname is None:
                return False
            canary = st.canaries.pop(cname)
            self.api.pods[name] = self.api.pods.pop(f"{name}/{cname}", [])
            st.deployment, st.template = canary.deployment, canary.template
            st.revisions = [canary.revision] if canary.revision else []
            if canary.revision is None or canary.template != template:
                return False
            st.latest_ready = canary.revision.name
        self._publish(key, st)
        return True

    def _reconcile_failure(self, key, obj, mode):
        """Why KServe's reconcile of the child objects fails ('' when it does not): a child name
        or label the API server refuses, or (``reconcile-fails-once``) a transient error that
        the controller's requeue gets past."""
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        predictor = _service(name, obj["spec"]["predictor"].get("name"))
        entries = obj["spec"].get("canary") or [] if mode == "Standard" and self.api.standard_canary else []
        for entry in entries:  # each canary's Deployment and its pods' app label
            service = _service(name, entry["predictor"]["name"])
            if len(f"isvc.{service}") > 63:
                return (f"fails to reconcile canary deployments: Deployment.apps \"{service}\" is invalid:"
                        f" spec.template.labels: Invalid value: \"isvc.{service}\": must be no more than"
                        " 63 characters")
        if len(predictor) > 63:  # the Knative Service / Service / Deployment name
            kind = "Service.serving.knative.dev" if mode == "Knative" else "Service"
            return (f"fails to reconcile predictor: {kind} \"{predictor}\" is invalid: metadata.name:"
                    f" Invalid value: \"{predictor}\": must be no more than 63 characters")
        if mode == "Standard":
            host = f"{predictor}-{namespace}"  # domain.go GenerateDomainName, default template
            if len(host) > 63 or len(f"{name}-{namespace}") > 63:
                return (f"fails to reconcile predictor: invalid domain name \"{host}.example.com\":"
                        " url: Invalid value: a lowercase RFC 1123 subdomain must consist of labels"
                        " of at most 63 characters")
            label = f"isvc.{predictor}"  # constants.GetRawServiceLabel: the pods' app label
            if len(label) > 63:
                return (f"fails to reconcile predictor: Deployment.apps \"{predictor}\" is invalid:"
                        f" spec.template.labels: Invalid value: \"{label}\": must be no more than"
                        " 63 characters")
        behavior = obj["metadata"].get("annotations", {}).get("fake.kserve.io/behavior", "")
        if behavior == "reconcile-fails-once" and key not in self.failed_once:
            self.failed_once.add(key)
            threading.Timer(0.5, self.enqueue, args=(key,)).start()  # the controller's requeue
            return "fails to reconcile predictor: Operation cannot be fulfilled: the object has been modified"
        return ""

    def _route_problem(self, obj):
        """A tagged host Knative cannot make (the route never becomes ready), or ''."""
        name = obj["metadata"]["name"]
        if obj["metadata"].get("annotations", {}).get(TAG_KEY) != "true":
            return ""
        for tag in ("latest", "prev"):
            label = f"{tag}-{name}-predictor"
            if len(label) > 63:
                return (f"Ingress has not yet been reconciled: invalid domain name for tag {tag}:"
                        f" \"{label}\" must be no more than 63 characters")
        return ""

    def _runtime_problem(self, obj):
        """KServe's runtime selection failures (predictor.go): InvalidSpec, no child object."""
        model = obj["spec"]["predictor"]["model"]
        named, fmt = model.get("runtime"), model["modelFormat"]["name"]
        protocol = model.get("protocolVersion", "v1")
        for runtime in self.api.runtimes:
            spec = runtime["spec"]
            if named and runtime["metadata"]["name"] != named:
                continue
            if named and spec.get("disabled"):
                return {"reason": "RuntimeDisabled", "message": "Specified runtime is disabled"}
            formats = [f for f in spec.get("supportedModelFormats", [])
                       if f["name"] == fmt and (named or f.get("autoSelect"))]
            protocols = spec.get("protocolVersions") or [protocol]
            if formats and protocol in protocols and not spec.get("disabled") and not spec.get("multiModel"):
                return None
        return {"reason": "NoSupportingRuntime", "message": "No runtime found to support specified framework/version"}

    def _roll(self, key, obj, st, template):
        name = key[1]
        with self.lock:
            st.created += 1
            st.template = template
            revision = f"{name}-predictor-{st.created:05d}"
            st.latest_created = revision
            st.failure = None
            if st.mode == "Standard":
                self._deployment_rolling(key, st)
            else:
                st.child_generation += 1
        self._publish(key, st)
        pod = f"{revision}-deployment-0"
        behavior = obj["metadata"].get("annotations", {}).get("fake.kserve.io/behavior", "")
        if behavior == "never-ready":
            return
        if behavior in ("image-pull", "unschedulable"):
            self._pod(key, pod, behavior)
            return
        if behavior == "unschedulable-for-a-while":  # a cluster autoscaler adds a node
            self._pod(key, pod, "unschedulable")
            time.sleep(self.unschedulable_for_s)
        server = self._start(key, obj, pod, revision)
        if server is None:
            return
        with self.lock:
            if key not in self.states:  # deleted while it started: garbage-collected
                _stop(server)
                return
            old = list(st.revisions)
            st.revisions.append(_Revision(revision, template, obj["spec"]["predictor"]["model"]["storageUri"], server))
            st.latest_ready = revision
            if st.mode == "Standard":  # the Deployment's old ReplicaSet scales down
                st.revisions = st.revisions[-1:]
                self._deployment_complete(st)
        if st.mode == "Standard":
            for gone in old:
                _stop(gone.server)
        self.api.pods[name] = [_pod_object(pod, name, "Running", app=f"isvc.{st.service}",
                                           image=self.pod_images.get(pod, "kserve-tritonserver"))]
        self._publish(key, st)

    def _start(self, key, obj, pod, revision, failed=None):
        from kfp_serve.components.errors import KfpServeError
        from kfp_serve.components.local.triton_server import start_server

        failed = failed or self._failed
        namespace, name = key
        model = obj["spec"]["predictor"]["model"]
        storage_uri = model["storageUri"]
        if not self.serve:  # the control plane alone: the revision is ready, nothing serves
            self.api.logs[(pod, "storage-initializer")] = f"Copied {storage_uri} to /mnt/models\n"
            return _NoServer()
        target = Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{name}-{revision}-"))
        container = "modelcar" if storage_uri.startswith("oci://") and self._oci_mode() else "storage-initializer"
        try:  # everything under the prefix, unchecked, as KServe's storage initializer copies
            if storage_uri.startswith(("hf://", "oci://")):
                repository = self._fetch_source(storage_uri, target / "repository")
            else:
                repository = copy_prefix(storage_uri, target / "repository")
        except Exception as err:  # the initializer exits 1 with its exception in the log
            failed(key, revision, pod, container, f"{type(err).__name__}: {err}")
            return None
        self.api.logs[(pod, container)] = f"Copied {storage_uri} to /mnt/models\n"
        too_new = self._onnx_too_new(repository, model)
        if too_new:
            failed(key, revision, pod, "kserve-container", too_new)
            return None
        from fakes import kserve_vllm

        runtime = kserve_vllm.chosen_runtime(self.api.runtimes, model)
        if runtime is not None and model["modelFormat"]["name"] in ("vLLM", "huggingface"):
            return self._start_vllm(key, obj, pod, revision, runtime, repository, failed)
        models = [p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()]
        try:
            if (repository / "model-store").is_dir():  # a TorchServe archive: KServe's torchserve runtime
                from fakes.kserve_torchserve import TorchServeBehindKServe

                server = TorchServeBehindKServe(repository, target)
            else:
                server = start_server(repository, models[0], f"{namespace}-{revision}-{uuid.uuid4().hex[:6]}",
                                      timeout_s=60)
        except (KfpServeError, RuntimeError) as err:
            failed(key, revision, pod, "kserve-container", str(err))
            return None
        self.api.logs[(pod, "kserve-container")] = Path(server.log_path).read_text(errors="replace")[-4000:]
        return server

    def _start_vllm(self, key, obj, pod, revision, runtime, repository, failed):
        """KServe's vLLM runtime: the container KServe builds (fakes/kserve_vllm.py), run here.
        A container that exits reports kubelet's termination message: empty, or with
        ``terminationMessagePolicy: FallbackToLogsOnError`` the log's last 2048 bytes."""
        from fakes import kserve_vllm
        from kfp_serve.components.errors import KfpServeError

        container = kserve_vllm.predictor_container(runtime, obj)
        self.pod_images[pod] = container["image"]
        if runtime["metadata"]["name"] != "kserve-vllmserver":
            failed(key, revision, pod, "kserve-container", "the fake serves kserve-vllmserver only")
            return None
        from kfp_serve.components.local.triton_server import state_root

        deployment = f"{key[0]}-{revision}-{uuid.uuid4().hex[:6]}"
        try:
            return kserve_vllm.start_vllm_predictor(container, repository, deployment)
        except (KfpServeError, RuntimeError) as err:
            log = state_root() / deployment / "vllm.log"
            text = log.read_text(errors="replace") if log.is_file() else str(err)
            policy = obj["spec"]["predictor"]["model"].get("terminationMessagePolicy", "File")
            message = text[-2048:] if policy == "FallbackToLogsOnError" else ""
            failed(key, revision, pod, "kserve-container", message, log=text[-4000:])
            return None

    def _initializer(self) -> dict:
        import json

        found = self.api.config_maps.get(("kserve", "inferenceservice-config"), {})
        return json.loads(found.get("data", {}).get("storageInitializer", "{}"))

    def _oci_mode(self) -> str:
        """pkg/types/config.go ResolveOciModelMode: ociModelMode, else modelcar when either
        switch is on, else '' (no OCI support: the webhook injects no modelcar)."""
        config = self._initializer()
        if config.get("ociModelMode"):
            return config["ociModelMode"]
        return "modelcar" if config.get("enableModelcar") or config.get("enableOciModelSupport") else ""

    def _fetch_source(self, uri: str, out_dir: Path) -> Path:
        """hf:// through the storage initializer (kserve_storage.py _download_hf, v0.14+), oci://
        through a modelcar (the image's /models shared with the server) where enabled; an older
        initializer, or OCI without a modelcar, meets a scheme it does not know."""
        import re as _re
        import shutil

        cannot = RuntimeError(f"Cannot recognize storage type for {uri}")
        if uri.startswith("hf://"):
            version = _re.search(r":v?(\d+)\.(\d+)", self._initializer().get("image", ""))
            if version and (int(version.group(1)), int(version.group(2))) < (0, 14):
                raise cannot
            source = self.api.hub.get(uri[len("hf://"):])
            if source is None:
                raise RuntimeError(f"Repository Not Found for {uri}")
        else:
            if not self._oci_mode():
                raise cannot
            source = self.api.images.get(uri[len("oci://"):])
            if source is None:
                raise RuntimeError(f"failed to pull image {uri[len('oci://'):]}: not found")
        shutil.copytree(source, out_dir)
        return out_dir

    def _onnx_too_new(self, repository, model):
        """Triton before 24.05 runs onnxruntime < 1.18, which refuses ONNX IR 10."""
        import onnx

        runtime = next((r for r in self.api.runtimes if any(
            f["name"] == model["modelFormat"]["name"] for f in r["spec"].get("supportedModelFormats", []))
            and (not model.get("runtime") or r["metadata"]["name"] == model["runtime"])), None)
        image = next((c["image"] for c in (runtime or {}).get("spec", {}).get("containers", [])), "")
        tag = model.get("runtimeVersion") or image.rsplit(":", 1)[-1]
        match = re.match(r"^(\d{2})\.(\d{2})", tag)
        if "tritonserver" not in image or not match or (int(match[1]), int(match[2])) >= (24, 5):
            return ""
        for path in repository.glob("*/*/model.onnx"):
            try:
                ir = onnx.load(str(path), load_external_data=False).ir_version
            except Exception:  # not a model at all: Triton's own load reports it
                continue
            if ir > 9:
                return (f"failed to load '{path.parent.parent.name}' version 1: Internal: onnx runtime"
                        f" error 1: Load model from {path} failed:Unsupported model IR version: {ir},"
                        " max supported IR version: 9")
        return ""

    # -- status -------------------------------------------------------------------------
    def _knative_traffic(self, obj, st):
        """ksvc_reconciler.go: canary only against the last rolled-out revision."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        tagged = obj["metadata"].get("annotations", {}).get(TAG_KEY) == "true"
        latest = {"revisionName": st.latest_ready, "latestRevision": True,
                  "percent": 100 if canary is None or not st.rolled_latest else canary}
        if tagged:
            latest["tag"] = "latest"
        traffic = [latest]
        if canary is not None and st.rolled_latest and canary < 100:
            traffic.append({"tag": "prev", "revisionName": st.rolled_latest, "latestRevision": False,
                            "percent": 100 - canary})
        for t in traffic:
            if t.get("tag"):
                t["url"] = f"http://{t['tag']}-{name}-predictor.{namespace}.example.com"
        return traffic

    def _propagate_rolled_out(self, st):
        """inference_service_status.go PropagateStatus: the last revision that took 100 %."""
        shares = {}
        for t in st.traffic:
            shares[t["revisionName"]] = shares.get(t["revisionName"], 0) + t["percent"]
        for t in st.traffic:
            if t["revisionName"] != st.latest_ready or not t["latestRevision"]:
                continue
            if st.rolled_latest != st.latest_ready:
                if t["percent"] == 100:
                    st.rolled_previous, st.rolled_latest = st.rolled_latest, st.latest_ready
            elif (st.latest_ready == st.latest_created and t["percent"] < 100
                  and shares.get(t["revisionName"]) == 100 and st.rolled_previous):
                st.rolled_latest = st.rolled_previous

    def _publish(self, key, st):
        with self.api.lock:
            obj = copy.deepcopy(self.api.objects.get(key))
        if obj is None:
            return
        with self.lock:
            if st.mode == "Standard":
                if st.deployment is None:  # renamed, its new Deployment not made yet
                    return
                status = self._standard_status(key, st, obj)
            else:
                for _ in range(2):  # the second pass: KServe re-splits after a rollout changed
                    if not st.latest_ready:
                        break
                    traffic = self._knative_traffic(obj, st)
                    if traffic != st.traffic:
                        st.traffic = traffic
                        st.child_generation += 1
                    self._propagate_rolled_out(st)
                status = self._knative_status(key, st)
        self.api.set_status(key, status)

    def _knative_status(self, key, st):
        namespace, name = key
        ready = bool(st.latest_ready) and st.latest_ready == st.latest_created
        conditions = [{"type": "IngressReady", "status": "True" if st.latest_ready else "Unknown"},
                      {"type": "PredictorReady", "status": "True" if ready else "Unknown"},
                      {"type": "Ready", "status": "True" if ready else "Unknown"}]
        status = {
            "observedGeneration": st.child_generation,  # the Knative Service's, not ours
            "deploymentMode": "Knative",
            "conditions": conditions,
            "components": {"predictor": {
                "latestCreatedRevision": st.latest_created, "latestReadyRevision": st.latest_ready,
                "latestRolledoutRevision": st.rolled_latest,
                "previousRolledoutRevision": st.rolled_previous, "traffic": copy.deepcopy(st.traffic),
                "url": f"http://{name}-predictor.{namespace}.example.com"}},
            "modelStatus": {"transitionStatus": "UpToDate" if ready else "InProgress",
                            "states": {"activeModelState": "Loaded" if st.latest_ready else "Pending",
                                       "targetModelState": "Loaded" if ready else "Loading"}},
        }
        if st.latest_ready:
            status["url"] = f"http://{name}.{namespace}.example.com"
            status["address"] = {"url": self.gateway.url(f"{name}.{namespace}{CLUSTER_SUFFIX}")}
        if st.last_failure_info:  # SetModelFailureInfo replaces it only with a newer failure
            status["modelStatus"]["lastFailureInfo"] = copy.deepcopy(st.last_failure_info)
        with self.api.lock:
            obj = self.api.objects.get(key)
            route = self._route_problem(obj) if obj else ""
        if route and st.latest_ready:  # the revision serves, the route never becomes ready
            status["conditions"] = [{"type": "IngressReady", "status": "False",
                                     "reason": "IngressNotConfigured", "message": route},
                                    {"type": "PredictorReady", "status": "False",
                                     "reason": "IngressNotConfigured", "message": route},
                                    {"type": "Ready", "status": "False", "reason": "IngressNotConfigured",
                                     "message": route}]
        if st.failure:
            status["conditions"], status["modelStatus"] = copy.deepcopy(st.failure)
        return status

    def _deployment_rolling(self, key, st):
        namespace, _ = key
        previous = st.deployment
        generation = (previous["metadata"]["generation"] if previous else 0) + 1
        strategy = (st.template or {}).get("predictor", {}).get("deploymentStrategy") or {"type": "RollingUpdate"}
        # RollingUpdate starts the new pod beside the old one (maxSurge); Recreate stops it first
        old = 1 if st.revisions and strategy.get("type") != "Recreate" else 0
        st.deployment = _deployment(namespace, st.service, generation, strategy["type"], old)
        self.api.deployments[(namespace, st.service)] = st.deployment

    def _deployment_complete(self, st):
        _complete(st.deployment)

    def _standard_status(self, key, st, obj):
        """PropagateRawStatus: Ready follows the Deployment's Available/Progressing conditions,
        observedGeneration is the Deployment's; canaryStatuses and CanaryPredictorReady report
        the canaries (ready: their Deployment has an available replica)."""
        namespace, name = key
        conditions = {c["type"]: c for c in st.deployment["status"]["conditions"]}
        ready = conditions["Available"]["status"] == "True"
        service = st.service
        status = {
            "observedGeneration": st.deployment["status"]["observedGeneration"],
            "deploymentMode": "Standard",
            "conditions": [{"type": "IngressReady", "status": "True"},
                           {"type": "PredictorReady", "status": "True" if ready else "False",
                            "reason": conditions["Progressing"]["reason"]},
                           {"type": "Ready", "status": "True" if ready else "False"}],
            "components": {"predictor": {"url": f"http://{service}-{namespace}.example.com"}},
            "url": f"http://{name}-{namespace}.example.com",
            "address": {"url": self.gateway.url(f"{service}.{namespace}{CLUSTER_SUFFIX}")},
            "modelStatus": {"transitionStatus": "UpToDate" if ready else "InProgress",
                            "states": {"activeModelState": "Loaded" if ready else "Pending",
                                       "targetModelState": "Loaded"}},
        }
        if st.failure:
            status["modelStatus"] = copy.deepcopy(st.failure[1])
        entries = obj["spec"].get("canary") or [] if self.api.standard_canary else []
        if entries:
            reported = []
            for entry in entries:
                canary = st.canaries.get(entry["predictor"]["name"])
                available = bool(canary and canary.deployment["status"]["availableReplicas"] > 0)
                reported.append({"name": entry["predictor"]["name"], "ready": available,
                                 "trafficPercent": entry.get("trafficPercent", 0)})
            status["canaryStatuses"] = reported
            every = all(s["ready"] for s in reported)
            status["conditions"].append({"type": "CanaryPredictorReady", "status": "True" if every else "False",
                                         "reason": "AllCanariesReady" if every else "CanariesNotReady"})
        return status

    def _failed(self, key, revision, pod, container, message, log=None):
        self.api.logs[(pod, container)] = (message if log is None else log) + "\n"
        service = self.states[key].service if key in self.states else ""
        self.api.pods[key[1]] = [_pod_object(pod, key[1], "Pending", failed_container=container,
                                             app=f"isvc.{service}")]
        self.api.events.append({"type": "Warning", "reason": "BackOff", "message": f"Back-off restarting failed container {container}",
                                "involvedObject": {"kind": "Pod", "name": pod}, "metadata": {"name": f"{pod}.1"}})
        conditions = [{"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
                       "message": f"Revision \"{revision}\" failed with message: {message[:200]}"},
                      {"type": "Ready", "status": "False", "reason": "RevisionFailed"}]
        model_status = {"transitionStatus": "BlockedByFailedLoad",
                        "states": {"activeModelState": "FailedToLoad", "targetModelState": "Loaded"},
                        "lastFailureInfo": {"reason": "ModelLoadFailed", "location": container,
                                            "message": message}}  # KServe names no revision
        with self.lock:
            st = self.states.get(key)
            if st is None:
                return
            st.failure = (conditions, model_status)
            st.last_failure_info = model_status["lastFailureInfo"]
        self._publish(key, st)

    def _pod(self, key, pod, behavior):
        waiting = behavior == "image-pull"
        service = self.states[key].service if key in self.states else ""
        self.api.pods[key[1]] = [_pod_object(pod, key[1], "Pending", image_pull=waiting,
                                             unschedulable=not waiting, app=f"isvc.{service}")]

    def forget(self, key):
        with self.lock:
            st = self.states.pop(key, None)
        if st is None:
            return
        self.api.deployments.pop((key[0], st.service), None)
        for cname in list(st.canaries):
            self._drop_canary(key, st, cname)
        for revision in st.revisions:
            _stop(revision.server)

    def stop(self):
        for key in list(self.states):
            self.forget(key)
        self.gateway.stop()


class _NoServer:
    """A revision's stand-in when the controller serves nothing (serve=False)."""

    url = "http://127.0.0.1:9"

    def stop(self) -> None:
        pass


def _stop(server):
    from kfp_serve.components.local.triton_server import stop_server

    server.stop() if hasattr(server, "stop") else stop_server(server)


def _service(isvc, predictor_name=None):
    """constants.PredictorServiceName: the Deployment and Service of a (named) predictor."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


def _merged(stable, canary):
    """buildCanaryPredictor: the stable predictor with the canary's fields over it (mergo
    WithOverride: maps merge, other values replace), without autoscaling."""
    def merge(base, over):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        return out

    merged = merge(stable, canary)
    for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        merged.pop(key, None)
    return merged


def _deployment(namespace, service, generation, strategy, old):
    """A predictor Deployment mid-rollout: ``old`` replicas of the previous template still up."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service, "namespace": namespace, "generation": generation},
        "spec": {"replicas": 1, "strategy": {"type": strategy},
                 "selector": {"matchLabels": {"app": f"isvc.{service}"}},
                 "template": {"metadata": {"labels": {"app": f"isvc.{service}"}},
                              "spec": {"containers": [{"name": "kserve-container", "image": "tritonserver"}]}}},
        "status": {"observedGeneration": generation, "replicas": old + 1, "updatedReplicas": 1,
                   "availableReplicas": old, "unavailableReplicas": 1,
                   "conditions": [{"type": "Available", "status": "True" if old else "False",
                                   "reason": "MinimumReplicasAvailable" if old else "MinimumReplicasUnavailable"},
                                  {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}}


def _complete(deployment):
    status = deployment["status"]
    status.update(replicas=1, updatedReplicas=1, availableReplicas=1, unavailableReplicas=0)
    status["conditions"] = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]


def _pod_object(name, isvc, phase, failed_container="", image_pull=False, unschedulable=False, app="",
                image="kserve-tritonserver"):
    containers = [{"name": "kserve-container", "ready": phase == "Running", "restartCount": 0,
                   "image": image, "imageID": "",
                   "state": {"running": {}} if phase == "Running" else {"waiting": {"reason": "PodInitializing"}}}]
    init = [{"name": "storage-initializer", "ready": True, "restartCount": 0, "image": "storage-initializer",
             "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    if failed_container == "storage-initializer":
        init[0]["state"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
        init[0]["restartCount"] = 3
    elif failed_container == "kserve-container":
        containers[0]["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
        containers[0]["restartCount"] = 3
    if image_pull:
        containers[0]["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                              "message": 'Back-off pulling image "kserve-tritonserver:missing"'}}
    conditions = []
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    labels = {"serving.kserve.io/inferenceservice": isvc, **({"app": app} if app else {})}
    return {"kind": "Pod", "metadata": {"name": name, "labels": labels},
            "status": {"phase": phase, "conditions": conditions, "initContainerStatuses": init,
                       "containerStatuses": containers}}


#: the images KServe's kustomization gives the runtimes (config/runtimes/kustomization.yaml at
#: aaac4e29); the copies in tests/data/kserve hold placeholders
RUNTIME_IMAGES = {"kserve-tritonserver": "nvcr.io/nvidia/tritonserver:23.05-py3",
                  "kserve-torchserve": "pytorch/torchserve-kfs:0.9.0",
                  "kserve-vllmserver": "vllm/vllm-openai:latest",
                  "kserve-huggingfaceserver": "kserve/huggingfaceserver:latest"}


def kserve_runtimes() -> list[dict]:
    """KServe's Triton, TorchServe, vLLM and Hugging Face ClusterServingRuntimes, with the
    images they ship with."""
    import yaml

    runtimes = [yaml.safe_load((KSERVE_DATA / f).read_text())
                for f in ("kserve-tritonserver.yaml", "kserve-torchserve.yaml",
                          "kserve-vllmserver.yaml", "kserve-huggingfaceserver.yaml")]
    for runtime in runtimes:
        for container in runtime["spec"]["containers"]:
            container["image"] = RUNTIME_IMAGES[runtime["metadata"]["name"]]
    return runtimes
