"""The Kubernetes API for one namespace's InferenceServices: the official ``kubernetes`` client
with a timeout on every call and retries on transient failures, and every API error translated
here, at one boundary, into a one-line error that says whose problem it is."""

from __future__ import annotations

import json
import time
from typing import Any

from kfp_serve.components.errors import InfrastructureError, KfpServeError, UserError, first_line
from kfp_serve.components.kserve.canary import service_name
from kfp_serve.components.kserve.manifest import GROUP, PLURAL, VERSION
from kfp_serve.components.kserve.readiness import mode_of


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


class Retrying:
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
        self.custom = Retrying(client.CustomObjectsApi(api), host, retry_budget_s)
        self.core = Retrying(client.CoreV1Api(api), host, retry_budget_s)
        self.auth = Retrying(client.AuthorizationV1Api(api), host, retry_budget_s)
        self.apps = Retrying(client.AppsV1Api(api), host, retry_budget_s)
        self.apis = Retrying(client.ApisApi(api), host, retry_budget_s)
        self.networking = Retrying(client.NetworkingV1Api(api), host, retry_budget_s)
        self._api = api

    def get(self, name: str) -> dict | None:
        """The InferenceService as a dict, or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                            PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise translate(err, f"reading InferenceService {name!r}") from err

    def deployment(self, name: str, predictor_name: str | None = None) -> dict | None:
        """The predictor Deployment KServe's Standard mode made (``{name}-predictor``, or
        ``{name}-{predictor_name}-predictor`` for a named predictor or a canary; releases before
        0.9 named it ``{name}-predictor-default``), or None."""
        from kubernetes.client.exceptions import ApiException

        candidates = ([service_name(name, predictor_name)] if predictor_name
                      else [f"{name}-predictor", f"{name}-predictor-default"])
        for deployment in candidates:
            try:
                found = self.apps.read_namespaced_deployment(deployment, self.namespace)
            except ApiException as err:
                if err.status == 404:
                    continue
                raise translate(err, f"reading Deployment {deployment!r}") from err
            return self._api.sanitize_for_serialization(found)
        return None

    def generation(self, name: str, predictor_name: str | None = None) -> int | None:
        """The predictor Deployment's generation (Standard mode), read before an apply."""
        return (self.deployment(name, predictor_name) or {}).get("metadata", {}).get("generation")

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

    def apply_object(self, obj: dict, plural: str = "") -> None:
        """Create or replace a Service, or a custom object of ``plural`` (its apiVersion's
        group), in this namespace."""
        from kubernetes.client.exceptions import ApiException

        name, kind = obj["metadata"]["name"], obj["kind"]
        try:
            self._object_call("create", obj, plural)
            return
        except ApiException as err:
            if err.status != 409:
                raise translate(err, f"creating {kind} {name!r}") from err
        try:
            current = self._object_call("read", obj, plural)
            body = dict(obj, metadata={**obj["metadata"],
                                       "resourceVersion": current["metadata"]["resourceVersion"]})
            if kind == "Service":  # a Service's clusterIP is immutable: keep the one it has
                body["spec"] = {**obj["spec"], "clusterIP": current["spec"].get("clusterIP")}
            self._object_call("replace", body, plural)
        except ApiException as err:
            raise translate(err, f"replacing {kind} {name!r}") from err

    def _object_call(self, verb: str, obj: dict, plural: str) -> Any:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Service":
            if verb == "create":
                return self.core.create_namespaced_service(self.namespace, obj)
            if verb == "read":
                answer = self.core.read_namespaced_service(name, self.namespace, _preload_content=False)
                return json.loads(answer.data)
            return self.core.replace_namespaced_service(name, self.namespace, obj)
        group, version = obj["apiVersion"].split("/")
        where = (group, version, self.namespace, plural)
        if verb == "create":
            return self.custom.create_namespaced_custom_object(*where, obj)
        if verb == "read":
            return self.custom.get_namespaced_custom_object(*where, name)
        return self.custom.replace_namespaced_custom_object(*where, name, obj)

    def has_api_group(self, group: str) -> bool:
        """Whether API discovery lists ``group`` (readable by every authenticated user)."""
        from kubernetes.client.exceptions import ApiException

        try:
            groups = self.apis.get_api_versions().groups or []
        except ApiException as err:
            raise translate(err, "listing API groups") from err
        return any(g.name == group for g in groups)

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
        self.replace_spec(name, predictor=predictor)

    def replace_spec(self, name: str, **fields: Any) -> None:
        """Set these fields of spec as a whole, in one update (None removes one)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(5):
            current = self.get(name)
            if current is None:
                raise UserError(f"InferenceService {name!r} does not exist")
            for key, value in fields.items():
                current["spec"].pop(key, None)
                if value is not None:
                    current["spec"][key] = value
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

    def pods(self, name: str) -> list:
        """The predictor pods of InferenceService ``name`` ([] when they cannot be listed)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.list_namespaced_pod(
                self.namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
        except ApiException:
            return []
