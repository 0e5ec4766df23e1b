"""Deploy, watch, diagnose, promote, roll back and delete InferenceServices.

Talks to the Kubernetes API with the official ``kubernetes`` client; every API error is
translated here, at one boundary, into a one-line error that says whose problem it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.cancellation import sigterm_flag
from kfp_serve.components.errors import InfrastructureError, KfpServeError, UserError, first_line
from kfp_serve.components.kserve.manifest import GROUP, PLURAL, VERSION, InferenceServiceSpec

RUNTIME_VERSION = "v1alpha1"
INFRA_WAITING_REASONS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")
TERMINAL_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")


class DeployError(KfpServeError):
    """A deploy that failed, with the diagnostics report gathered at the time."""

    def __init__(self, cause: KfpServeError, diagnostics: str):
        super().__init__(str(cause))
        self.cause = cause
        self.diagnostics = diagnostics
        self.exit_code = cause.exit_code


@dataclass
class KServeDeployment:
    """The ready InferenceService, as the outputs report it."""

    name: str
    namespace: str
    url: str
    internal_url: str
    latest_ready_revision: str
    traffic: list[dict[str, Any]] = field(default_factory=list)
    created: bool = False
    canary_url: str = ""  # the tagged URL of the latest revision, while traffic is split

    def summary(self, storage_uri: str) -> str:
        """The deployment summary (Markdown) the step's report shows."""
        return (f"# InferenceService `{self.namespace}/{self.name}`: Ready\n\n- url: {self.url}\n"
                f"- internal url: {self.internal_url}\n- revision: {self.latest_ready_revision}\n"
                f"- traffic: {json.dumps(self.traffic)}\n- storageUri: {storage_uri}\n")

    def artifact_metadata(self, spec: InferenceServiceSpec, published: dict[str, Any]) -> dict[str, Any]:
        """The KServeInferenceService artifact's metadata: what validation, promote and rollback
        read (``published`` is the PublishedVersion's metadata: model name, tensor names)."""
        return {"name": self.name, "namespace": self.namespace, "url": self.url,
                "internal_url": self.internal_url,
                "latest_ready_revision": self.latest_ready_revision, "traffic": self.traffic,
                "canary_url": self.canary_url, "storage_uri": spec.storage_uri,
                "model_name": published.get("model_name", self.name),
                "tensor_names": published.get("tensor_names", {}),
                "protocol": spec.protocol_version}


def api_client(host: str | None = None, token: str | None = None):
    """An ApiClient: ``host`` (tests, proxies), else in-cluster config, else kubeconfig."""
    from kubernetes import client, config

    if host:
        configuration = client.Configuration()
        configuration.host = host
        if token:
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except Exception as err:
            raise UserError("no Kubernetes credentials: not in a cluster and no kubeconfig"
                            f" ({first_line(err)})") from err
    return client.ApiClient()


def _reason(err) -> str:
    import json

    try:
        body = json.loads(err.body or "{}")
        return body.get("message") or err.reason or ""
    except (ValueError, TypeError):
        return first_line(err)


def translate(err: Exception, what: str) -> KfpServeError:
    """Kubernetes ApiException -> UserError (spec, RBAC, missing things) or InfrastructureError."""
    from kubernetes.client.exceptions import ApiException

    if not isinstance(err, ApiException):
        return InfrastructureError(f"{what}: cannot reach the Kubernetes API ({first_line(err)})")
    message = _reason(err)
    if err.status == 403:
        return UserError(f"{what}: RBAC denied ({message}); grant the pipeline's service account"
                         " the role in rbac/kfp-serve-kserve.yaml")
    if err.status in (400, 404, 409, 422):
        return UserError(f"{what}: {message}")
    return InfrastructureError(f"{what}: the API server answered {err.status} ({message})")


#: (connect, read) seconds of every Kubernetes API call
REQUEST_TIMEOUT_S = (10, 30)
TRANSIENT_STATUS = (0, 429, 500, 502, 503, 504)


