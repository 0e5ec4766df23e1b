"""Upload, deploy, shift traffic and undeploy on Vertex AI, through google-cloud-aiplatform.

Uses the package's GAPIC clients (``aiplatform_v1``) rather than the high-level ``Model`` /
``Endpoint`` classes: those wait for long-running operations without a timeout, cannot be
cancelled on SIGTERM and hide the operation name that a retried step needs to resume. Every
Google API error is translated here, at one boundary, into a one-line error saying whose
problem it is.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.cancellation import sigterm_flag
from kfp_serve.components.credentials import google_credentials_for
from kfp_serve.components.errors import InfrastructureError, KfpServeError, UserError, first_line
from kfp_serve.components.vertex.spec import LABEL_KEY, VertexDeploySpec, traffic_split

# google.rpc.Code values whose fix lies with the user: INVALID_ARGUMENT, NOT_FOUND,
# ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED (quota), FAILED_PRECONDITION
_USER_CODES = {3: "invalid argument", 5: "not found", 6: "already exists",
               7: "permission denied", 8: "quota exhausted", 9: "failed precondition"}
_HTTP_TO_RPC = {400: 3, 404: 5, 409: 6, 403: 7, 429: 8, 412: 9}
_FIX = {7: "grant the pipeline's service account roles/aiplatform.user, and the Vertex AI Service"
           " Agent (service-PROJECT_NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com)"
           " storage.objectViewer on the artifact bucket",
        8: "request more quota for the region or use a smaller machine/fewer replicas",
        9: "the serving container did not start or become ready: read its log in Cloud Logging"
           " (resource.type=\"aiplatform.googleapis.com/Endpoint\")"}


REQUEST_TIMEOUT_S = 60.0  # every Vertex AI call; long work runs as operations, polled


def api_endpoint_for(location: str, api_endpoint: str = "") -> str:
    return api_endpoint or f"{location}-aiplatform.googleapis.com"


def translate(err: Exception, what: str) -> KfpServeError:
    """A google.api_core error -> UserError or InfrastructureError, one line."""
    from google.api_core import exceptions as gexc

    if isinstance(err, gexc.GoogleAPICallError):
        code = _HTTP_TO_RPC.get(err.code, 0) if isinstance(err.code, int) else 0
        if err.grpc_status_code is not None and hasattr(err.grpc_status_code, "value"):
            code = err.grpc_status_code.value[0]
        # REST errors start with the method and URL: the message after them is what tells
        detail = re.sub(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ", "", first_line(err.message or str(err)))
        message = f"{what}: Vertex AI answered {err.code} {detail}"
        if err.code == 429:  # a per-minute request limit, already retried: not a resource quota
            return InfrastructureError(f"{message}; the per-minute request limit held through the"
                                       " retries: run again later or ask for a higher API quota")
        if code in _USER_CODES:
            fix = _FIX.get(code)
            return UserError(f"{message}{'; ' + fix if fix else ''}")
        return InfrastructureError(message)
    return InfrastructureError(f"{what}: cannot reach Vertex AI ({first_line(err)})")


def operation_error(name: str, code: int, message: str, what: str) -> KfpServeError:
    """A finished operation that carries an error (google.rpc.Status)."""
    text = f"{what} failed: operation {name} ended with {_USER_CODES.get(code, f'code {code}')}: {message}"
    fix = _FIX.get(code)
    if code in _USER_CODES:
        return UserError(f"{text}{'; ' + fix if fix else ''}")
    return InfrastructureError(text)


@dataclass
class VertexDeployment:
    """What deploy_vertex outputs."""

    model: str  # projects/P/locations/L/models/ID
    model_version_id: str
    endpoint: str  # projects/P/locations/L/endpoints/ID
    deployed_model_id: str
    traffic: dict[str, int] = field(default_factory=dict)
    previous_traffic: dict[str, int] = field(default_factory=dict)
    protocol: str = "vertex-raw"
    reused: list[str] = field(default_factory=list)  # what an earlier attempt had already made
    dedicated_dns: str = ""  # a dedicated endpoint's own host: predictions go there only

    @property
    def version_name(self) -> str:
        """``projects/.../models/ID@VERSION``."""
        return f"{self.model}@{self.model_version_id}"

    def summary(self, spec: VertexDeploySpec) -> str:
        """The deployment summary (Markdown) the step's report shows."""
        machine = spec.machine_type + (f" + {spec.accelerator_count} x {spec.accelerator_type}"
                                       if spec.accelerator_type else "")
        lines = ["# Vertex AI deployment\n", f"- model version: `{self.version_name}`",
                 f"- endpoint: `{self.endpoint}`", f"- deployed model id: `{self.deployed_model_id}`",
                 f"- traffic: {self.traffic} (before: {self.previous_traffic or 'none'})",
                 f"- machine: {machine}, replicas {spec.min_replicas}-{spec.max_replicas}",
                 f"- protocol: {self.protocol}"]
        if self.reused:
            lines.append(f"- resumed: reused {', '.join(self.reused)}")
        return "\n".join(lines) + "\n"

    def model_metadata(self, spec: VertexDeploySpec) -> dict[str, Any]:
        """The google.VertexModel artifact's metadata."""
        return {"resourceName": self.version_name, "model_version_id": self.model_version_id,
                "artifact_uri": spec.artifact_uri}

    def endpoint_metadata(self, spec: VertexDeploySpec, api_endpoint: str,
                          tensor_names: dict[str, str]) -> dict[str, Any]:
        """The google.VertexEndpoint artifact's metadata: what validation, promote and rollback
        read."""
        return {"resourceName": self.endpoint, "deployed_model_id": self.deployed_model_id,
                "traffic": self.traffic, "previous_traffic": self.previous_traffic,
                "protocol": self.protocol,
                "predict_base": predict_url(spec.location, self.endpoint, api_endpoint,
                                            self.dedicated_dns),
                "api_base": rest_url(spec.location, self.endpoint, api_endpoint),
                "project": spec.project, "location": spec.location, "api_endpoint": api_endpoint,
                "model_name": spec.model_name, "tensor_names": tensor_names}


