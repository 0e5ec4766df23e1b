"""A behavioural fake of Vertex AI's REST API (v1): models, endpoints, operations, prediction.

It speaks the real JSON shapes, so google-cloud-aiplatform's GAPIC clients (REST transport,
``api_endpoint`` on 127.0.0.1) and its high-level SDK run unchanged against it. It is no kinder
than Vertex AI (VERTEX_BEHAVIOUR.md): resources are named by project number whatever the caller
wrote, ids are its own, operations take time, and what Vertex AI refuses it refuses (undeploying
a model that keeps traffic, images outside Artifact/Container Registry, machine and accelerator
combinations, replica counts, alias formats). Deploying a model copies its artifact from (fake)
GCS and serves it for real with local Triton (a Triton repository) or TorchServe (a .mar);
``serve=False`` keeps only the control plane (for long sequences of steps). predict/rawPredict
forward to it and pick a deployed model by the endpoint's traffic split, answering with the id
of the one that served. Failure injection: ``faults[method] = "quota" | "stockout" |
"rate-limit" | "permission" | "hang" | "unavailable"`` (503 once, then the fault clears) |
``"fail-after-done"`` (the operation is carried out, then reading it answers 500 once: a step
that dies after its work finished).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import re
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

#: the module vLLM's OpenAI server runs as in a serving container
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
_P = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
ROUTES = [
    ("POST", re.compile(rf"^{_P}/models:upload$"), "upload"),
    ("GET", re.compile(rf"^{_P}/models/(?P<id>[^/:@]+)(@(?P<version>[^/:]+))?:listVersions$"), "list_versions"),
    ("GET", re.compile(rf"^{_P}/models/(?P<id>[^/:@]+)(@(?P<version>[^/:]+))?$"), "get_model"),
    ("POST", re.compile(rf"^{_P}/models/(?P<id>[^/:@]+)@(?P<version>[^/:]+):mergeVersionAliases$"),
     "merge_version_aliases"),
    ("POST", re.compile(rf"^{_P}/endpoints$"), "create_endpoint"),
    ("GET", re.compile(rf"^{_P}/endpoints$"), "list_endpoints"),
    ("GET", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+)$"), "get_endpoint"),
    ("PATCH", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+)$"), "update_endpoint"),
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+):deployModel$"), "deployModel"),
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+):undeployModel$"), "undeployModel"),
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+):mutateDeployedModel$"), "mutateDeployedModel"),
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+):predict$"), "predict"),
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+):rawPredict$"), "rawPredict"),
    # invoke is documented as POST (projects.locations.endpoints[.deployedModels].invoke.invoke)
    ("POST", re.compile(rf"^{_P}/endpoints/(?P<id>[^/:]+)(/deployedModels/(?P<deployed>[^/:]+))?"
                        r"/invoke/(?P<route>.+)$"), "invoke"),
    ("GET", re.compile(r"^(?P<name>.+/operations/[^/:]+)$"), "get_operation"),
    ("POST", re.compile(r"^(?P<name>.+/operations/[^/:]+):cancel$"), "cancel_operation"),
    ("GET", re.compile(r"^(?P<name>.+)/operations$"), "list_operations"),
]
_T = "type.googleapis.com/google.cloud.aiplatform.v1."
#: Vertex AI refuses prediction requests over 1.5 MB (its quotas and limits page)
REQUEST_LIMIT_BYTES = 1_572_864
#: ... and dedicated endpoints over 10 MB (Vertex AI docs "Use dedicated public endpoints")
DEDICATED_REQUEST_LIMIT_BYTES = 10 * 1024 * 1024


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "status": status, "message": message}}


#: fields only v1beta1 has, by the message that holds them (aiplatform_v1 2.7.0 lacks them)
V1BETA1_ONLY = {"dedicatedResources": ("flexStart",)}


def _in_version(resource: dict, api: str | None) -> dict:
    """A resource (an endpoint, an operation) as the API version it is read in renders it: v1
    leaves out what only v1beta1 has, and types an operation's response in its own version."""
    def strip(node):
        if isinstance(node, dict):
            for holder, fields in V1BETA1_ONLY.items():
                if isinstance(node.get(holder), dict) and api != "v1beta1":
                    for name in fields:
                        node[holder].pop(name, None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(resource)
    kind = (resource.get("response") or {}).get("@type", "")
    if api == "v1beta1" and kind.startswith(_T):
        resource["response"]["@type"] = kind.replace(".v1.", ".v1beta1.")
    return resource


def _deployment_problem(deployed: dict) -> str:
    """What Vertex AI refuses in a DeployedModel's resources ('' when nothing)."""
    if not deployed.get("dedicatedResources"):
        return "a custom model is deployed on dedicated_resources (machine_spec and replica counts)"
    resources = deployed["dedicatedResources"]
    spec = resources.get("machineSpec", {})
    low, high = int(resources.get("minReplicaCount", 0)), int(resources.get("maxReplicaCount", 0) or 0)
    if low < 1:
        return "dedicated_resources.min_replica_count must be at least 1"
    if high and high < low:
        return "dedicated_resources.max_replica_count must be at least min_replica_count"
    required = int(resources.get("requiredReplicaCount", 0) or 0)
    if required > low:
        return (f"dedicated_resources.required_replica_count ({required}) must not exceed"
                f" min_replica_count ({low})")
    metrics = [m.get("metricName") for m in resources.get("autoscalingMetricSpecs", [])]
    if len(metrics) != len(set(metrics)) or set(metrics) - AUTOSCALING_METRICS:
        return f"autoscaling_metric_specs: at most one entry per supported metric, got {metrics}"
    affinity = spec.get("reservationAffinity") or {}
    kind = affinity.get("reservationAffinityType", "")
    if kind in ("SPECIFIC_RESERVATION", 3) and not (affinity.get("key") and affinity.get("values")):
        return "reservation_affinity: SPECIFIC_RESERVATION needs key and values"
    if resources.get("spot") and kind in ("SPECIFIC_RESERVATION", "ANY_RESERVATION", 2, 3):
        return "Spot VMs cannot consume a reservation"
    flex = resources.get("flexStart")
    if flex is not None:
        seconds = float(str(flex.get("maxRuntimeDuration", "0s")).rstrip("s") or 0)
        if not 0 < seconds <= 7 * 24 * 3600:
            return "flex_start.max_runtime_duration must be positive and at most 7 days"
    accelerator = spec.get("acceleratorType", "")
    if isinstance(accelerator, int):  # the REST clients send enums as numbers (enum-encoding=int)
        from google.cloud.aiplatform_v1.types import AcceleratorType

        accelerator = AcceleratorType(accelerator).name
    machine = spec.get("machineType", "")
    if accelerator and not machine.startswith(_GPU_FAMILIES.get(accelerator, "-")):
        return f"Machine type {machine} does not support accelerator {accelerator}"
    if not accelerator and machine.startswith(("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")):
        return f"Machine type {machine} requires an accelerator"
    return ""


#: what MutateDeployedModel may change (endpoint_service.proto, MutateDeployedModelRequest)
MUTABLE_PATHS = {"dedicated_resources.min_replica_count", "dedicated_resources.max_replica_count",
                 "dedicated_resources.required_replica_count",
                 "dedicated_resources.autoscaling_metric_specs", "disable_container_logging"}
#: AutoscalingMetricSpec.metric_name values online prediction supports (machine_resources.proto)
AUTOSCALING_METRICS = {"aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle",
                       "aiplatform.googleapis.com/prediction/online/cpu/utilization",
                       "aiplatform.googleapis.com/prediction/online/request_count"}
_BIGQUERY_URI = re.compile(r"^bq://[^./]+(\.[^./]+){0,2}$")


def _container_problem(container: dict) -> str:
    """What Vertex AI refuses in a ModelContainerSpec's large-model fields ('' when nothing):
    a deployment timeout over 2 hours, a probe that is not one action with positive counts
    (model.proto deployment_timeout, startup_probe, health_probe; Probe)."""
    prefix = container.get("invokeRoutePrefix", "")
    if prefix and container.get("predictRoute"):  # model.proto: only one of the two
        return "Only one of predict_route or invoke_route_prefix can be set"
    if prefix and prefix != "/*":
        return f'invoke_route_prefix {prefix!r}: "/*" is the only supported value'
    timeout = container.get("deploymentTimeout", "")
    if timeout and float(timeout.rstrip("s")) > 7200:
        return f"deployment_timeout {timeout}: the limit for deployment timeout is 2 hours"
    for key in ("startupProbe", "healthProbe", "livenessProbe"):
        probe = container.get(key)
        if probe is None:
            continue
        actions = [a for a in ("exec", "httpGet", "grpc", "tcpSocket") if a in probe]
        if len(actions) != 1:
            return f"{key}: exactly one of exec, http_get, grpc, tcp_socket, got {actions}"
        for count in ("periodSeconds", "failureThreshold", "timeoutSeconds"):
            if count in probe and int(probe[count]) < 1:
                return f"{key}.{count} must be at least 1"
    return ""


def _endpoint_problem(endpoint: dict) -> str:
    """What Vertex AI refuses in an Endpoint's settings ('' when nothing): request-response
    logging samples a fraction in (0, 1] into a bq:// project, dataset or table (endpoint.proto
    PredictRequestResponseLoggingConfig, io.proto BigQueryDestination)."""
    logging = endpoint.get("predictRequestResponseLoggingConfig") or {}
    if logging.get("enabled"):
        rate = float(logging.get("samplingRate", 0))
        if not 0 < rate <= 1:
            return f"predict_request_response_logging_config.sampling_rate {rate} is not in (0, 1]"
        uri = (logging.get("bigqueryDestination") or {}).get("outputUri", "")
        if not _BIGQUERY_URI.match(uri):
            return f"bigquery_destination.output_uri {uri!r} is not bq://project[.dataset[.table]]"
    return ""


def _matches(resource: dict, expression: str) -> bool:
    """The subset of AIP-160 filters the suite sends: ``a="x" AND labels.k="v"``."""
    for term in filter(None, (t.strip() for t in expression.split(" AND "))):
        key, _, value = term.partition("=")
        value = value.strip().strip('"')
        if key.startswith("labels."):
            if resource.get("labels", {}).get(key[len("labels."):]) != value:
                return False
        elif key == "display_name" and resource.get("displayName") != value:
            return False
    return True


#: project id -> project number (Vertex AI names every resource by number: "projects/123...")
PROJECT_NUMBERS = {"my-project": "812345678901"}
_REGISTRY = re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)/")
_ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,126}[a-z0-9]$")
#: accelerator -> machine families it is attached to (Compute Engine GPU machine types)
_GPU_FAMILIES = {"NVIDIA_TESLA_T4": "n1-", "NVIDIA_TESLA_P4": "n1-", "NVIDIA_TESLA_P100": "n1-",
                 "NVIDIA_TESLA_V100": "n1-", "NVIDIA_L4": "g2-", "NVIDIA_TESLA_A100": "a2-highgpu-",
                 "NVIDIA_A100_80GB": "a2-ultragpu-", "NVIDIA_H100_80GB": "a3-highgpu-",
                 "NVIDIA_H100_MEGA_80GB": "a3-megagpu-", "NVIDIA_H200_141GB": "a3-ultragpu-",
                 "NVIDIA_B200": "a4-highgpu-", "NVIDIA_GB200": "a4x-highgpu-",
                 "NVIDIA_RTX_PRO_6000": "g4-"}


