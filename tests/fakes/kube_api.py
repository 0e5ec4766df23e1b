"""A behavioural fake of the Kubernetes API for KServe, and a fake KServe controller.

The API side speaks the real REST protocol the official client uses: namespaces, pods, pod
logs, events, SelfSubjectAccessReview, (Cluster)ServingRuntimes and InferenceServices with
create/get/replace/merge-patch/delete, the status subresource, generation/resourceVersion
bookkeeping, 409 on a stale resourceVersion or an existing name, dryRun=All, and 422 when an
object violates the CRD schema (unknown fields under fieldValidation=Strict included).

The controller reconciles each InferenceService the way KServe does, on this machine: it
fetches ``storageUri`` from the GCS emulator like the storage initializer, serves it with the
local Triton runtime, and writes status (Ready, URL, revisions, traffic). The annotation
``fake.kserve.io/behavior`` asks for failures instead: ``never-ready``, ``image-pull``,
``unschedulable``.
"""

from __future__ import annotations

import copy
import re
import tempfile
import threading
import uuid
from pathlib import Path

from fakes.crd_schema import schema_errors

ISVC = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?(/status)?$")
RUNTIMES = re.compile(r"^/apis/serving\.kserve\.io/v1alpha1/(?:namespaces/([^/]+)/)?(servingruntimes|clusterservingruntimes)$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                  "reason": reason, "code": code}


class FakeKubeApi:
    def __init__(self, namespaces=("models",), runtimes=(), denied_verbs=(), crd_schema=None):
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
            return self._route(method, path, query, body)

    def _route(self, method, path, query, body):
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            attributes = body["spec"]["resourceAttributes"]
            allowed = attributes["verb"] not in self.denied_verbs
            return 201, dict(body, status={"allowed": allowed})
        match = re.match(r"^/api/v1/namespaces/([^/]+)$", path)
        if match and method == "GET":
            if match.group(1) not in self.namespaces:
                return _status(404, "NotFound", f'namespaces "{match.group(1)}" not found')
            return 200, {"kind": "Namespace", "metadata": {"name": match.group(1)}}
        match = re.match(r"^/api/v1/namespaces/([^/]+)/pods$", path)
        if match:
            selector = query.get("labelSelector", "")
            name = selector.split("=", 1)[1] if "=" in selector else ""
            return 200, {"kind": "PodList", "items": copy.deepcopy(self.pods.get(name, []))}
        match = POD_LOG.match(path)
        if match:
            return 200, self.logs.get((match.group(2), query.get("container", "")), "")
        if re.match(r"^/api/v1/namespaces/([^/]+)/events$", path):
            return 200, {"kind": "EventList", "items": copy.deepcopy(self.events)}
        match = RUNTIMES.match(path)
        if match:
            namespaced = match.group(2) == "servingruntimes"
            items = [r for r in self.runtimes if (r["kind"] == "ServingRuntime") == namespaced]
            return 200, {"items": copy.deepcopy(items)}
        match = ISVC.match(path)
        if match:
            return self._isvc(method, match.group(1), match.group(2), bool(match.group(3)), query, body)
        return _status(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _invalid(self, obj) -> tuple[int, dict] | None:
        if self.schema is None:
            return None
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
            invalid = self._invalid(body)
            if invalid:
                return invalid
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
            del self.objects[key]
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
            invalid = self._invalid({k: v for k, v in new.items() if k != "status"})
            if invalid:
                return invalid
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
        if not status_sub and updated["metadata"]["generation"] != current["metadata"]["generation"]:
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


class FakeKServeController:
    """Reconciles InferenceServices in a background thread with real storage and serving."""

    def __init__(self, api: FakeKubeApi, workdir: Path):
        self.api = api
        api.controller = self
        self.workdir = workdir
        # key -> revisions in creation order: (revision name, storageUri, server record)
        self.servers: dict[tuple[str, str], list[tuple[str, str, object]]] = {}
        self.lock = threading.Lock()

    def enqueue(self, key):
        threading.Thread(target=self._reconcile, args=(key,), daemon=True).start()

    def _reconcile(self, key):
        from kfp_serve.components.errors import KfpServeError
        from kfp_serve.components.local.triton_server import start_server, stop_server

        with self.api.lock:
            obj = copy.deepcopy(self.api.objects.get(key))
        if obj is None:
            return
        namespace, name = key
        generation = obj["metadata"]["generation"]
        predictor = obj["spec"]["predictor"]
        storage_uri = predictor["model"]["storageUri"]
        behavior = obj["metadata"].get("annotations", {}).get("fake.kserve.io/behavior", "")
        with self.lock:
            revisions = self.servers.setdefault(key, [])
            traffic_only = bool(revisions) and revisions[-1][1] == storage_uri
            revision = f"{name}-predictor-{len(revisions) + 1:05d}"
        if traffic_only:
            self._publish_status(key, obj)
            return
        pod = f"{revision}-deployment-0"
        if behavior == "never-ready":
            return
        if behavior in ("image-pull", "unschedulable"):
            self._pod(key, pod, behavior)
            return
        target = Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{name}-{generation}-"))
        try:
            from kfp_serve.components.storage.fetch import fetch_version

            repository = fetch_version(storage_uri, target / "repository")
        except KfpServeError as err:
            self._failed(key, obj, pod, "storage-initializer", str(err))
            return
        models = [p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()]
        try:
            if (repository / "model-store").is_dir():  # a TorchServe archive: KServe's torchserve runtime
                from fakes.kserve_torchserve import TorchServeBehindKServe

                record = TorchServeBehindKServe(repository, target)
            else:
                record = start_server(repository, models[0], f"{namespace}-{name}-{generation}-{uuid.uuid4().hex[:6]}",
                                      timeout_s=60)
        except (KfpServeError, RuntimeError) as err:
            self._failed(key, obj, pod, "kserve-container", str(err))
            return
        with self.lock:
            revisions = self.servers.get(key)
            if revisions is not None:
                revisions.append((revision, storage_uri, record))
        if revisions is None:  # deleted (or the controller stopped) while it started: a real
            # controller garbage-collects the revision's pods; never leave a server running
            record.stop() if hasattr(record, "stop") else stop_server(record)
            return
        self.api.logs[(pod, "storage-initializer")] = f"Copied {storage_uri} to /mnt/models\n"
        self.api.logs[(pod, "kserve-container")] = Path(record.log_path).read_text(errors="replace")[-4000:]
        self.api.pods[name] = [_pod_object(pod, name, "Running")]
        self._publish_status(key, obj)

    def _publish_status(self, key, obj):
        with self.api.lock:
            current = copy.deepcopy(self.api.objects.get(key))
        if current is None:
            return
        generation = current["metadata"]["generation"]
        canary = current["spec"]["predictor"].get("canaryTrafficPercent")
        with self.lock:
            ready = list(self.servers.get(key, []))
        latest_rev, _, latest = ready[-1]
        previous = ready[-2] if len(ready) > 1 else None
        if canary is None or previous is None:
            traffic = [{"revisionName": latest_rev, "percent": 100, "latestRevision": True}]
            serving = latest
        else:
            traffic = [{"revisionName": previous[0], "percent": 100 - canary, "tag": "prev",
                        "latestRevision": False, "url": previous[2].url},
                       {"revisionName": latest_rev, "percent": canary, "tag": "latest",
                        "latestRevision": True, "url": latest.url}]
            serving = previous[2]  # the main URL splits traffic; most of it still goes here
        status = {
            "observedGeneration": generation,
            "url": serving.url,
            "address": {"url": serving.url},
            "conditions": [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")],
            "components": {"predictor": {"latestReadyRevision": latest_rev,
                                         "latestCreatedRevision": latest_rev, "traffic": traffic}},
            "modelStatus": {"transitionStatus": "UpToDate",
                            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"}},
        }
        self.api.set_status(key, status)

    def _failed(self, key, obj, pod, container, message):
        self.api.logs[(pod, container)] = message + "\n"
        self.api.pods[key[1]] = [_pod_object(pod, key[1], "Pending", failed_container=container)]
        self.api.events.append({"type": "Warning", "reason": "BackOff", "message": f"Back-off restarting failed container {container}",
                                "involvedObject": {"kind": "Pod", "name": pod}, "metadata": {"name": f"{pod}.1"}})
        status = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [{"type": "PredictorReady", "status": "False", "reason": "ModelLoadFailed"},
                           {"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}],
            "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                            "states": {"activeModelState": "FailedToLoad", "targetModelState": "Loaded"},
                            "lastFailureInfo": {"reason": "ModelLoadFailed", "location": container,
                                                "message": message}},
        }
        self.api.set_status(key, status)

    def _pod(self, key, pod, behavior):
        waiting = behavior == "image-pull"
        self.api.pods[key[1]] = [_pod_object(pod, key[1], "Pending", image_pull=waiting,
                                             unschedulable=not waiting)]

    def forget(self, key):
        from kfp_serve.components.local.triton_server import stop_server

        with self.lock:
            revisions = self.servers.pop(key, [])
        for _, _, record in revisions:
            record.stop() if hasattr(record, "stop") else stop_server(record)

    def stop(self):
        for key in list(self.servers):
            self.forget(key)


def _pod_object(name, isvc, phase, failed_container="", image_pull=False, unschedulable=False):
    containers = [{"name": "kserve-container", "ready": phase == "Running", "restartCount": 0,
                   "image": "kserve-tritonserver", "imageID": "",
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
    return {"kind": "Pod", "metadata": {"name": name, "labels": {"serving.kserve.io/inferenceservice": isvc}},
            "status": {"phase": phase, "conditions": conditions, "initContainerStatuses": init,
                       "containerStatuses": containers}}


def runtimes_from_shared(shared: Path) -> list[dict]:
    import yaml

    return [yaml.safe_load((shared / f).read_text())
            for f in ("kserve-tritonserver.yaml", "kserve-torchserve.yaml")]
