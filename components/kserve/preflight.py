"""Before anything changes: RBAC, the namespace, Knative Serving, a serving runtime that takes
the model, and the Workload Identity mapping, each checked through the API with a one-line
error that says what to fix."""

from __future__ import annotations

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.api import KServeCluster, translate
from kfp_serve.components.kserve.gke import WORKLOAD_IDENTITY_ANNOTATION
from kfp_serve.components.kserve.manifest import GROUP, PLURAL
from kfp_serve.components.kserve.readiness import mode_of
from kfp_serve.components.kserve.runtimes import choose

#: the API version of ServingRuntime and ClusterServingRuntime
RUNTIME_API_VERSION = "v1alpha1"


def preflight(cluster: KServeCluster, manifest: dict) -> tuple[dict | None, list[str]]:
    """Check RBAC, the namespace, Knative (for Knative mode) and a serving runtime before
    creating anything. Returns the runtime KServe would use (None when it cannot be seen)
    and notes on checks that had to be skipped."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    denied = []
    for verb in ("get", "create", "update", "patch"):
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=PLURAL, verb=verb, namespace=cluster.namespace)))
        try:
            answer = cluster.auth.create_self_subject_access_review(review)
        except ApiException as err:
            raise translate(err, "checking RBAC (SelfSubjectAccessReview)") from err
        if not answer.status.allowed:
            denied.append(verb)
    if denied:
        raise UserError(
            f"RBAC: the service account may not {'/'.join(denied)} inferenceservices in"
            f" namespace {cluster.namespace!r}; apply rbac/kfp-serve-kserve.yaml (Role + RoleBinding)"
        )
    try:
        cluster.core.read_namespace(cluster.namespace)
    except ApiException as err:
        if err.status == 404:
            raise UserError(f"namespace {cluster.namespace!r} does not exist; create it or pick"
                            " another") from err
        if err.status != 403:  # reading namespaces is cluster-scoped; a Role cannot grant it
            raise translate(err, f"reading namespace {cluster.namespace!r}") from err
    if mode_of(manifest) == "Knative":
        _check_knative(cluster)
    model = manifest["spec"]["predictor"]["model"]
    # KServe's default protocol is v1 (ModelSpec.GetProtocol)
    return _check_runtime(cluster, model["modelFormat"]["name"], model.get("protocolVersion", "v1"),
                          model.get("runtime"))


def _check_knative(cluster: KServeCluster) -> None:
    """Without Knative Serving a Knative-mode InferenceService never becomes Ready: say so
    now. API discovery (``/apis``) is readable by every authenticated user."""
    from kubernetes.client.exceptions import ApiException

    try:
        groups = cluster.apis.get_api_versions().groups or []
    except ApiException as err:
        raise translate(err, "listing API groups") from err
    if not any(g.name == "serving.knative.dev" for g in groups):
        raise UserError("deployment_mode 'Knative' needs Knative Serving, which this cluster"
                        " does not have (no serving.knative.dev API); use deployment_mode"
                        " 'Standard' or install Knative Serving")


def _runtimes(cluster: KServeCluster) -> tuple[list[dict], list[str]]:
    from kubernetes.client.exceptions import ApiException

    found, notes = [], []
    for call, args, what in ((cluster.custom.list_namespaced_custom_object,
                              (GROUP, RUNTIME_API_VERSION, cluster.namespace, "servingruntimes"),
                              f"ServingRuntimes in {cluster.namespace!r}"),
                             (cluster.custom.list_cluster_custom_object,
                              (GROUP, RUNTIME_API_VERSION, "clusterservingruntimes"),
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


def _check_runtime(cluster: KServeCluster, model_format: str, protocol: str,
                   runtime: str | None) -> tuple[dict | None, list[str]]:
    candidates, notes = _runtimes(cluster)
    chosen = choose(candidates, model_format, protocol, runtime)
    if chosen is not None or notes:
        return chosen, notes  # a runtime we may not list may still be the one
    if runtime:
        raise UserError(f"serving runtime {runtime!r} exists neither in namespace"
                        f" {cluster.namespace!r} nor cluster-wide")
    raise UserError(
        f"no enabled single-model ServingRuntime or ClusterServingRuntime auto-selects model"
        f" format {model_format!r} over protocol {protocol!r}; install one (e.g."
        " kserve-tritonserver), name one with runtime, or change model_format/protocol_version")


def check_workload_identity(cluster: KServeCluster, service_account: str,
                            google_account: str) -> list[str]:
    """The Kubernetes service account exists and is mapped to ``google_account``
    (``iam.gke.io/gcp-service-account``); notes when it may not be read."""
    from kubernetes.client.exceptions import ApiException

    try:
        account = cluster.core.read_namespaced_service_account(service_account, cluster.namespace)
    except ApiException as err:
        if err.status == 403:
            return [f"cannot read service account {service_account!r} (RBAC): its Workload"
                    " Identity mapping was not checked"]
        if err.status == 404:
            raise UserError(f"service account {service_account!r} does not exist in namespace"
                            f" {cluster.namespace!r}; create it") from err
        raise translate(err, f"reading service account {service_account!r}") from err
    mapped = (account.metadata.annotations or {}).get(WORKLOAD_IDENTITY_ANNOTATION)
    if mapped != google_account:
        raise UserError(
            f"service account {service_account!r} is mapped to"
            f" {mapped or 'no Google service account'} instead of {google_account};"
            " run: kubectl annotate serviceaccount"
            f" {service_account} -n {cluster.namespace} --overwrite"
            f" {WORKLOAD_IDENTITY_ANNOTATION}={google_account}")
    return []
