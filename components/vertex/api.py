"""Vertex AI through google-cloud-aiplatform's GAPIC clients (REST): a timeout and retries on
every call, long-running operations waited for (resumably, cancellably), and every Google API
error translated here, at one boundary, into a one-line error saying whose problem it is.

The GAPIC clients (``aiplatform_v1``) are used rather than the high-level ``Model`` /
``Endpoint`` classes: those wait for long-running operations without a timeout, cannot be
cancelled on SIGTERM and hide the operation name that a retried step needs to resume.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kfp_serve.components.credentials import google_credentials_for
from kfp_serve.components.errors import InfrastructureError, KfpServeError, UserError, first_line
from kfp_serve.components.polling import poll

# google.rpc.Code values whose fix lies with the user: INVALID_ARGUMENT, NOT_FOUND,
# ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED (quota), FAILED_PRECONDITION
_USER_CODES = {3: "invalid argument", 5: "not found", 6: "already exists",
               7: "permission denied", 8: "resource exhausted", 9: "failed precondition"}
_HTTP_TO_RPC = {400: 3, 404: 5, 409: 6, 403: 7, 429: 8, 412: 9}
_FIX = {7: "grant the pipeline's service account roles/aiplatform.user, and the Vertex AI Service"
           " Agent (service-PROJECT_NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com)"
           " storage.objectViewer on the artifact bucket",
        9: "the serving container did not start or become ready: read its log in Cloud Logging"
           " (resource.type=\"aiplatform.googleapis.com/Endpoint\")"}


REQUEST_TIMEOUT_S = 60.0  # every Vertex AI call; long work runs as operations, polled


def api_endpoint_for(location: str, api_endpoint: str = "") -> str:
    """The Vertex AI API host: ``api_endpoint``, else the region's."""
    return api_endpoint or f"{location}-aiplatform.googleapis.com"


#: words of Vertex AI's answers that say why a resource was exhausted
_STOCKOUT = re.compile(r"resource pool exhausted|ZONE_RESOURCE_POOL_EXHAUSTED|stockout|(do(es)? not|n't)"
                       r" have enough resources|not enough resources|resources? (is|are) (currently )?"
                       r"(not|un)available|temporarily unavailable", re.IGNORECASE)
_SERVING_QUOTA = re.compile(r"quota", re.IGNORECASE)
_RATE = re.compile(r"per minute|requests per|rate limit|online prediction requests", re.IGNORECASE)


def exhaustion(message: str) -> str:
    """Why Vertex AI answered RESOURCE_EXHAUSTED / 429: ``stockout`` (no capacity of that
    machine in the region now), ``rate`` (a per-minute API request limit) or ``quota`` (the
    project's serving quota for a resource is used up); each has its own fix."""
    if _STOCKOUT.search(message):
        return "stockout"
    if _RATE.search(message) or not _SERVING_QUOTA.search(message):
        return "rate"
    return "quota"


_EXHAUSTED_FIX = {
    "stockout": ("Vertex AI has no capacity for this machine or accelerator in the region right now"
                 " (a stockout, not your quota): retry later, pick another region or machine type,"
                 " draw on a reservation (reservation=any or its name), or try Spot VMs"
                 " (spot=True)"),
    "rate": ("the per-minute request limit held through the retries: run again later or ask for a"
             " higher API quota"),
    "quota": ("the project's serving quota for that resource is used up in this region: request"
              " more (IAM & Admin > Quotas) or use fewer or smaller machines"),
}


def _exhausted(text: str, message: str) -> KfpServeError:
    kind = exhaustion(message)
    error = UserError if kind == "quota" else InfrastructureError
    return error(f"{text}; {_EXHAUSTED_FIX[kind]}")


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
        if err.code == 429 or code == 8:  # already retried where the call allowed it
            return _exhausted(message, detail)
        if code in _USER_CODES:
            fix = _FIX.get(code)
            return UserError(f"{message}{'; ' + fix if fix else ''}")
        return InfrastructureError(message)
    return InfrastructureError(f"{what}: cannot reach Vertex AI ({first_line(err)})")


def operation_error(name: str, code: int, message: str, what: str) -> KfpServeError:
    """A finished operation that carries an error (google.rpc.Status)."""
    text = f"{what} failed: operation {name} ended with {_USER_CODES.get(code, f'code {code}')}: {message}"
    if code == 8:
        return _exhausted(text, message)
    fix = _FIX.get(code)
    if code in _USER_CODES:
        return UserError(f"{text}{'; ' + fix if fix else ''}")
    return InfrastructureError(text)