class _Retrying:
    """A kubernetes API object whose every call has a timeout and is retried with backoff on
    transient failures (connection refused/reset, timeouts, 429, 5xx) for up to ``budget_s``.
    Other API errors reach the caller at once, as ``ApiException``; a connection that never
    comes back becomes one InfrastructureError naming the API host."""

    def __init__(self, api: Any, host: str, budget_s: float):
        self._api, self._host, self._budget_s = api, host, budget_s

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._api, name)
        return lambda *args, **kwargs: self._call(call, name, *args, **kwargs)

    def _call(self, call: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        deadline, delay, tries = time.monotonic() + self._budget_s, 0.5, 0
        while True:
            tries += 1
            try:
                return call(*args, **kwargs)
            except ApiException as err:
                if err.status not in TRANSIENT_STATUS or time.monotonic() + delay > deadline:
                    raise
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if time.monotonic() + delay > deadline:
                    raise InfrastructureError(
                        f"cannot reach the Kubernetes API at {self._host} ({name}, {tries} tries in"
                        f" {self._budget_s:.0f}s): {first_line(err)}") from err
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class KServeCluster:
    """One namespace's InferenceServices, through the Kubernetes API."""

    def __init__(self, api, namespace: str, retry_budget_s: float = 60.0):
        from kubernetes import client

        self.namespace = namespace
        host = api.configuration.host
        self.custom = _Retrying(client.CustomObjectsApi(api), host, retry_budget_s)
        self.core = _Retrying(client.CoreV1Api(api), host, retry_budget_s)
        self.auth = _Retrying(client.AuthorizationV1Api(api), host, retry_budget_s)

    # -- reads --------------------------------------------------------------------------
    def get(self, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                            PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise translate(err, f"reading InferenceService {name!r}") from err

    # -- preflight ----------------------------------------------------------------------
    def preflight(self, manifest: dict) -> None:
        """Check RBAC, the namespace and a serving runtime before creating anything."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        denied = []
        for verb in ("get", "create", "update", "patch"):
            review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    group=GROUP, resource=PLURAL, verb=verb, namespace=self.namespace)))
            try:
                answer = self.auth.create_self_subject_access_review(review)
            except ApiException as err:
                raise translate(err, "checking RBAC (SelfSubjectAccessReview)") from err
            if not answer.status.allowed:
                denied.append(verb)
        if denied:
            raise UserError(
                f"RBAC: the service account may not {'/'.join(denied)} inferenceservices in"
                f" namespace {self.namespace!r}; apply rbac/kfp-serve-kserve.yaml (Role + RoleBinding)"
            )
        try:
            self.core.read_namespace(self.namespace)
        except ApiException as err:
            if err.status == 404:
                raise UserError(f"namespace {self.namespace!r} does not exist; create it or pick"
                                " another") from err
            if err.status != 403:  # reading namespaces is cluster-scoped; a Role cannot grant it
                raise translate(err, f"reading namespace {self.namespace!r}") from err
        model = manifest["spec"]["predictor"]["model"]
        self._check_runtime(model["modelFormat"]["name"], model.get("protocolVersion", "v1"),
                            model.get("runtime"))

    def _runtimes(self) -> list[dict]:
        from kubernetes.client.exceptions import ApiException

        found = []
        for call, args in ((self.custom.list_namespaced_custom_object,
                            (GROUP, RUNTIME_VERSION, self.namespace, "servingruntimes")),
                           (self.custom.list_cluster_custom_object,
                            (GROUP, RUNTIME_VERSION, "clusterservingruntimes"))):
            try:
                found += call(*args).get("items", [])
            except ApiException as err:
                if err.status not in (403, 404):
                    raise translate(err, "listing serving runtimes") from err
        return found

    def _check_runtime(self, model_format: str, protocol: str, runtime: str | None) -> None:
        runtimes = self._runtimes()
        if runtime:
            runtimes = [r for r in runtimes if r["metadata"]["name"] == runtime]
            if not runtimes:
                raise UserError(f"serving runtime {runtime!r} exists neither in namespace"
                                f" {self.namespace!r} nor cluster-wide")
        fits = [r["metadata"]["name"] for r in runtimes
                if protocol in r["spec"].get("protocolVersions", ["v1"])
                and any(f.get("name") == model_format and (runtime or f.get("autoSelect"))
                        for f in r["spec"].get("supportedModelFormats", []))]
        if not fits:
            raise UserError(
                f"no ServingRuntime or ClusterServingRuntime{' ' + repr(runtime) if runtime else ''}"
                f" serves model format {model_format!r} over protocol {protocol!r}; install one"
                " (e.g. kserve-tritonserver) or change model_format/protocol_version"
            )

    # -- writes -------------------------------------------------------------------------
    def apply(self, manifest: dict, attempts: int = 5) -> bool:
        """Create, or replace with the current resourceVersion (retrying conflicts).

        A server-side dry run (``dryRun=All``, strict field validation) goes first, so a bad
        spec is refused before anything changes. Returns True if the object was created.
        """
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        for attempt in range(attempts):
            existing = self.get(name)
            try:
                if existing is None:
                    for dry_run in ("All", None):
                        self.custom.create_namespaced_custom_object(
                            GROUP, VERSION, self.namespace, PLURAL, manifest, dry_run=dry_run,
                            field_validation="Strict")
                    return True
                body = dict(manifest, metadata={**manifest["metadata"],
                                                "resourceVersion": existing["metadata"]["resourceVersion"]})
                for dry_run in ("All", None):
                    self.custom.replace_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, name, body, dry_run=dry_run,
                        field_validation="Strict")
                return False
            except ApiException as err:
                # 409 on create: someone created it meanwhile; on replace: a newer resourceVersion
                if err.status == 409 and attempt + 1 < attempts:
                    continue
                raise translate(err, f"applying InferenceService {name!r}") from err
        raise InfrastructureError(f"InferenceService {name!r} kept changing; gave up after {attempts} tries")

    def patch_predictor(self, name: str, fields: dict) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"predictor": fields}})
        except ApiException as err:
            raise translate(err, f"patching InferenceService {name!r}") from err

    def delete(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise translate(err, f"deleting InferenceService {name!r}") from err

    # -- waiting ------------------------------------------------------------------------
    def wait_ready(self, name: str, timeout_s: float, poll_s: float = 2.0) -> KServeDeployment:
        """Poll until Ready for the current generation; fail fast on terminal failures.

        SIGTERM (pipeline cancellation) stops the wait with an InfrastructureError.
        """
        deadline = time.monotonic() + timeout_s
        with sigterm_flag() as cancelled:
            while True:
                isvc = self.get(name)
                if isvc is None:
                    raise InfrastructureError(f"InferenceService {name!r} disappeared while waiting")
                status = isvc.get("status", {})
                current = status.get("observedGeneration", 0) >= isvc["metadata"].get("generation", 1)
                if current and _condition(status, "Ready") == "True":
                    return _deployed(isvc)
                failure = _terminal_failure(status) if current else ""
                if failure:
                    raise UserError(f"InferenceService {name!r} failed: {failure}")
                infra = self._pod_infrastructure_failure(name)
                if infra:
                    raise InfrastructureError(f"InferenceService {name!r} cannot start: {infra}")
                if cancelled.is_set():
                    raise InfrastructureError(f"cancelled while waiting for {name!r} ({_summary(status)})")
                if time.monotonic() >= deadline:
                    raise InfrastructureError(
                        f"InferenceService {name!r} not Ready after {timeout_s:.0f}s: {_summary(status)}")
                cancelled.wait(poll_s)

    def _pods(self, name: str) -> list:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.list_namespaced_pod(
                self.namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
        except ApiException:
            return []

    def _pod_infrastructure_failure(self, name: str) -> str:
        for pod in self._pods(name):
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return f"pod {pod.metadata.name} is unschedulable: {condition.message}"
            for container in [*(pod.status.init_container_statuses or []),
                              *(pod.status.container_statuses or [])]:
                waiting = container.state.waiting if container.state else None
                if waiting and waiting.reason in INFRA_WAITING_REASONS:
                    return f"container {container.name} is {waiting.reason}: {waiting.message}"
        return ""

    # -- diagnostics --------------------------------------------------------------------
    def diagnostics(self, name: str, log_lines: int = 30) -> str:
        """A Markdown report of everything that says why an InferenceService is not Ready."""
        from kubernetes.client.exceptions import ApiException

        isvc = self.get(name) or {}
        status = isvc.get("status", {})
        lines = [f"# InferenceService `{self.namespace}/{name}`: diagnostics", "",
                 "## Conditions", "", "| type | status | reason | message |", "|---|---|---|---|"]
        for c in status.get("conditions", []):
            lines.append(f"| {c.get('type')} | {c.get('status')} | {c.get('reason', '')} |"
                         f" {c.get('message', '')} |")
        model_status = status.get("modelStatus", {})
        lines += ["", "## Model status", "",
                  f"- transition: {model_status.get('transitionStatus', 'unknown')}",
                  f"- states: {model_status.get('states', {})}",
                  f"- last failure: {model_status.get('lastFailureInfo', 'none')}", "", "## Pods", ""]
        pods = self._pods(name)
        if not pods:
            lines.append("- no predictor pods")
        for pod in pods:
            lines.append(f"- `{pod.metadata.name}`: {pod.status.phase}")
            for container in [*(pod.status.init_container_statuses or []),
                              *(pod.status.container_statuses or [])]:
                state = container.state
                detail = (f"waiting {state.waiting.reason}" if state and state.waiting else
                          f"terminated {state.terminated.reason} (exit {state.terminated.exit_code})"
                          if state and state.terminated else "running")
                lines.append(f"  - {container.name}: {detail}, restarts {container.restart_count}")
            for container in ("storage-initializer", "kserve-container"):
                try:
                    log = self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace,
                                                            container=container, tail_lines=log_lines)
                except ApiException:
                    continue
                lines += ["", f"### `{pod.metadata.name}` / {container} (last {log_lines} lines)", "",
                          "```", (log or "").rstrip(), "```"]
        lines += ["", "## Warning events", ""]
        try:
            events = self.core.list_namespaced_event(self.namespace).items
        except ApiException:
            events = []
        warnings = [e for e in events
                    if e.type == "Warning" and (e.involved_object.name or "").startswith(name)]
        lines += [f"- {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
                  for e in warnings] or ["- none"]
        return "\n".join(lines) + "\n"


def _condition(status: dict, kind: str) -> str:
    for c in status.get("conditions", []):
        if c.get("type") == kind:
            return c.get("status", "Unknown")
    return "Unknown"


def _summary(status: dict) -> str:
    conditions = ", ".join(
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions", []))
    return f"conditions: {conditions or 'none yet'}"


def _terminal_failure(status: dict) -> str:
    model_status = status.get("modelStatus", {})
    if model_status.get("transitionStatus") in TERMINAL_TRANSITIONS:
        info = model_status.get("lastFailureInfo", {})
        where = f" in {info['location']}" if info.get("location") else ""
        return f"{info.get('reason', model_status['transitionStatus'])}{where}: {info.get('message', '')}"
    return ""


def _deployed(isvc: dict) -> KServeDeployment:
    status = isvc.get("status", {})
    predictor = status.get("components", {}).get("predictor", {})
    url = status.get("url") or status.get("address", {}).get("url", "")
    traffic = predictor.get("traffic", [])
    canary_url = next((t.get("url", "") for t in traffic
                       if t.get("latestRevision") and t.get("tag") and t.get("percent", 100) < 100), "")
    return KServeDeployment(isvc["metadata"]["name"], isvc["metadata"]["namespace"], url,
                    status.get("address", {}).get("url", url),
                    predictor.get("latestReadyRevision", ""), traffic, canary_url=canary_url)


def promote(service: dict, timeout_s: float, api_host: str | None = None) -> KServeDeployment:
    """All traffic to the latest revision of the InferenceService described by ``service`` (a
    KServeInferenceService artifact's metadata), then wait for Ready."""
    return _set_canary(service, None, timeout_s, api_host)


def rollback(service: dict, timeout_s: float, api_host: str | None = None) -> KServeDeployment:
    """0 % to the latest revision, all traffic back to the previous one, then wait for Ready."""
    return _set_canary(service, 0, timeout_s, api_host)


def _set_canary(service: dict, percent: int | None, timeout_s: float,
                api_host: str | None = None) -> KServeDeployment:
    name = service["name"]
    cluster = KServeCluster(api_client(api_host), service["namespace"])
    cluster.patch_predictor(name, {"canaryTrafficPercent": percent})
    result = cluster.wait_ready(name, timeout_s)
    print(f"{'promoted' if percent is None else 'rolled back'} {name}: traffic {result.traffic}")
    return result


def deploy(cluster: KServeCluster, manifest: dict, timeout_s: float = 900.0,
           keep_failed: bool = False, poll_s: float = 2.0) -> KServeDeployment:
    """Preflight, apply, wait for Ready. On failure raise DeployError with diagnostics, and
    delete an InferenceService this call created unless ``keep_failed``."""
    name = manifest["metadata"]["name"]
    cluster.preflight(manifest)
    created = cluster.apply(manifest)
    try:
        result = cluster.wait_ready(name, timeout_s, poll_s)
    except KfpServeError as err:
        try:  # best effort: the API may be what failed
            report = cluster.diagnostics(name)
        except KfpServeError as unavailable:
            report = f"(no diagnostics: {unavailable})\n"
        if created and not keep_failed:
            try:
                cluster.delete(name)
                report += "\nThe InferenceService was created by this deploy and has been deleted" \
                          " (keep_failed=False).\n"
            except KfpServeError as undeleted:
                report += (f"\nThe InferenceService was created by this deploy but could not be"
                           f" deleted ({undeleted}); delete it by hand.\n")
        raise DeployError(err, report) from err
    result.created = created
    return result
