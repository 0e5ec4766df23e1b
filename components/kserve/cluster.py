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
from kfp_serve.components.kserve.gke import WORKLOAD_IDENTITY_ANNOTATION
from kfp_serve.components.kserve.manifest import GROUP, PLURAL, VERSION, InferenceServiceSpec
from kfp_serve.components.kserve.readiness import (
    Expectation,
    condition,
    expectation,
    knative_progress,
    mode_of,
    rollout_failure,
    rollout_progress,
    summary,
    tagged_internal_url,
    terminal_failure,
)
from kfp_serve.components.kserve.runtimes import choose, runtime_version_for_onnx

RUNTIME_VERSION = "v1alpha1"
INFRA_WAITING_REASONS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")


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
    url: str  # status.url: the external host on the ingress domain, what clients outside call
    internal_url: str  # status.address.url: cluster-local, what validation inside calls
    latest_ready_revision: str
    mode: str = "Knative"
    traffic: list[dict[str, Any]] = field(default_factory=list)
    created: bool = False
    canary_url: str = ""  # the latest revision's tagged external URL, while traffic is split
    canary_internal_url: str = ""  # ... and its cluster-local URL
    previous_predictor: dict[str, Any] | None = None  # what Standard-mode rollback re-applies
    notes: list[str] = field(default_factory=list)

    @property
    def validation_url(self) -> str:
        """Where validation inside the cluster calls: the canary itself while traffic is split."""
        return self.canary_internal_url or self.internal_url or self.url

    def summary(self, storage_uri: str) -> str:
        """The deployment summary (Markdown) the step's report shows."""
        rollout = ("canary by traffic split (Knative)" if self.mode == "Knative" else
                   "Standard: the new model serves all traffic once rolled out; rollback_kserve"
                   " re-applies the previous one")
        notes = "".join(f"- note: {n}\n" for n in self.notes)
        return (f"# InferenceService `{self.namespace}/{self.name}`: Ready\n\n- mode: {self.mode}"
                f" ({rollout})\n- url: {self.url}\n- internal url: {self.internal_url}\n"
                f"- validated at: {self.validation_url}\n- revision: {self.latest_ready_revision}\n"
                f"- traffic: {json.dumps(self.traffic)}\n- storageUri: {storage_uri}\n{notes}")

    def artifact_metadata(self, spec: InferenceServiceSpec, published: dict[str, Any]) -> dict[str, Any]:
        """The KServeInferenceService artifact's metadata: what validation, promote and rollback
        read (``published`` is the PublishedVersion's metadata: model name, tensor names)."""
        return {"name": self.name, "namespace": self.namespace, "url": self.url,
                "internal_url": self.internal_url, "validation_url": self.validation_url,
                "mode": self.mode, "latest_ready_revision": self.latest_ready_revision,
                "traffic": self.traffic, "canary_url": self.canary_url,
                "canary_internal_url": self.canary_internal_url,
                "previous_predictor": self.previous_predictor, "storage_uri": spec.storage_uri,
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
    if err.status == 403 and "admission webhook" in message:
        # KServe's validating webhook denies with 403 Forbidden (controller-runtime's Denied)
        return UserError(f"{what}: {message}")
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
        self.apps = _Retrying(client.AppsV1Api(api), host, retry_budget_s)
        self.apis = _Retrying(client.ApisApi(api), host, retry_budget_s)
        self.networking = _Retrying(client.NetworkingV1Api(api), host, retry_budget_s)
        self._api = api

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

    def deployment(self, name: str) -> dict | None:
        """The predictor Deployment KServe's Standard mode made (``{name}-predictor``; releases
        before 0.9 named it ``{name}-predictor-default``), or None."""
        from kubernetes.client.exceptions import ApiException

        for deployment in (f"{name}-predictor", f"{name}-predictor-default"):
            try:
                found = self.apps.read_namespaced_deployment(deployment, self.namespace)
            except ApiException as err:
                if err.status == 404:
                    continue
                raise translate(err, f"reading Deployment {deployment!r}") from err
            return self._api.sanitize_for_serialization(found)
        return None

    # -- preflight ----------------------------------------------------------------------
    def preflight(self, manifest: dict) -> tuple[dict | None, list[str]]:
        """Check RBAC, the namespace, Knative (for Knative mode) and a serving runtime before
        creating anything. Returns the runtime KServe would use (None when it cannot be seen)
        and notes on checks that had to be skipped."""
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
        if mode_of(manifest) == "Knative":
            self._check_knative()
        model = manifest["spec"]["predictor"]["model"]
        # KServe's default protocol is v1 (ModelSpec.GetProtocol)
        return self._check_runtime(model["modelFormat"]["name"], model.get("protocolVersion", "v1"),
                                   model.get("runtime"))

    def _check_knative(self) -> None:
        """Without Knative Serving a Knative-mode InferenceService never becomes Ready: say so
        now. API discovery (``/apis``) is readable by every authenticated user."""
        from kubernetes.client.exceptions import ApiException

        try:
            groups = self.apis.get_api_versions().groups or []
        except ApiException as err:
            raise translate(err, "listing API groups") from err
        if not any(g.name == "serving.knative.dev" for g in groups):
            raise UserError("deployment_mode 'Knative' needs Knative Serving, which this cluster"
                            " does not have (no serving.knative.dev API); use deployment_mode"
                            " 'Standard' or install Knative Serving")

    def _runtimes(self) -> tuple[list[dict], list[str]]:
        from kubernetes.client.exceptions import ApiException

        found, notes = [], []
        for call, args, what in ((self.custom.list_namespaced_custom_object,
                                  (GROUP, RUNTIME_VERSION, self.namespace, "servingruntimes"),
                                  f"ServingRuntimes in {self.namespace!r}"),
                                 (self.custom.list_cluster_custom_object,
                                  (GROUP, RUNTIME_VERSION, "clusterservingruntimes"),
                                  "ClusterServingRuntimes")):
            try:
                found += call(*args).get("items", [])
            except ApiException as err:
                if err.status == 403:
                    notes.append(f"cannot list {what} (RBAC; the optional ClusterRole in"
                                 " rbac/kfp-serve-kserve.yaml grants it): the runtime check"
                                 " was skipped for them")
                elif err.status != 404:
                    raise translate(err, "listing serving runtimes") from err
        return found, notes

    def _check_runtime(self, model_format: str, protocol: str,
                       runtime: str | None) -> tuple[dict | None, list[str]]:
        candidates, notes = self._runtimes()
        chosen = choose(candidates, model_format, protocol, runtime)
        if chosen is not None or notes:
            return chosen, notes  # a runtime we may not list may still be the one
        if runtime:
            raise UserError(f"serving runtime {runtime!r} exists neither in namespace"
                            f" {self.namespace!r} nor cluster-wide")
        raise UserError(
            f"no enabled single-model ServingRuntime or ClusterServingRuntime auto-selects model"
            f" format {model_format!r} over protocol {protocol!r}; install one (e.g."
            " kserve-tritonserver), name one with runtime, or change model_format/protocol_version")

    def check_workload_identity(self, service_account: str, google_account: str) -> list[str]:
        """The Kubernetes service account exists and is mapped to ``google_account``
        (``iam.gke.io/gcp-service-account``); notes when it may not be read."""
        from kubernetes.client.exceptions import ApiException

        try:
            account = self.core.read_namespaced_service_account(service_account, self.namespace)
        except ApiException as err:
            if err.status == 403:
                return [f"cannot read service account {service_account!r} (RBAC): its Workload"
                        " Identity mapping was not checked"]
            if err.status == 404:
                raise UserError(f"service account {service_account!r} does not exist in namespace"
                                f" {self.namespace!r}; create it") from err
            raise translate(err, f"reading service account {service_account!r}") from err
        mapped = (account.metadata.annotations or {}).get(WORKLOAD_IDENTITY_ANNOTATION)
        if mapped != google_account:
            raise UserError(
                f"service account {service_account!r} is mapped to"
                f" {mapped or 'no Google service account'} instead of {google_account};"
                " run: kubectl annotate serviceaccount"
                f" {service_account} -n {self.namespace} --overwrite"
                f" {WORKLOAD_IDENTITY_ANNOTATION}={google_account}")
        return []

    # -- writes -------------------------------------------------------------------------
    def apply_network_policy(self, policy: dict) -> None:
        """Create or replace the NetworkPolicy that admits inference traffic."""
        from kubernetes.client.exceptions import ApiException

        name = policy["metadata"]["name"]
        try:
            self.networking.create_namespaced_network_policy(self.namespace, policy)
            return
        except ApiException as err:
            if err.status != 409:
                raise translate(err, f"creating NetworkPolicy {name!r}") from err
        try:
            current = self.networking.read_namespaced_network_policy(name, self.namespace)
            body = dict(policy, metadata={**policy["metadata"],
                                          "resourceVersion": current.metadata.resource_version})
            self.networking.replace_namespaced_network_policy(name, self.namespace, body)
        except ApiException as err:
            raise translate(err, f"replacing NetworkPolicy {name!r}") from err

    def apply(self, manifest: dict, attempts: int = 5) -> dict | None:
        """Create, or replace with the current resourceVersion (retrying conflicts).

        A server-side dry run (``dryRun=All``, strict field validation) goes first, so a bad
        spec is refused before anything changes. Returns the InferenceService as it was before
        (None: this call created it).
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
                    return None
                was, wanted = mode_of(existing), mode_of(manifest)
                if was != wanted:  # KServe's webhook refuses it (validateDeploymentMode)
                    raise UserError(
                        f"InferenceService {name!r} runs in {was} mode and KServe cannot change"
                        f" the mode of an existing one to {wanted}; keep deployment_mode={was!r},"
                        " or delete it (delete_kserve) or use another name")
                body = dict(manifest, metadata={**manifest["metadata"],
                                                "resourceVersion": existing["metadata"]["resourceVersion"]})
                for dry_run in ("All", None):
                    self.custom.replace_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, name, body, dry_run=dry_run,
                        field_validation="Strict")
                return existing
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

    def replace_predictor(self, name: str, predictor: dict) -> None:
        """Set spec.predictor as a whole (a merge patch could not remove fields)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(5):
            current = self.get(name)
            if current is None:
                raise UserError(f"InferenceService {name!r} does not exist")
            current["spec"]["predictor"] = predictor
            current.pop("status", None)
            try:
                self.custom.replace_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, current)
                return
            except ApiException as err:
                if err.status != 409 or attempt == 4:
                    raise translate(err, f"replacing InferenceService {name!r}") from err

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
    def generation(self, name: str) -> int | None:
        """The predictor Deployment's generation (Standard mode), read before an apply."""
        return (self.deployment(name) or {}).get("metadata", {}).get("generation")

    def expect_after(self, before: dict | None, name: str,
                     generation_before: int | None) -> Expectation:
        """What the wait must see after an apply that found ``before`` (and, in Standard mode,
        the predictor Deployment at ``generation_before``)."""
        after = self.get(name)
        if after is None:
            raise InfrastructureError(f"InferenceService {name!r} disappeared after the apply")
        return expectation(before, after, generation_before)

    def wait_ready(self, name: str, timeout_s: float, poll_s: float = 2.0,
                   expect: Expectation | None = None,
                   unschedulable_grace_s: float = 0.0) -> KServeDeployment:
        """Poll until the InferenceService serves what ``expect`` describes (by default: what
        it holds now, nothing new) and is Ready; fail at once on InvalidSpec, ReconcileFailed,
        a failed model load of this apply, an image that cannot be pulled, or a pod still
        unschedulable after ``unschedulable_grace_s`` (a cluster autoscaler may be adding a
        node). SIGTERM (pipeline cancellation) stops the wait with an InfrastructureError.
        """
        deadline = time.monotonic() + timeout_s
        unschedulable_since: float | None = None
        with sigterm_flag() as cancelled:
            while True:
                isvc = self.get(name)
                if isvc is None:
                    raise InfrastructureError(f"InferenceService {name!r} disappeared while waiting")
                status = isvc.get("status", {})
                wait_for = expect or expectation(isvc, isvc)
                if wait_for.mode == "Standard":
                    deployment = self.deployment(name)
                    missing = rollout_progress(deployment, wait_for)
                    # the controller has updated the Deployment for this apply
                    reconciled = deployment is not None and (
                        not wait_for.new_rollout or deployment["metadata"].get("generation")
                        != wait_for.deployment_generation_before)
                    failure = rollout_failure(deployment) if reconciled else ""
                else:
                    missing, reconciled, failure = knative_progress(status, wait_for), True, ""
                ready = condition(status, "Ready").get("status") == "True"
                if ready and not missing:
                    return _deployed(isvc, wait_for)
                failure = failure or terminal_failure(status, wait_for, reconciled)
                if failure:
                    raise UserError(f"InferenceService {name!r} failed: {failure}")
                infra, unschedulable = self._pod_infrastructure_failure(name)
                if unschedulable and unschedulable_since is None:
                    unschedulable_since = time.monotonic()
                elif not unschedulable:
                    unschedulable_since = None
                if infra and (not unschedulable
                              or time.monotonic() - unschedulable_since >= unschedulable_grace_s):
                    raise InfrastructureError(f"InferenceService {name!r} cannot start: {infra}"
                                              + (f" (for {unschedulable_grace_s:.0f}s)"
                                                 if unschedulable and unschedulable_grace_s else ""))
                state = summary(status) + (f"; {missing}" if missing else "")
                if cancelled.is_set():
                    raise InfrastructureError(f"cancelled while waiting for {name!r} ({state})")
                if time.monotonic() >= deadline:
                    raise InfrastructureError(
                        f"InferenceService {name!r} not Ready after {timeout_s:.0f}s: {state}")
                cancelled.wait(poll_s)

    def _pods(self, name: str) -> list:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.list_namespaced_pod(
                self.namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
        except ApiException:
            return []

    def _pod_infrastructure_failure(self, name: str) -> tuple[str, bool]:
        """(why a predictor pod cannot start, whether that is only 'unschedulable')."""
        for pod in self._pods(name):
            for container in [*(pod.status.init_container_statuses or []),
                              *(pod.status.container_statuses or [])]:
                waiting = container.state.waiting if container.state else None
                if waiting and waiting.reason in INFRA_WAITING_REASONS:
                    return f"container {container.name} is {waiting.reason}: {waiting.message}", False
            for pod_condition in pod.status.conditions or []:
                if pod_condition.type == "PodScheduled" and pod_condition.reason == "Unschedulable":
                    return f"pod {pod.metadata.name} is unschedulable: {pod_condition.message}", True
        return "", False

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


def _deployed(isvc: dict, expect: Expectation) -> KServeDeployment:
    status = isvc.get("status", {})
    name = isvc["metadata"]["name"]
    predictor = status.get("components", {}).get("predictor", {})
    internal = status.get("address", {}).get("url", "")
    url = status.get("url") or internal
    traffic = predictor.get("traffic", [])
    canary = next((t for t in traffic
                   if t.get("latestRevision") and t.get("tag") and (t.get("percent") or 0) < 100), {})
    return KServeDeployment(
        name, isvc["metadata"]["namespace"], url, internal,
        predictor.get("latestReadyRevision", "") or f"{name}-predictor", expect.mode, traffic,
        canary_url=canary.get("url", ""),
        canary_internal_url=tagged_internal_url(internal, name, canary["tag"]) if canary else "",
        previous_predictor=expect.previous_predictor)


def promote(service: dict, timeout_s: float, api_host: str | None = None) -> KServeDeployment:
    """All traffic to the latest revision of the InferenceService described by ``service`` (a
    KServeInferenceService artifact's metadata), then wait for it. In Standard mode the new
    model already takes all traffic: nothing changes."""
    name = service["name"]
    cluster = KServeCluster(api_client(api_host), service["namespace"])
    if service.get("mode", "Knative") == "Knative":
        cluster.patch_predictor(name, {"canaryTrafficPercent": None})
        result = cluster.wait_ready(name, timeout_s, expect=Expectation("Knative", False, latest_percent=100))
    else:
        result = cluster.wait_ready(name, timeout_s)
    print(f"promoted {name}: traffic {result.traffic or 'all to ' + result.latest_ready_revision}")
    return result


def rollback(service: dict, timeout_s: float, api_host: str | None = None) -> KServeDeployment:
    """Knative: 0 % to the latest revision, all traffic back to the last rolled-out one.
    Standard: re-apply the predictor from before the deploy (a Deployment rollout back to the
    previous model), then wait for it to complete."""
    name = service["name"]
    cluster = KServeCluster(api_client(api_host), service["namespace"])
    if service.get("mode", "Knative") == "Knative":
        cluster.patch_predictor(name, {"canaryTrafficPercent": 0})
        result = cluster.wait_ready(name, timeout_s, expect=Expectation("Knative", False, latest_percent=0))
    else:
        previous = service.get("previous_predictor")
        if not previous:
            raise UserError(f"nothing to roll back to: InferenceService {name!r} was created by"
                            " the deploy (Standard mode keeps no earlier model); delete it with"
                            " delete_kserve, or deploy a known-good version")
        before, generation = cluster.get(name), cluster.generation(name)
        cluster.replace_predictor(name, previous)
        result = cluster.wait_ready(name, timeout_s,
                                    expect=cluster.expect_after(before, name, generation))
    print(f"rolled back {name}: traffic {result.traffic or 'all to the previous model'}")
    return result


def deploy(cluster: KServeCluster, manifest: dict, timeout_s: float = 900.0,
           keep_failed: bool = False, poll_s: float = 2.0, onnx_ir_version: int | None = None,
           unschedulable_grace_s: float = 0.0, network_policy: dict | None = None,
           workload_identity: tuple[str, str] | None = None) -> KServeDeployment:
    """Preflight, apply, wait until this apply serves. On failure raise DeployError with
    diagnostics, and delete an InferenceService this call created unless ``keep_failed``.

    ``onnx_ir_version``: the IR of the ONNX model the repository holds, if any; when the
    runtime's Triton cannot load it, ``runtimeVersion`` is set to one that can."""
    name = manifest["metadata"]["name"]
    runtime, notes = cluster.preflight(manifest)
    if workload_identity:
        notes += cluster.check_workload_identity(*workload_identity)
    model = manifest["spec"]["predictor"]["model"]
    if runtime is not None and model["modelFormat"]["name"] in ("triton", "onnx"):
        version = runtime_version_for_onnx(runtime, model.get("runtimeVersion"), onnx_ir_version)
        if version:
            model["runtimeVersion"] = version
            notes.append(f"runtime {runtime['metadata']['name']!r} runs an older Triton whose"
                         f" onnxruntime cannot load ONNX IR {onnx_ir_version}: runtimeVersion set"
                         f" to {version}")
    for note in notes:
        print(f"note: {note}")
    if network_policy:  # before the pods exist, so none serves unprotected
        cluster.apply_network_policy(network_policy)
    generation = cluster.generation(name) if mode_of(manifest) == "Standard" else None
    before = cluster.apply(manifest)
    created = before is None
    try:
        expect = cluster.expect_after(before, name, generation)
        result = cluster.wait_ready(name, timeout_s, poll_s, expect, unschedulable_grace_s)
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
    result.notes = notes
    return result