def number_of(project: str) -> str:
    return project if project.isdigit() else PROJECT_NUMBERS.setdefault(
        project, str(800000000000 + len(PROJECT_NUMBERS)))


class FakeVertexApi:
    def __init__(self, workdir: Path, op_seconds: float = 0.2, serve: bool = True):
        self.workdir = workdir
        self.op_seconds = op_seconds
        self.serve = serve
        self.models: dict[str, list[dict]] = {}  # model id -> versions
        self.endpoints: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.runtimes: dict[str, tuple[str, str, contextlib.ExitStack]] = {}  # deployed id -> (url, kind)
        self.faults: dict[str, str] = {}
        self.operations_page_size = 2
        self.routes: dict[str, str] = {}  # deployed model id -> the container's predict route
        #: resource -> operations listed beside the real ones (e.g. of a type the client lacks)
        self.extra_operations: dict[str, list[dict]] = {}
        self.calls: list[str] = []
        self.dying: set[str] = set()  # operations whose next read answers 500 (fail-after-done)
        self.creating: set[str] = set()  # endpoint ids whose creation is under way
        #: endpoint id -> the host of its Private Service Connect forwarding rule (here a name
        #: of this machine), the only place it takes predictions
        self.psc_addresses: dict[str, str] = {}
        #: flex-start deployed models expire after maxRuntimeDuration x this (tests shrink time)
        self.flex_time_scale = 1.0
        self.lock = threading.RLock()
        self._ids = 1000
        #: deployed model id -> where its container serves gRPC (the first of its grpcPorts)
        self.grpc_ports: dict[str, str] = {}
        #: PredictionService over gRPC, started by the first HTTP/2 connection to this fake's port
        self.grpc = None

    def _id(self) -> str:
        """Vertex AI's ids are its own: long numbers nobody can guess."""
        with self.lock:
            self._ids += 1
            return str(4_000_000_000_000_000_000 + self._ids * 7919)

    @staticmethod
    def _parent(m) -> str:
        return f"projects/{number_of(m['project'])}/locations/{m['location']}"

    @staticmethod
    def _by_number(name: str) -> str:
        """A resource name as Vertex AI writes it back: with the project number."""
        return re.sub(r"^projects/([^/]+)/", lambda g: f"projects/{number_of(g[1])}/", name)

    # -- routing ------------------------------------------------------------------------
    takes_h2 = True  # a dedicated endpoint's host takes gRPC too (VERTEX_BEHAVIOUR.md row 36)

    @property
    def h2_upstream(self) -> str:
        """Where HTTP/2 connections go: the fake PredictionService (vertex_grpc.py)."""
        from fakes.vertex_grpc import FakePredictionGrpc

        with self.lock:
            if self.grpc is None:
                self.grpc = FakePredictionGrpc(self)
            return self.grpc.address

    wants_headers = True  # rawPredict passes the caller's headers on
    takes_bytes = True  # rawPredict's body is any bytes (google.api.HttpBody), e.g. binary tensors

    def __call__(self, method, path, query, body, headers=None):
        version = re.match(r"^/(v1beta1|v1|ui)/", path)
        path = re.sub(r"^/(v1beta1|v1|ui)/", "", urllib.parse.unquote(path))
        host = next((v for k, v in (headers or {}).items() if k.lower() == "host"), "")
        refused = self._dedicated_host_problem(path, host)
        if refused:
            return refused
        for verb, pattern, name in ROUTES:
            match = pattern.match(path)
            if verb == method and match:
                self.calls.append(name)
                fault = self.faults.get(name)
                if fault == "unavailable":
                    del self.faults[name]
                    return _error(503, "UNAVAILABLE", "The service is currently unavailable.")
                if fault == "permission":
                    return _error(403, "PERMISSION_DENIED", f"Permission 'aiplatform.{name}' denied on"
                                  f" resource '//aiplatform.googleapis.com/{path}' (or it may not exist).")
                if name in ("predict", "rawPredict", "invoke"):
                    return getattr(self, f"_{name}")(match.groupdict(), query, body, headers)
                return getattr(self, f"_{name}")({**match.groupdict(), "api": version and version[1]},
                                                  query, body)
        return _error(404, "NOT_FOUND", f"no route {method} {path}")

    def _dedicated_host_problem(self, path, host):
        """A dedicated endpoint takes predictions only on its own DNS name, and its DNS name
        serves nothing but predictions (VERTEX_BEHAVIOUR.md: endpoint kinds)."""
        match = re.match(rf"^{_P}/endpoints/(?P<id>[^/:]+)(?P<verb>:\w+|(/deployedModels/[^/:]+)?/invoke/.+)?$",
                         path)
        dedicated = {e.get("dedicatedEndpointDns") for e in self.endpoints.values()
                     if e.get("dedicatedEndpointEnabled")}
        dedicated |= set(self.psc_addresses.values())  # a PSC forwarding rule serves predictions only
        if match is None:
            return _error(404, "NOT_FOUND", f"{path} is not served on {host}") if host in dedicated else None
        endpoint = self.endpoints.get(match["id"], {})
        predicting = match["verb"] in (":predict", ":rawPredict") or "/invoke/" in (match["verb"] or "")
        if endpoint.get("dedicatedEndpointEnabled") and predicting and host != endpoint["dedicatedEndpointDns"]:
            return _error(400, "FAILED_PRECONDITION", "Dedicated endpoint cannot be accessed through the"
                          f" shared domain; use its dedicated domain {endpoint['dedicatedEndpointDns']}")
        psc = self.psc_addresses.get(match["id"])
        if (endpoint.get("privateServiceConnectConfig") or {}).get("enablePrivateServiceConnect") \
                and predicting and host != psc:
            return _error(403, "PERMISSION_DENIED", "This endpoint is a Private Service Connect"
                          " endpoint: send predictions through its forwarding rule in the consumer"
                          " network")
        if host in dedicated and not predicting:
            return _error(404, "NOT_FOUND", f"{path} is not served on the dedicated domain {host}")
        return None

    # -- operations ---------------------------------------------------------------------
    def _operation(self, resource: str, kind: str, work) -> tuple[int, dict]:
        """Start ``work()`` (returns the response dict) in the background as an operation."""
        name = f"{resource}/operations/{self._id()}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        op = {"name": name, "done": False, "metadata": {
            "@type": f"{_T}{kind}OperationMetadata",
            "genericMetadata": {"createTime": now, "updateTime": now}}}
        with self.lock:
            self.operations[name] = op
        fault = self.faults.get(kind[0].lower() + kind[1:])

        def run():
            time.sleep(self.op_seconds)
            if fault == "hang":
                return
            if fault == "quota":
                result = {"error": {"code": 8, "message": "The following quota metrics exceed quota"
                                    " limits: aiplatform.googleapis.com/custom_model_serving_cpus"}}
            elif fault == "stockout":
                result = {"error": {"code": 8, "message": "The zone 'us-central1-a' does not have"
                                    " enough resources available to fulfill the request. Try a"
                                    " different zone, or try again later."}}
            else:
                try:
                    result = {"response": work()}
                except Exception as err:  # a server that fails to start: 9/FAILED_PRECONDITION
                    result = {"error": {"code": 9, "message": f"Model server never became ready: {err}"}}
            with self.lock:
                if not op["done"]:
                    op.update(result, done=True)
                    if fault == "fail-after-done":
                        self.faults.pop(kind[0].lower() + kind[1:], None)
                        self.dying.add(name)

        threading.Thread(target=run, daemon=True).start()
        return 200, copy.deepcopy(op)

    def _get_operation(self, m, query, body):
        name = self._by_number(m["name"])
        with self.lock:
            if name in self.dying:  # the step that waits for it dies now; the work is done
                self.dying.discard(name)
                return _error(500, "INTERNAL", "the connection was reset (the step died)")
            op = self.operations.get(name)
            return (200, _in_version(copy.deepcopy(op), m.get("api"))) if op else \
                _error(404, "NOT_FOUND", m["name"])

    def _cancel_operation(self, m, query, body):
        with self.lock:
            op = self.operations.get(self._by_number(m["name"]))
            if op is None:
                return _error(404, "NOT_FOUND", m["name"])
            if not op["done"]:
                op.update(done=True, error={"code": 1, "message": "Operation was cancelled."})
        return 200, {}

    def _list_operations(self, m, query, body):
        """Pages of ``operations_page_size`` (google.longrunning ListOperations: pageToken in,
        nextPageToken out); finished operations first, as older ones are."""
        prefix = self._by_number(m["name"]) + "/operations/"
        with self.lock:
            ops = [_in_version(copy.deepcopy(op), m.get("api")) for n, op in self.operations.items()
                   if n.startswith(prefix)]
            ops += copy.deepcopy(self.extra_operations.get(m["name"], []))
        ops.sort(key=lambda op: not op.get("done"))
        start = int(query.get("pageToken") or 0)
        page = ops[start:start + self.operations_page_size]
        answer = {"operations": page}
        if start + self.operations_page_size < len(ops):
            answer["nextPageToken"] = str(start + self.operations_page_size)
        return 200, answer

    # -- models -------------------------------------------------------------------------
    def _upload(self, m, query, body):
        model = copy.deepcopy(body.get("model", {}))
        if not model.get("artifactUri", "").startswith("gs://"):
            return _error(400, "INVALID_ARGUMENT", "artifact_uri must be a gs:// URI")
        image = model.get("containerSpec", {}).get("imageUri", "")
        if not _REGISTRY.match(image):
            return _error(400, "INVALID_ARGUMENT", f"Container image {image} must be in Artifact"
                          " Registry or Container Registry")
        refused = _container_problem(model.get("containerSpec", {}))
        if refused:
            return _error(400, "INVALID_ARGUMENT", refused)
        bad = [a for a in model.get("versionAliases", []) if not _ALIAS.match(a)]
        if bad:  # "default" is allowed: it moves the default alias (the SDK's is_default_version)
            return _error(400, "INVALID_ARGUMENT", f"Invalid version aliases {bad}: use"
                          " [a-z][a-z0-9-]*[a-z0-9]")
        parent = self._parent(m)
        parent_model = body.get("parentModel", "")
        with self.lock:
            if parent_model:
                model_id = parent_model.rsplit("/", 1)[-1]
                if model_id not in self.models:
                    return _error(404, "NOT_FOUND", f"parent model {parent_model} not found")
            else:
                model_id = body.get("modelId") or self._id()
                if model_id in self.models:
                    return _error(409, "ALREADY_EXISTS", f"Model {parent}/models/{model_id} already exists")
                self.models[model_id] = []
        name = f"{parent}/models/{model_id}"

        def work():
            with self.lock:
                versions = self.models[model_id]
                version = str(len(versions) + 1)
                aliases = list(model.get("versionAliases", []))
                for other in versions:  # an alias names one version; "default" stays where it is
                    other["versionAliases"] = [a for a in other.get("versionAliases", []) if a not in aliases]
                # a custom container model is deployed on dedicated (or shared) resources
                model["supportedDeploymentResourcesTypes"] = ["DEDICATED_RESOURCES", "SHARED_RESOURCES"]
                versions.append(dict(model, name=name, versionId=version,
                                     versionAliases=["default", *aliases] if not versions else aliases))
            return {"@type": f"{_T}UploadModelResponse", "model": name, "modelVersionId": version}

        return self._operation(name, "UploadModel", work)

    def _merge_version_aliases(self, m, query, body):
        """Add aliases to a version (taking them from the others; "default" too), "-alias"
        removes one; the default alias itself cannot be removed."""
        with self.lock:
            versions = self.models.get(m["id"])
            version = next((v for v in versions or [] if v["versionId"] == m["version"]), None)
            if version is None:
                return _error(404, "NOT_FOUND", f"model {m['id']}@{m['version']} not found")
            for alias in body.get("versionAliases", []):
                if alias == "-default":
                    return _error(400, "INVALID_ARGUMENT", "the default alias cannot be removed")
                if alias.startswith("-"):
                    version["versionAliases"] = [a for a in version["versionAliases"] if a != alias[1:]]
                    continue
                for other in versions:
                    other["versionAliases"] = [a for a in other.get("versionAliases", []) if a != alias]
                version["versionAliases"].append(alias)
            return 200, copy.deepcopy(version)

    def _default(self, model_id):
        versions = self.models[model_id]
        return next((v for v in versions if "default" in v.get("versionAliases", [])), versions[-1])

    def _list_versions(self, m, query, body):
        with self.lock:
            if not self.models.get(m["id"]):
                return _error(404, "NOT_FOUND", f"model {m['id']} not found")
            versions = copy.deepcopy(self.models[m["id"]])
        return 200, {"models": [v for v in versions if _matches(v, query.get("filter", ""))]}

    def _get_model(self, m, query, body):
        with self.lock:
            versions = self.models.get(m["id"])
            if not versions:
                return _error(404, "NOT_FOUND", f"model {m['id']} not found")
            want = m.get("version")
            found = self._default(m["id"]) if not want else next(
                (v for v in versions if v["versionId"] == want or want in v.get("versionAliases", [])), None)
            return (200, copy.deepcopy(found)) if found else _error(404, "NOT_FOUND", f"version {want}")

    # -- endpoints ----------------------------------------------------------------------
    def _create_endpoint(self, m, query, body):
        endpoint_id = query.get("endpointId") or self._id()
        name = f"{self._parent(m)}/endpoints/{endpoint_id}"
        refused = _endpoint_problem(body)
        if refused:
            return _error(400, "INVALID_ARGUMENT", refused)
        with self.lock:
            if endpoint_id in self.endpoints or endpoint_id in self.creating:
                return _error(409, "ALREADY_EXISTS", f"Endpoint {name} already exists")
            self.creating.add(endpoint_id)

        def work():
            endpoint = dict(body, name=name, deployedModels=[], trafficSplit={})
            if body.get("dedicatedEndpointEnabled"):  # its own host: here localhost on our port
                endpoint["dedicatedEndpointDns"] = f"localhost:{self.url.rsplit(':', 1)[1]}"
            with self.lock:
                self.endpoints[endpoint_id] = endpoint
                self.creating.discard(endpoint_id)
                return dict(copy.deepcopy(endpoint), **{"@type": f"{_T}Endpoint"})

        return self._operation(name, "CreateEndpoint", work)

    def _list_endpoints(self, m, query, body):
        with self.lock:
            found = [_in_version(copy.deepcopy(e), m.get("api")) for e in self.endpoints.values()]
        return 200, {"endpoints": [e for e in found if _matches(e, query.get("filter", ""))]}

    def _get_endpoint(self, m, query, body):
        with self.lock:
            endpoint = self.endpoints.get(m["id"])
            return (200, _in_version(copy.deepcopy(endpoint), m.get("api"))) if endpoint else \
                _error(404, "NOT_FOUND", m["id"])

    def _update_endpoint(self, m, query, body):
        with self.lock:
            endpoint = self.endpoints.get(m["id"])
            if endpoint is None:
                return _error(404, "NOT_FOUND", m["id"])
            if "trafficSplit" in query.get("updateMask", ""):
                split = body.get("trafficSplit", {})
                ids = {d["id"] for d in endpoint["deployedModels"]}
                if (split and sum(split.values()) != 100) or set(split) - ids:
                    return _error(400, "INVALID_ARGUMENT", f"invalid traffic split {split}")
                endpoint["trafficSplit"] = split
            for path, key in (("predict_request_response_logging_config",
                               "predictRequestResponseLoggingConfig"),
                              ("client_connection_config", "clientConnectionConfig")):
                if path in query.get("updateMask", "") or key in query.get("updateMask", ""):
                    refused = _endpoint_problem({**endpoint, key: body.get(key, {})})
                    if refused:
                        return _error(400, "INVALID_ARGUMENT", refused)
                    endpoint[key] = body.get(key, {})
            return 200, copy.deepcopy(endpoint)

    def _deployModel(self, m, query, body):
        with self.lock:
            endpoint = self.endpoints.get(m["id"])
        if endpoint is None:
            return _error(404, "NOT_FOUND", m["id"])
        split = body.get("trafficSplit", {})
        if split and sum(split.values()) != 100:
            return _error(400, "INVALID_ARGUMENT", f"traffic split {split} does not sum to 100")
        deployed = copy.deepcopy(body["deployedModel"])
        flex = (deployed.get("dedicatedResources") or {}).get("flexStart")
        if flex is not None and m.get("api") != "v1beta1":  # v1's DedicatedResources lacks it
            return _error(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name'
                          ' "flexStart" at \'deployed_model.dedicated_resources\': Cannot find field.')
        refused = _deployment_problem(deployed)
        if refused:
            return _error(400, "INVALID_ARGUMENT", refused)
        model_name, _, version = deployed.get("model", "").partition("@")
        with self.lock:
            known = {d["id"] for d in endpoint["deployedModels"]}
            versions = self.models.get(model_name.rsplit("/", 1)[-1], [])
            wanted = next((v for v in versions if v["versionId"] == version), {})
        if (wanted.get("containerSpec") or {}).get("invokeRoutePrefix") \
                and not endpoint.get("dedicatedEndpointEnabled"):
            return _error(400, "FAILED_PRECONDITION", "A model with invoke_route_prefix can only be"
                          " deployed to a dedicated endpoint")
        if set(split) - known - {"0"}:
            return _error(400, "INVALID_ARGUMENT", f"traffic split {split} names models that are not"
                          " deployed")

        def work():
            model_name, _, version = deployed["model"].partition("@")
            with self.lock:
                versions = self.models[model_name.rsplit("/", 1)[-1]]
                model = next(v for v in versions if v["versionId"] == version)
            deployed_id = self._id()
            if self.serve:
                self._start_runtime(deployed_id, model)
            deployed.update(id=deployed_id, modelVersionId=version,
                            createTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            with self.lock:
                endpoint["deployedModels"].append(deployed)
                if split:
                    endpoint["trafficSplit"] = {(deployed_id if k == "0" else k): v
                                                for k, v in split.items() if v}
            if flex is not None:  # Dynamic Workload Scheduler: gone when its time runs out
                seconds = float(flex.get("maxRuntimeDuration", "0s").rstrip("s"))
                timer = threading.Timer(seconds * self.flex_time_scale, self._expire, (m["id"], deployed_id))
                timer.daemon = True
                timer.start()
            return {"@type": f"{_T}DeployModelResponse", "deployedModel": deployed}

        return self._operation(endpoint["name"], "DeployModel", work)

    def _expire(self, endpoint_id: str, deployed_id: str) -> None:
        """A flex-start deployed model's time ran out: Vertex AI undeploys it ("your deployed
        model is automatically undeployed"). Where its traffic goes is not documented: here the
        others share it in their proportions (none left: the split is empty)."""
        with self.lock:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None:
                return
            endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
            rest = {k: v for k, v in endpoint.get("trafficSplit", {}).items() if k != deployed_id and v}
            total = sum(rest.values())
            shares = {k: 100 * v // total for k, v in rest.items()} if total else {}
            if shares:
                first = sorted(shares)[0]
                shares[first] += 100 - sum(shares.values())
            endpoint["trafficSplit"] = shares
        self._stop_runtime(deployed_id)

    def _mutateDeployedModel(self, m, query, body):
        """Only replica counts, autoscaling specs and container logging change in place
        (endpoint_service.proto MutateDeployedModelRequest); the result must still be a
        deployable DeployedModel."""
        with self.lock:
            endpoint = self.endpoints.get(m["id"])
        if endpoint is None:
            return _error(404, "NOT_FOUND", m["id"])
        wanted = body.get("deployedModel", {})
        paths = [p for p in (body.get("updateMask") or query.get("updateMask", "")).split(",") if p]
        paths = [re.sub(r"[A-Z]", lambda c: "_" + c.group().lower(), p) for p in paths]
        refused = [p for p in paths if p not in MUTABLE_PATHS]
        if not paths or refused:
            return _error(400, "INVALID_ARGUMENT", f"update_mask {paths}: only {sorted(MUTABLE_PATHS)}"
                          " can be mutated")
        with self.lock:
            deployed = next((d for d in endpoint["deployedModels"] if d["id"] == wanted.get("id")), None)
        if deployed is None:
            return _error(404, "NOT_FOUND", f"deployed model {wanted.get('id')} is not on {m['id']}")
        changed = copy.deepcopy(deployed)
        for path in paths:
            if path.startswith("dedicated_resources."):
                key = re.sub(r"_([a-z])", lambda c: c.group(1).upper(), path.split(".", 1)[1])
                changed["dedicatedResources"][key] = wanted.get("dedicatedResources", {}).get(key)
            else:
                changed["disableContainerLogging"] = wanted.get("disableContainerLogging", False)
        problem = _deployment_problem(changed)
        if problem:
            return _error(400, "INVALID_ARGUMENT", problem)

        def work():
            with self.lock:
                deployed.clear()
                deployed.update(changed)
            return {"@type": f"{_T}MutateDeployedModelResponse", "deployedModel": copy.deepcopy(changed)}

        return self._operation(endpoint["name"], "MutateDeployedModel", work)

    def _undeployModel(self, m, query, body):
        with self.lock:
            endpoint = self.endpoints.get(m["id"])
        if endpoint is None:
            return _error(404, "NOT_FOUND", m["id"])
        deployed_id = body.get("deployedModelId")
        split = body.get("trafficSplit") or {}
        with self.lock:
            ids = [d["id"] for d in endpoint["deployedModels"]]
            share = endpoint["trafficSplit"].get(deployed_id, 0)
        if deployed_id not in ids:
            return _error(404, "NOT_FOUND", f"deployed model {deployed_id} is not on {endpoint['name']}")
        others = [i for i in ids if i != deployed_id]
        # UndeployModelRequest.traffic_split: a model is undeployed only if it has no traffic or
        # the request's split takes it away; the last one may go with its traffic
        if split and (split.get(deployed_id) or set(split) - set(others) or sum(split.values()) != 100):
            return _error(400, "INVALID_ARGUMENT", f"invalid traffic split {split} for undeploying"
                          f" {deployed_id}: it must give the remaining models 100")
        if share and others and not split:
            return _error(400, "FAILED_PRECONDITION", f"Model {deployed_id} has {share}% of the"
                          " endpoint's traffic; set the traffic split so that it has none before"
                          " undeploying it")

        def work():
            with self.lock:
                endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
                if not others:
                    endpoint["trafficSplit"] = {}
                elif split:
                    endpoint["trafficSplit"] = split
                else:  # it had no traffic: the others keep theirs
                    endpoint["trafficSplit"] = {k: v for k, v in endpoint["trafficSplit"].items()
                                                if k != deployed_id}
            self._stop_runtime(deployed_id)
            return {"@type": f"{_T}UndeployModelResponse"}

        return self._operation(endpoint["name"], "UndeployModel", work)

    # -- serving ------------------------------------------------------------------------
    def _start_runtime(self, deployed_id: str, model: dict) -> None:
        from fakes.storage_copy import copy_prefix

        target = Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"deployed-{deployed_id}-"))
        folder = copy_prefix(model["artifactUri"], target / "model")  # unchecked, as Vertex reads it
        stack = contextlib.ExitStack()
        spec = model["containerSpec"]
        if VLLM_MODULE in spec.get("args", []):
            url = self._start_vllm(deployed_id, model, folder, stack)
            with self.lock:
                self.runtimes[deployed_id] = (url, "vllm", stack)
            return
        if (folder / "model.mar").is_file():
            # Vertex AI's prebuilt PyTorch container: TorchServe with its own configuration
            # (the archive's config.properties is not read, no per-model pip install), the JSON
            # service envelope, model.mar from the artifact's top registered as "model", and
            # predictions on /predictions/model (VERTEX_BEHAVIOUR.md)
            import shutil

            from fakes.torchserve_runner import torchserve_store

            store = target / "prebuilt-store"
            store.mkdir()
            shutil.copy2(folder / "model.mar", store / "model.mar")
            url = stack.enter_context(torchserve_store(store, ["model"], target, envelope="json"))
            kind = "torchserve:model"
        else:  # the container image runs tritonserver in its Vertex AI mode
            from fakes.triton_vertex import TritonVertexFront, repository_and_default_model
            from kfp_serve.components.local.triton_server import start_server, stop_server

            spec = model["containerSpec"]
            port = (spec.get("ports") or [{"containerPort": 8080}])[0]["containerPort"]
            env = {"AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port),
                   "AIP_PREDICT_ROUTE": spec.get("predictRoute", ""),
                   "AIP_HEALTH_ROUTE": spec.get("healthRoute", ""),
                   "AIP_STORAGE_URI": model["artifactUri"],
                   **{e["name"]: e["value"] for e in spec.get("env", [])}}
            repository, name = repository_and_default_model(spec.get("args", []), env)
            if repository != model["artifactUri"]:
                raise RuntimeError(f"the model repository {repository!r} is not the model's artifact")
            models = sorted(p.name for p in folder.iterdir() if (p / "config.pbtxt").is_file())
            if not name and len(models) != 1:  # vertex_ai_server.cc Create
                raise RuntimeError("Expect the model repository contains only a single model if"
                                   " default model is not specified")
            name = name or models[0]
            if name not in models:
                raise RuntimeError(f"Expect the default model '{name}' is loaded")
            grpc_port = self._grpc_port(spec, env)
            record = start_server(folder, name, f"vertex-{deployed_id}", timeout_s=60)
            stack.callback(stop_server, record)
            if grpc_port:
                from fakes.vertex_grpc import grpc_health

                problem = grpc_health(record.grpc_url)  # the local Triton's own gRPC server
                if problem:
                    stack.close()
                    raise RuntimeError(f"gRPC health check on port {grpc_port} failed: {problem}")
                with self.lock:
                    self.grpc_ports[deployed_id] = record.grpc_url
            front = stack.enter_context(TritonVertexFront(record.url, name, env["AIP_PREDICT_ROUTE"],
                                                          env["AIP_HEALTH_ROUTE"], record.metrics_url))
            url, kind = front.url, f"triton-vertex:{name}"
        with self.lock:
            self.runtimes[deployed_id] = (url, kind, stack)
            self.routes[deployed_id] = ("/predictions/model" if kind.startswith("torchserve")
                                        else model["containerSpec"]["predictRoute"])

    @staticmethod
    def _grpc_port(spec: dict, env: dict[str, str]) -> int:
        """A container with ``grpcPorts`` gets gRPC requests and health checks on the first one
        (model.proto; 0: none). tritonserver in Vertex AI mode turns its gRPC server off unless
        ``--allow-grpc=true``, and listens on ``--grpc-port`` (8001 by default;
        command_line_parser.cc): otherwise the health checks never pass and the deploy fails."""
        if not spec.get("grpcPorts"):
            return 0
        port = int(spec["grpcPorts"][0]["containerPort"])
        from fakes.triton_vertex import triton_options

        options = triton_options(spec.get("args", []), env)
        if options.get("allow-grpc", "").lower() not in ("true", "on", "1"):  # ParseOption<bool>
            raise RuntimeError(f"health checks to gRPC port {port} failed: tritonserver in Vertex AI"
                               " mode serves no gRPC without --allow-grpc=true")
        if int(options.get("grpc-port", "8001")) != port:
            raise RuntimeError(f"health checks to gRPC port {port} failed: tritonserver serves gRPC"
                               f" on {options.get('grpc-port', '8001')}")
        return port

    def _start_vllm(self, deployed_id: str, model: dict, folder: Path,
                    stack: contextlib.ExitStack) -> str:
        """Vertex AI's vLLM image: ``python3 -m vllm.entrypoints.openai.api_server`` with the
        container's arguments, ``$(VAR)`` expanded from the AIP_* variables and ``env``
        (ModelContainerSpec.args), ``--model=gs://...`` downloaded by the image (Model Garden's
        deploy specs pass gs:// folders), health checks on the container's port and health route
        (VERTEX_BEHAVIOUR.md: vLLM serving). Here the local vLLM, on 127.0.0.1 and a free port."""
        import urllib.error

        from fakes.kserve_vllm import flag_value, start_vllm_predictor
        from fakes.triton_vertex import expand
        from kfp_serve.components.local.triton_server import stop_server

        spec = model["containerSpec"]
        port = (spec.get("ports") or [{"containerPort": 8080}])[0]["containerPort"]
        env = {"AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port),
               "AIP_HEALTH_ROUTE": spec.get("healthRoute", ""),
               "AIP_STORAGE_URI": model["artifactUri"],
               **{e["name"]: e["value"] for e in spec.get("env", [])}}
        args = [expand(a, env) for a in spec["args"]]
        args = args[args.index(VLLM_MODULE) + 1:]
        source = flag_value(args, "--model") or ""
        if source.rstrip("/") != model["artifactUri"].rstrip("/"):
            raise RuntimeError(f"vLLM cannot load model {source!r}: the container reads the"
                               f" model's artifact at {model['artifactUri']}")
        listens = flag_value(args, "--port") or "8000"
        if listens != str(port):
            raise RuntimeError(f"the server listens on port {listens} and Vertex AI sends health"
                               f" checks to the container port {port}")
        record = start_vllm_predictor({"args": args}, folder, f"vertex-{deployed_id}")
        stack.callback(stop_server, record)
        route = spec.get("healthRoute") or "/"
        try:
            with urllib.request.urlopen(record.url + route, timeout=30) as answer:
                healthy = answer.status == 200
        except (urllib.error.URLError, OSError):
            healthy = False
        if not healthy:
            stack.close()
            raise RuntimeError(f"health route {route} never answered 200")
        return record.url

    def _stop_runtime(self, deployed_id: str) -> None:
        with self.lock:
            runtime = self.runtimes.pop(deployed_id, None)
            self.grpc_ports.pop(deployed_id, None)
        if runtime:
            runtime[2].close()

    def stop(self) -> None:
        for deployed_id in list(self.runtimes):
            self._stop_runtime(deployed_id)
        if self.grpc is not None:
            self.grpc.stop()

    def _pick(self, endpoint_id: str) -> str | None:
        with self.lock:
            split = dict(self.endpoints.get(endpoint_id, {}).get("trafficSplit", {}))
        if not split:
            return None
        ids, weights = zip(*split.items())
        return random.choices(ids, weights=weights)[0]

    def _forward(self, m, body, raw: bool, headers=None):
        with self.lock:
            dedicated = self.endpoints.get(m["id"], {}).get("dedicatedEndpointEnabled")
        limit = DEDICATED_REQUEST_LIMIT_BYTES if dedicated else REQUEST_LIMIT_BYTES
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if len(data) > limit:
            return _error(400, "INVALID_ARGUMENT", f"Request payload size exceeds the limit: {limit} bytes.")
        if isinstance(body, bytes) and not raw:
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        deployed_id = self._pick(m["id"])
        if deployed_id is None or deployed_id not in self.runtimes:
            return _error(400, "FAILED_PRECONDITION", "the endpoint has no deployed model that takes traffic")
        url, kind, _ = self.runtimes[deployed_id]
        if kind == "vllm":  # invokeRoutePrefix turns every other Vertex AI route off
            return _error(400, "FAILED_PRECONDITION", f"Deployed model {deployed_id} has"
                          " invoke_route_prefix set: only invoke requests are served")
        # Vertex AI posts to the container's predict route; rawPredict passes the caller's
        # headers on (Triton's redirect header among them)
        route = self.routes.get(deployed_id, "/predictions/model")
        forwarded = {"Content-Type": "application/json"}
        for key, value in (headers or {}).items():
            if raw and key.lower() in ("x-vertex-ai-triton-redirect", "content-type"):
                forwarded[key] = value  # rawPredict's HttpBody keeps its content type
        request = urllib.request.Request(url + route, data=data, headers=forwarded)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, answer = response.status, response.read()
                kind = response.headers.get("Content-Type", "")
                # rawPredict answers the container's body with its content type only (an HttpBody):
                # other headers, e.g. Inference-Header-Content-Length, stay behind
                payload = json.loads(answer) if kind.split(";")[0] in ("", "application/json") else answer
        except urllib.error.HTTPError as err:
            status, payload = err.code, json.loads(err.read() or b"{}")
            kind = "application/json"
        headers = {"X-Vertex-AI-Endpoint-Id": m["id"], "X-Vertex-AI-Deployed-Model-Id": deployed_id}
        if isinstance(payload, bytes):
            headers["Content-Type"] = kind
        if raw or status != 200:
            return status, payload, headers
        return 200, {"predictions": payload.get("predictions", payload), "deployedModelId": deployed_id}, headers

    def _predict(self, m, query, body, headers=None):
        return self._forward(m, body, raw=False)

    def _rawPredict(self, m, query, body, headers=None):
        # google.api.HttpBody as JSON: {"contentType": ..., "data": base64}; a plain JSON body
        # (curl with the OIP payload) passes straight through, as on the real service
        if isinstance(body, dict) and set(body) >= {"data"} and "inputs" not in body:
            import base64

            body = json.loads(base64.b64decode(body["data"]))
        return self._forward(m, body, raw=True, headers=headers)

    def _invoke(self, m, query, body, headers=None):
        """``POST .../endpoints/E[/deployedModels/D]/invoke/<route>``: the request goes to
        ``/<route>`` of the deployed model named, or of one the traffic split picks, as it came;
        the answer comes back as the server sends it, a stream chunk by chunk (the invoke
        reference: "Forwards arbitrary HTTP requests for both streaming and non-streaming
        cases")."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if len(data) > DEDICATED_REQUEST_LIMIT_BYTES:
            return _error(400, "INVALID_ARGUMENT", "Request payload size exceeds the limit:"
                          f" {DEDICATED_REQUEST_LIMIT_BYTES} bytes.")
        deployed_id = m.get("deployed") or self._pick(m["id"])
        with self.lock:
            endpoint = self.endpoints.get(m["id"], {})
            known = {d["id"] for d in endpoint.get("deployedModels", [])}
            runtime = self.runtimes.get(deployed_id or "")
        if deployed_id is None or deployed_id not in known:
            return _error(404, "NOT_FOUND", f"deployed model {deployed_id} is not on endpoint {m['id']}")
        if runtime is None or runtime[1] != "vllm":
            return _error(400, "FAILED_PRECONDITION", f"Deployed model {deployed_id} does not"
                          " have invoke_route_prefix set; invoke is not enabled for it")
        kind = next((v for k, v in (headers or {}).items() if k.lower() == "content-type"),
                    "application/json")
        request = urllib.request.Request(f"{runtime[0]}/{m['route']}", data=data, method="POST",
                                         headers={"Content-Type": kind})
        try:
            response = urllib.request.urlopen(request, timeout=300)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), {"Content-Type": err.headers.get("Content-Type", "")}
        answer_kind = response.headers.get("Content-Type", "")
        if answer_kind.startswith("text/event-stream"):
            def chunks():
                with response:
                    while chunk := response.read1(65536):
                        yield chunk
            return response.status, chunks(), {"Content-Type": answer_kind}
        with response:
            return response.status, response.read(), {"Content-Type": answer_kind}