class VertexClient:
    """One project/location's models and endpoints (REST transport)."""

    def __init__(self, project: str, location: str, api_endpoint: str = "", credentials: Any = None,
                 poll_s: float = 5.0, retry_budget_s: float = 60.0):
        from google.cloud import aiplatform_v1

        self.project, self.location, self.poll_s = project, location, poll_s
        self.retry_budget_s = retry_budget_s
        self.parent = f"projects/{project}/locations/{location}"
        options = {"api_endpoint": api_endpoint_for(location, api_endpoint)}
        if credentials is None and not google_credentials_for(options["api_endpoint"]):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()  # a loopback emulator takes no token
        try:
            self.models = aiplatform_v1.ModelServiceClient(
                credentials=credentials, transport="rest", client_options=options)
            self.endpoints = aiplatform_v1.EndpointServiceClient(
                credentials=credentials, transport="rest", client_options=options)
        except Exception as err:  # google.auth.exceptions.DefaultCredentialsError and kin
            raise UserError(f"no Google Cloud credentials for Vertex AI ({first_line(err)}); run in"
                            " a pipeline with a service account or `gcloud auth"
                            " application-default login`") from err
        self.types = aiplatform_v1

    # -- calls through the boundary ------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        """``timeout`` and ``retry`` for every call: retried with backoff while Vertex AI answers
        429/503 or the connection is refused (no work was done)."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as retries

        return {"timeout": REQUEST_TIMEOUT_S, "retry": retries.Retry(
            predicate=retries.if_exception_type(gexc.TooManyRequests, gexc.ServiceUnavailable,
                                                ConnectionError),
            initial=0.5, maximum=8.0, multiplier=2.0, timeout=self.retry_budget_s)}

    def _call(self, what: str, fn, *args, **kwargs):
        """One API call with a timeout, retried with backoff while Vertex AI answers 429/503 or
        the connection fails (refused before any work was done), translated at this boundary."""
        from google.api_core import exceptions as gexc
        from google.protobuf.json_format import ParseError

        try:
            return fn(*args, **{**self._options(), **kwargs})
        except (gexc.GoogleAPICallError, OSError) as err:
            raise translate(err, what) from err
        except ParseError as err:  # the REST transport meets a type or field it does not know
            raise InfrastructureError(
                f"{what}: Vertex AI answered with something this google-cloud-aiplatform cannot"
                f" read ({first_line(err)}); upgrade it (constraints.txt pins it)") from err
        except Exception as err:
            if type(err).__module__.startswith(("requests", "urllib3", "google.auth")):
                raise translate(err, what) from err
            raise

    def wait(self, client, name: str, what: str, timeout_s: float) -> Any:
        """Poll operation ``name`` until done; returns its response (``Any``).

        A finished operation with an error raises it; a timeout reports the operation's
        metadata; SIGTERM cancels the operation and stops.
        """
        from google.longrunning import operations_pb2

        deadline = time.monotonic() + timeout_s
        delay = 0.25  # grows to poll_s: short operations finish fast, long ones poll gently
        with sigterm_flag() as cancelled:
            while True:
                op = self._call(f"reading operation {name}", client.get_operation,
                                operations_pb2.GetOperationRequest(name=name))
                if op.done:
                    if op.HasField("error"):
                        raise operation_error(name, op.error.code, op.error.message, what)
                    return op.response
                if cancelled.is_set():
                    self._call(f"cancelling {name}", client.cancel_operation,
                               operations_pb2.CancelOperationRequest(name=name))
                    raise InfrastructureError(f"{what}: cancelled (SIGTERM); operation {name} was"
                                              " asked to cancel")
                if time.monotonic() >= deadline:
                    raise InfrastructureError(
                        f"{what}: operation {name} not done after {timeout_s:.0f}s (still running;"
                        f" {_progress(op)}); it goes on in Vertex AI, and a retry resumes it")
                cancelled.wait(delay)
                delay = min(delay * 1.5, self.poll_s)

    def pending_operations(self, client, resource: str) -> list[str]:
        """Names of the unfinished operations on ``resource`` (an endpoint or a model)."""
        from google.longrunning import operations_pb2

        pending, token = [], ""
        while True:  # every page: an unfinished operation may be on any of them
            listing = self._call(f"listing operations of {resource}", client.list_operations,
                                 operations_pb2.ListOperationsRequest(name=resource, page_token=token))
            pending += [op.name for op in listing.operations if not op.done]
            token = listing.next_page_token
            if not token:
                return pending

    # -- models -------------------------------------------------------------------------
    def get_model(self, name: str) -> Any | None:
        from google.api_core import exceptions as gexc

        try:
            return self.models.get_model(name=name, **self._options())
        except gexc.NotFound:
            return None
        except Exception as err:
            raise translate(err, f"reading model {name}") from err

    def find_version(self, model: str, key: str) -> Any | None:
        pager = self._call(f"listing versions of {model}", self.models.list_model_versions,
                           request={"name": model, "filter": f'labels.{LABEL_KEY}="{key}"'})
        found = sorted(pager, key=lambda m: int(m.version_id or 0))
        return found[-1] if found else None

    def _finish_pending(self, client, resource: str, what: str, timeout_s: float) -> list[str]:
        """Wait for operations an earlier attempt left running on ``resource``."""
        from google.api_core import exceptions as gexc

        try:
            pending = self.pending_operations(client, resource)
        except UserError as err:
            if isinstance(err.__cause__, gexc.NotFound):
                return []
            raise
        for name in pending:
            print(f"waiting for an earlier attempt's operation: {name}")
            self.wait(client, name, what, timeout_s)
        return [f"operation {name}" for name in pending]

    def upload(self, spec: VertexDeploySpec, timeout_s: float) -> tuple[Any, list[str]]:
        """Upload a new version of the model with the spec's display name (its id derives from
        it, so each run adds a version, not a model). A retry resumes: it waits for an upload
        an earlier attempt left running and reuses the version it made.
        Returns (model version, what was reused)."""
        from google.api_core import exceptions as gexc

        name = f"{self.parent}/models/{spec.model_id}"
        reused = self._finish_pending(self.models, name, "an earlier upload", timeout_s)
        body = self.types.Model.from_json(_json(spec.model_body()), ignore_unknown_fields=False)
        for attempt in range(5):
            parent_model = self.get_model(name)
            if parent_model is not None:
                existing = self.find_version(name, spec.key)
                if existing is not None:
                    _check_same_version(existing, body, f"{name}@{existing.version_id}")
                    return existing, [*reused, f"model version {name}@{existing.version_id}"]
            request: dict[str, Any] = {"parent": self.parent, "model": body}
            if parent_model is not None:
                request["parent_model"] = name
            else:
                request["model_id"] = spec.model_id
            try:
                started = self.models.upload_model(request=request, **self._options())
                break
            except gexc.AlreadyExists as err:  # another attempt created the model meanwhile
                if attempt == 4:
                    raise translate(err, "uploading the model") from err
                time.sleep(0.5 * 2 ** attempt)
            except Exception as err:
                raise translate(err, "uploading the model") from err
        response = self.wait(self.models, started.operation.name, "uploading the model", timeout_s)
        uploaded = self.types.UploadModelResponse.deserialize(response.value)
        version = uploaded.model_version_id
        model = self._call("reading the uploaded model", self.models.get_model,
                           name=f"{uploaded.model}@{version}" if version else uploaded.model)
        return model, reused

    # -- endpoints ----------------------------------------------------------------------
    def endpoint_name(self, endpoint: str) -> str:
        return endpoint if endpoint.startswith("projects/") else f"{self.parent}/endpoints/{endpoint}"

    def get_endpoint(self, endpoint: str) -> Any:
        return self._call(f"reading endpoint {endpoint}", self.endpoints.get_endpoint,
                          name=self.endpoint_name(endpoint))

    def get_or_create_endpoint(self, endpoint: str, labels: dict[str, str],
                               timeout_s: float) -> tuple[Any, bool]:
        """An endpoint by resource name or numeric id (must exist), or by display name (created
        when missing). Returns (endpoint, created)."""
        if endpoint.startswith("projects/") or endpoint.isdigit():
            return self.get_endpoint(endpoint), False
        pager = self._call("listing endpoints", self.endpoints.list_endpoints, request={
            "parent": self.parent, "filter": f'display_name="{endpoint}"'})
        found = list(pager)
        if len(found) > 1:
            raise UserError(f"{len(found)} endpoints are named {endpoint!r}; pass the one to use as"
                            " projects/.../endpoints/ID")
        if found:
            return found[0], False
        body = self.types.Endpoint(display_name=endpoint, labels={**labels, "managed-by": "kfp-serve"})
        started = self._call("creating the endpoint", self.endpoints.create_endpoint,
                             parent=self.parent, endpoint=body)
        response = self.wait(self.endpoints, started.operation.name, "creating the endpoint", timeout_s)
        created = self.types.Endpoint.deserialize(response.value)
        return self.get_endpoint(created.name), True

    def deploy(self, spec: VertexDeploySpec, model: Any, endpoint: Any, timeout_s: float) -> VertexDeployment:
        """Deploy ``model`` (a version) to ``endpoint`` with the asked-for traffic share.

        A retry resumes: an operation still running on the endpoint is waited for, and a
        deployed model of this very version is reused instead of deploying it twice.
        """
        version_name = f"{model.name.split('@')[0]}@{model.version_id}"
        _, protocol = spec.container()
        dedicated = check_endpoint_kind(endpoint)
        reused = self._finish_pending(self.endpoints, endpoint.name,
                                      "an earlier operation on the endpoint", timeout_s)
        if reused:
            endpoint = self.get_endpoint(endpoint.name)
        previous = dict(endpoint.traffic_split)
        mine = _deployed_model_of(endpoint, version_name)
        if mine is not None:
            reused.append(f"deployed model {mine}")
            return VertexDeployment(version_name.split("@")[0], model.version_id, endpoint.name, mine,
                                    dict(endpoint.traffic_split), previous, protocol, reused, dedicated)
        split = traffic_split(previous, "0", spec.traffic_percentage)
        deployed = self.types.DeployedModel.from_json(_json(spec.deployed_model_body(version_name)))
        started = self._call("deploying the model", self.endpoints.deploy_model,
                             endpoint=endpoint.name, deployed_model=deployed, traffic_split=split)
        response = self.wait(self.endpoints, started.operation.name, "deploying the model", timeout_s)
        deployed_id = self.types.DeployModelResponse.deserialize(response.value).deployed_model.id
        endpoint = self.get_endpoint(endpoint.name)
        return VertexDeployment(version_name.split("@")[0], model.version_id, endpoint.name, deployed_id,
                                dict(endpoint.traffic_split), previous, protocol, reused, dedicated)

    def set_traffic(self, endpoint: str, split: dict[str, int]) -> dict[str, int]:
        """Replace the endpoint's traffic split (UpdateEndpoint with an update mask)."""
        current = self.get_endpoint(endpoint)
        known = {m.id for m in current.deployed_models}
        unknown = sorted(set(split) - known)
        if unknown:
            raise UserError(f"deployed models {unknown} are not on {current.name} (it has"
                            f" {sorted(known)}); were they undeployed by someone else?")
        current.traffic_split.clear()
        current.traffic_split.update({k: v for k, v in split.items() if v > 0})
        updated = self._call("updating the traffic split", self.endpoints.update_endpoint,
                             endpoint=current, update_mask={"paths": ["traffic_split"]})
        return dict(updated.traffic_split)

    def undeploy(self, endpoint: str, deployed_model_id: str, timeout_s: float) -> bool:
        """Undeploy one deployed model; the others keep their shares, rescaled to 100."""
        current = self.get_endpoint(endpoint)
        if deployed_model_id not in {m.id for m in current.deployed_models}:
            return False
        rest = {k: v for k, v in current.traffic_split.items() if k != deployed_model_id and v > 0}
        if not rest:
            others = [m.id for m in current.deployed_models if m.id != deployed_model_id]
            rest = {others[0]: 100} if others else {}
        split = _rescale(rest)
        started = self._call("undeploying the model", self.endpoints.undeploy_model,
                             endpoint=current.name, deployed_model_id=deployed_model_id,
                             traffic_split=split)
        self.wait(self.endpoints, started.operation.name, "undeploying the model", timeout_s)
        return True