class VertexClient:
    """One project/location's models and endpoints (REST transport)."""

    def __init__(self, project: str, location: str, api_endpoint: str = "", credentials: Any = None,
                 poll_s: float = 5.0, retry_budget_s: float = 60.0):
        from google.cloud import aiplatform_v1

        self.project, self.location, self.poll_s = project, location, poll_s
        self.on_operation: Callable[[str], None] | None = None  # hears each operation waited for
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
        self._credentials, self._client_options = credentials, options

    def beta_endpoints(self) -> tuple[Any, Any]:
        """The v1beta1 EndpointServiceClient and types, for what only v1beta1 carries (a
        DeployedModel on flex-start VMs); its operations are read through the v1 client."""
        from google.cloud import aiplatform_v1beta1

        client = aiplatform_v1beta1.EndpointServiceClient(
            credentials=self._credentials, transport="rest", client_options=self._client_options)
        return client, aiplatform_v1beta1

    # -- calls through the boundary ------------------------------------------------------
    def options(self, idempotent: bool = True) -> dict[str, Any]:
        """``timeout`` and ``retry`` for a call: retried with backoff while Vertex AI answers 429
        or the connection is refused (no work was done); 503 too where repeating the call
        cannot do the work twice. A call that creates or changes something is not repeated on
        503: the request may have been carried out, and a retried step resumes from its
        operation instead."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as retries

        transient = (gexc.TooManyRequests, ConnectionRefusedError)
        if idempotent:
            transient += (gexc.ServiceUnavailable, ConnectionError)
        return {"timeout": REQUEST_TIMEOUT_S, "retry": retries.Retry(
            predicate=retries.if_exception_type(*transient),
            initial=0.5, maximum=8.0, multiplier=2.0, timeout=self.retry_budget_s)}

    def call(self, what: str, fn, *args, idempotent: bool = True, **kwargs):
        """One API call with a timeout, retried as :meth:`options` says, translated at this
        boundary."""
        from google.api_core import exceptions as gexc
        from google.protobuf.json_format import ParseError

        try:
            return fn(*args, **{**self.options(idempotent), **kwargs})
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

        if self.on_operation is not None:
            self.on_operation(name)

        def check() -> tuple[Any, str]:
            op = self.call(f"reading operation {name}", client.get_operation,
                           operations_pb2.GetOperationRequest(name=name))
            if not op.done:
                return None, f"still running; {_progress(op)}"
            if op.HasField("error"):
                raise operation_error(name, op.error.code, op.error.message, what)
            return op.response, "done"

        def cancel(_: str) -> InfrastructureError:
            self.call(f"cancelling {name}", client.cancel_operation,
                      operations_pb2.CancelOperationRequest(name=name))
            return InfrastructureError(f"{what}: cancelled (SIGTERM); operation {name} was asked"
                                       " to cancel")

        # short operations finish fast, long ones are polled gently
        return poll(check, timeout_s, f"{what}: operation {name} not done", interval_s=min(0.25, self.poll_s),
                    backoff=1.5, max_interval_s=self.poll_s, on_cancel=cancel,
                    detail=lambda: "it goes on in Vertex AI, and a retry resumes it")

    def pending_operations(self, client, resource: str) -> list[str]:
        """Names of the unfinished operations on ``resource`` (an endpoint or a model)."""
        from google.longrunning import operations_pb2

        pending, token = [], ""
        while True:  # every page: an unfinished operation may be on any of them
            listing = self.call(f"listing operations of {resource}", client.list_operations,
                                operations_pb2.ListOperationsRequest(name=resource, page_token=token))
            pending += [op.name for op in listing.operations if not op.done]
            token = listing.next_page_token
            if not token:
                return pending

    def finish_pending(self, client, resource: str, what: str, timeout_s: float) -> list[str]:
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


def _progress(op: Any) -> str:
    from google.protobuf import json_format

    try:
        metadata = json_format.MessageToDict(op.metadata)
    except Exception:  # an unknown metadata type: its type name is still telling
        return op.metadata.type_url or "no metadata"
    generic = metadata.get("genericMetadata", {})
    return f"created {generic.get('createTime', '?')}, updated {generic.get('updateTime', '?')}"


def rest_url(location: str, resource: str, api_endpoint: str = "") -> str:
    """``https://REGION-aiplatform.googleapis.com/v1/<resource>`` (or the emulator's): the REST
    URL of a model version or endpoint, and the base of an endpoint's predict calls."""
    host = api_endpoint_for(location, api_endpoint)
    return f"{host if '://' in host else 'https://' + host}/v1/{resource}"


def gcp_resources(location: str, operations: list[str], api_endpoint: str = "") -> str:
    """The ``gcp_resources`` output Google Cloud Pipeline Components write (their GcpResources
    message as JSON): each long-running operation as a ``VertexLro`` by its REST URL, which
    Vertex AI Pipelines shows on the step and cancels with it."""
    return json.dumps({"resources": [{"resourceType": "VertexLro",
                                      "resourceUri": rest_url(location, name, api_endpoint)}
                                     for name in operations]})


def gcp_resources_writer(path: str, location: str, api_endpoint: str = "") -> Callable[[str], None]:
    """Write ``gcp_resources`` at ``path`` with nothing running (a retried step may run nothing)
    and return the callback that records the operation whose wait begins (``on_operation``)."""
    def record(*operations: str) -> None:
        with open(path, "w") as handle:
            handle.write(gcp_resources(location, list(operations), api_endpoint))

    record()
    return record


def predict_url(location: str, endpoint: str, api_endpoint: str = "", host: str = "") -> str:
    """Where an endpoint's predictions go: a dedicated endpoint refuses the shared regional host
    and takes them only on its own ``dedicatedEndpointDns``, a Private Service Connect one only
    at its forwarding rule's address (``host``)."""
    if not host:
        return rest_url(location, endpoint, api_endpoint)
    scheme = api_endpoint.split("://", 1)[0] if "://" in api_endpoint else "https"
    return f"{scheme}://{host}/v1/{endpoint}"