def _check_same_version(found: Any, wanted: Any, name: str) -> None:
    """A version found by this run's label must hold this run's artifact and image: Vertex AI
    merges model-level labels into every version, so a label alone can match another one."""
    differs = [what for what, a, b in (
        ("artifact", found.artifact_uri, wanted.artifact_uri),
        ("serving image", found.container_spec.image_uri, wanted.container_spec.image_uri)) if a != b]
    if differs:
        raise UserError(f"model version {name} carries this deploy's label but another"
                        f" {' and '.join(differs)} ({found.artifact_uri},"
                        f" {found.container_spec.image_uri}); remove the label"
                        f" {LABEL_KEY} from the model or its other versions, or use another"
                        " model display name")


def _deployed_model_of(endpoint: Any, version_name: str) -> str | None:
    model, _, version = version_name.partition("@")
    for deployed in endpoint.deployed_models:
        name, _, deployed_version = deployed.model.partition("@")
        if name == model and (deployed.model_version_id or deployed_version) == version:
            return deployed.id
    return None


def _rescale(split: dict[str, int]) -> dict[str, int]:
    """Shares scaled to sum to exactly 100 (largest remainder)."""
    total = sum(split.values())
    if not split or total == 100:
        return dict(split)
    exact = {k: 100 * v / total for k, v in split.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[:100 - sum(out.values())]:
        out[k] += 1
    return out


def _progress(op: Any) -> str:
    from google.protobuf import json_format

    try:
        metadata = json_format.MessageToDict(op.metadata)
    except Exception:  # an unknown metadata type: its type name is still telling
        return op.metadata.type_url or "no metadata"
    generic = metadata.get("genericMetadata", {})
    return f"created {generic.get('createTime', '?')}, updated {generic.get('updateTime', '?')}"


def _json(body: dict) -> str:
    import json

    return json.dumps(body)


def rest_url(location: str, resource: str, api_endpoint: str = "") -> str:
    """``https://REGION-aiplatform.googleapis.com/v1/<resource>`` (or the emulator's): the REST
    URL of a model version or endpoint, and the base of an endpoint's predict calls."""
    host = api_endpoint_for(location, api_endpoint)
    return f"{host if '://' in host else 'https://' + host}/v1/{resource}"


def predict_url(location: str, endpoint: str, api_endpoint: str = "", dedicated_dns: str = "") -> str:
    """Where an endpoint's predictions go: a dedicated endpoint refuses the shared regional host
    and takes them only on its own ``dedicatedEndpointDns``."""
    if not dedicated_dns:
        return rest_url(location, endpoint, api_endpoint)
    scheme = api_endpoint.split("://", 1)[0] if "://" in api_endpoint else "https"
    return f"{scheme}://{dedicated_dns}/v1/{endpoint}"


def check_endpoint_kind(endpoint: Any) -> str:
    """The dedicated DNS of ``endpoint`` ('' for a shared public one); a private endpoint over
    VPC peering (``network`` set) is refused: Vertex AI cannot split its traffic, and only
    that VPC can call it."""
    if endpoint.network:
        raise UserError(f"endpoint {endpoint.name} is a private endpoint on {endpoint.network}"
                        " (VPC peering): Vertex AI does not split traffic there and only that"
                        " network can call it; use a public (shared or dedicated) or Private"
                        " Service Connect endpoint")
    return endpoint.dedicated_endpoint_dns if endpoint.dedicated_endpoint_enabled else ""


def deploy(spec: VertexDeploySpec, api_endpoint: str = "", timeout_s: float = 1800.0,
           poll_s: float = 5.0) -> VertexDeployment:
    """Check the spec, upload (or reuse) the model version, get or create the endpoint, deploy
    with the asked-for traffic share."""
    spec.check()
    client = VertexClient(spec.project, spec.location, api_endpoint, poll_s=poll_s)
    model, reused = client.upload(spec, timeout_s)
    endpoint, _ = client.get_or_create_endpoint(spec.endpoint or spec.display_name, spec.labels,
                                                timeout_s)
    result = client.deploy(spec, model, endpoint, timeout_s)
    result.reused[:0] = reused
    return result


def promote(project: str, location: str, endpoint: str, deployed_model_id: str,
            undeploy_previous: bool, api_endpoint: str = "", timeout_s: float = 1800.0,
            poll_s: float = 5.0) -> dict[str, int]:
    """All traffic to ``deployed_model_id``; the models it replaces are undeployed if asked."""
    client = VertexClient(project, location, api_endpoint, poll_s=poll_s)
    split = client.set_traffic(endpoint, {deployed_model_id: 100})
    promoted = next((m for m in client.get_endpoint(endpoint).deployed_models
                     if m.id == deployed_model_id), None)
    if promoted is not None:  # Vertex AI never moves "default" by itself: the first version
        # would stay what the model name without a version means
        version = f"{promoted.model.split('@')[0]}@{promoted.model_version_id}"
        client._call(f"making {version} the default version", client.models.merge_version_aliases,
                     name=version, version_aliases=["default"])
        print(f"{version} is now the model's default version")
    if undeploy_previous:
        for other in [m.id for m in client.get_endpoint(endpoint).deployed_models]:
            if other != deployed_model_id:
                client.undeploy(endpoint, other, timeout_s)
                print(f"undeployed the previous deployed model {other}")
    return split


def promote_deployed(endpoint: dict[str, Any], undeploy_previous: bool,
                     timeout_s: float = 1800.0) -> str:
    """:func:`promote` the deployed model a VertexEndpoint artifact's metadata names; the
    traffic split after the change, as JSON."""
    split = promote(endpoint["project"], endpoint["location"], endpoint["resourceName"],
                    endpoint["deployed_model_id"], undeploy_previous,
                    endpoint.get("api_endpoint", ""), timeout_s)
    print(f"promoted deployed model {endpoint['deployed_model_id']}: traffic {split}")
    return _json(split)


def rollback_deployed(endpoint: dict[str, Any], undeploy_canary: bool,
                      timeout_s: float = 1800.0) -> str:
    """:func:`rollback` the deployed model a VertexEndpoint artifact's metadata names; the
    traffic split after the change, as JSON."""
    split = rollback(endpoint["project"], endpoint["location"], endpoint["resourceName"],
                     endpoint["deployed_model_id"], endpoint.get("previous_traffic", {}),
                     undeploy_canary, endpoint.get("api_endpoint", ""), timeout_s)
    print(f"rolled back deployed model {endpoint['deployed_model_id']}: traffic {split}")
    return _json(split)


def rollback(project: str, location: str, endpoint: str, deployed_model_id: str,
             previous_traffic: dict[str, int], undeploy_canary: bool, api_endpoint: str = "",
             timeout_s: float = 1800.0, poll_s: float = 5.0) -> dict[str, int]:
    """Give the traffic back to the models that served before the deploy; undeploy the canary
    if asked. With nothing serving before, the canary keeps the endpoint (nothing to roll
    back to) unless it is undeployed."""
    client = VertexClient(project, location, api_endpoint, poll_s=poll_s)
    current = client.get_endpoint(endpoint)
    live = {m.id for m in current.deployed_models}
    before = _rescale({k: int(v) for k, v in previous_traffic.items() if k in live and int(v) > 0})
    if before:
        split = client.set_traffic(endpoint, before)
    else:
        split = dict(current.traffic_split)
        print("nothing served before this deploy: no traffic to give back")
    if undeploy_canary:
        client.undeploy(endpoint, deployed_model_id, timeout_s)
        split = dict(client.get_endpoint(endpoint).traffic_split)
    return split
