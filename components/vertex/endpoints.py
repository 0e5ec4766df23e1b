"""Endpoints: found or created by name, a model version deployed with a traffic share, the
split changed, a deployed model undeployed; a retried step resumes instead of duplicating.

Every deploy makes its own deployed model, named with a marker of the step that made it and the
split it found (:func:`.traffic.deployed_name`): a retry finds exactly what its earlier attempt
made, and a version that already serves is deployed again as a canary beside itself instead of
being mistaken for this step's work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components import artifacts
from kfp_serve.components.artifacts import VertexEndpoint, VertexModel
from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.api import VertexClient, predict_url, rest_url, translate
from kfp_serve.components.vertex.spec import VertexDeploySpec, idempotency_key
from kfp_serve.components.vertex.traffic import deployed_name, read_deployed_name, rescale, with_new


@dataclass
class VertexDeployment:
    """What deploy_vertex outputs."""

    model: str  # projects/P/locations/L/models/ID (Vertex AI names it by project number)
    model_version_id: str
    endpoint: str  # projects/P/locations/L/endpoints/ID
    deployed_model_id: str
    traffic: dict[str, int] = field(default_factory=dict)
    previous_traffic: dict[str, int] = field(default_factory=dict)
    protocol: str = "vertex-raw"
    reused: list[str] = field(default_factory=list)  # what an earlier attempt had already made
    dedicated_dns: str = ""  # a dedicated endpoint's own host: predictions go there only
    psc_address: str = ""  # a Private Service Connect endpoint's address in the user's network
    model_name: str = ""  # the served model's name, where the registry said it (not the spec)
    artifact_uri: str = ""  # where a registry version's files are (not the spec)
    grpc: bool = False  # the container takes gRPC (grpcPorts): DirectRawPredict reaches it

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
                 f"- protocol: {self.protocol}" + (" (and Triton's gRPC through DirectRawPredict)"
                                                   if self.grpc else "")]
        if spec.flex_start_s:
            lines.append(f"- flex-start VMs: Vertex AI undeploys this deployed model"
                         f" {spec.flex_start_s} s after the deploy (it cannot be promoted)")
        if self.reused:
            lines.append(f"- resumed: reused {', '.join(self.reused)}")
        return "\n".join(lines) + "\n"

    def model_record(self, spec: VertexDeploySpec) -> VertexModel:
        """The google.VertexModel artifact's record."""
        return VertexModel(resource_name=self.version_name, model_version_id=self.model_version_id,
                           artifact_uri=self.artifact_uri or spec.artifact_uri)

    def endpoint_record(self, spec: VertexDeploySpec, api_endpoint: str,
                        tensor_names: dict[str, str]) -> VertexEndpoint:
        """The google.VertexEndpoint artifact's record: what validation, promote and rollback
        read."""
        return VertexEndpoint(
            resource_name=self.endpoint, deployed_model_id=self.deployed_model_id,
            project=spec.project, location=spec.location, model_name=self.model_name or spec.model_name,
            predict_base=predict_url(spec.location, self.endpoint, api_endpoint,
                                     self.psc_address or self.dedicated_dns),
            api_base=rest_url(spec.location, self.endpoint, api_endpoint), api_endpoint=api_endpoint,
            protocol=self.protocol, traffic=self.traffic, previous_traffic=self.previous_traffic,
            tensor_names=tensor_names, model=self.model, flex_start_s=spec.flex_start_s,
            grpc=self.grpc)

    def write_outputs(self, spec: VertexDeploySpec, endpoint: VertexEndpoint, summary: str,
                      api_endpoint: str, vertex_model: Any, vertex_endpoint: Any,
                      report_path: str) -> None:
        """deploy_vertex's and deploy_vertex_llm's outputs: the google.VertexModel and
        google.VertexEndpoint artifacts (REST URL and record) and the summary (printed too)."""
        vertex_model.uri = rest_url(spec.location, self.version_name, api_endpoint)
        artifacts.mark(vertex_model, self.model_record(spec))
        vertex_endpoint.uri = rest_url(spec.location, self.endpoint, api_endpoint)
        artifacts.mark(vertex_endpoint, endpoint)
        with open(report_path, "w") as handle:
            handle.write(summary)
        print(summary)


def endpoint_name(client: VertexClient, endpoint: str) -> str:
    """A resource name for an endpoint id or resource name."""
    return endpoint if endpoint.startswith("projects/") else f"{client.parent}/endpoints/{endpoint}"


def get_endpoint(client: VertexClient, endpoint: str) -> Any:
    return client.call(f"reading endpoint {endpoint}", client.endpoints.get_endpoint,
                       name=endpoint_name(client, endpoint))


def endpoint_id(display_name: str) -> str:
    """The id a created endpoint gets, derived from its display name: two runs creating the
    same endpoint at once make one (the second is told it exists) instead of two."""
    slug = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")[:40] or "endpoint"
    return f"{'e-' if not slug[0].isalpha() else ''}{slug}-{idempotency_key(display_name)[:8]}"


def get_or_create_endpoint(client: VertexClient, endpoint: str, labels: dict[str, str],
                           timeout_s: float, settings: dict | None = None) -> tuple[Any, bool]:
    """An endpoint by resource name or numeric id (must exist), or by display name (created
    when missing, under an id derived from the name, with ``settings``: REST fields of
    ``Endpoint``). An existing endpoint takes the settings that can change (the inference
    timeout, request-response logging); one of another kind (dedicated or shared) is refused.
    Returns (endpoint, created)."""
    from google.api_core import exceptions as gexc

    settings = settings or {}
    if endpoint.startswith("projects/") or endpoint.isdigit():
        return _with_settings(client, get_endpoint(client, endpoint), settings), False
    pager = client.call("listing endpoints", client.endpoints.list_endpoints, request={
        "parent": client.parent, "filter": f'display_name="{endpoint}"'})
    found = list(pager)
    if len(found) > 1:
        raise UserError(f"{len(found)} endpoints are named {endpoint!r}; pass the one to use as"
                        " projects/.../endpoints/ID")
    if found:
        return _with_settings(client, found[0], settings), False
    body = client.types.Endpoint.from_json(json.dumps(
        {**settings, "displayName": endpoint, "labels": {**labels, "managed-by": "kfp-serve"}}))
    wanted = endpoint_id(endpoint)
    try:
        started = client.endpoints.create_endpoint(
            parent=client.parent, endpoint=body, endpoint_id=wanted, **client.options(idempotent=False))
    except gexc.AlreadyExists:  # another run created it meanwhile: use that one
        return get_endpoint(client, wanted), False
    except Exception as err:
        raise translate(err, "creating the endpoint") from err
    response = client.wait(client.endpoints, started.operation.name, "creating the endpoint", timeout_s)
    created = client.types.Endpoint.deserialize(response.value)
    return get_endpoint(client, created.name), True


def _with_settings(client: VertexClient, endpoint: Any, settings: dict) -> Any:
    """``endpoint`` with the settings asked for: the kind is fixed at creation (refused when it
    differs), the inference timeout and logging are updated in place where they differ."""
    if settings.get("dedicatedEndpointEnabled") and not endpoint.dedicated_endpoint_enabled:
        raise UserError(f"endpoint {endpoint.name} is a shared endpoint and this deploy needs a"
                        " dedicated one (dedicated_endpoint=True, or an LLM's invoke routes); an"
                        " endpoint's kind is set when it is made: name a new endpoint (or drop"
                        " dedicated_endpoint where the model may serve on a shared one)")
    current = json.loads(client.types.Endpoint.to_json(endpoint))
    changed = {k: v for k, v in settings.items()
               if k != "dedicatedEndpointEnabled" and current.get(k) != v}
    if not changed:
        return endpoint
    body = client.types.Endpoint.from_json(json.dumps({**changed, "name": endpoint.name}))
    mask = {"paths": [re.sub(r"[A-Z]", lambda c: "_" + c.group().lower(), k) for k in changed]}
    return client.call("updating the endpoint's settings", client.endpoints.update_endpoint,
                       endpoint=body, update_mask=mask, **client.options(idempotent=True))


def find_deployment(endpoint: Any, marker: str) -> tuple[Any, dict[str, int] | None] | None:
    """The deployed model this deploy (``marker``) made, and the split it recorded; None."""
    for deployed in endpoint.deployed_models:
        found = read_deployed_name(deployed.display_name)
        if found is not None and found[0] == marker:
            return deployed, found[1]
    return None


def deploy_to_endpoint(client: VertexClient, spec: VertexDeploySpec, model: Any, endpoint: Any,
                       timeout_s: float, deploy_id: str, protocol: str = "") -> VertexDeployment:
    """Deploy ``model`` (a version) to ``endpoint`` with the asked-for traffic share, as a new
    deployed model of its own, and say what the split was before.

    ``deploy_id`` names this deploy step (stable across its retries): a retry resumes, waiting
    for an operation still running on the endpoint and taking the deployed model its earlier
    attempt made, with the split that attempt found.
    """
    version_name = f"{model.name.split('@')[0]}@{model.version_id}"
    protocol = protocol or spec.container()[1]
    check_endpoint_kind(endpoint, spec.psc_address)
    marker = idempotency_key(deploy_id, endpoint.name)[:12]
    reused = client.finish_pending(client.endpoints, endpoint.name,
                                   "an earlier operation on the endpoint", timeout_s)
    endpoint = get_endpoint(client, endpoint.name)
    found = find_deployment(endpoint, marker)
    if found is not None:
        deployed, recorded = found
        reused.append(f"deployed model {deployed.id}")
        current = dict(endpoint.traffic_split)
        previous = recorded if recorded is not None else rescale(
            {k: v for k, v in current.items() if k != deployed.id})
        deployed_id = deployed.id
    else:
        previous = dict(endpoint.traffic_split)
        if spec.flex_start_s and spec.traffic_percentage == 100 and any(previous.values()):
            raise UserError(f"a flex-start deployed model with 100 % of {endpoint.name}'s traffic:"
                            " the models serving now would keep no share, so when Vertex AI"
                            " undeploys it the endpoint would serve nothing; give it less than"
                            " 100 % (a canary) or deploy on on-demand capacity")
        split = with_new(previous, "0", spec.traffic_percentage)
        body = spec.deployed_model_body(version_name)
        body["displayName"] = deployed_name(spec.display_name, marker, previous)
        service, types = client.beta_endpoints() if spec.flex_start_s else (client.endpoints, client.types)
        started = client.call("deploying the model", service.deploy_model,
                              endpoint=endpoint.name, traffic_split=split, idempotent=False,
                              deployed_model=types.DeployedModel.from_json(json.dumps(body)))
        # read in the API version that made it (v1 has no field for what v1beta1 set)
        response = client.wait(service, started.operation.name, "deploying the model", timeout_s)
        deployed_id = types.DeployModelResponse.deserialize(response.value).deployed_model.id
    endpoint = dedicated_ready(client, endpoint.name, timeout_s)
    return VertexDeployment(version_name.split("@")[0], model.version_id, endpoint.name, deployed_id,
                            dict(endpoint.traffic_split), previous, protocol, reused,
                            check_endpoint_kind(endpoint, spec.psc_address), psc_address=spec.psc_address,
                            grpc=bool(model.container_spec.grpc_ports))


def dedicated_ready(client: VertexClient, endpoint: str, timeout_s: float) -> Any:
    """The endpoint, read again; a dedicated one once its DNS name is assigned (a new dedicated
    endpoint reports it empty for a while, and its predictions go nowhere else)."""
    from kfp_serve.components.polling import poll

    def check() -> tuple[Any, str]:
        current = get_endpoint(client, endpoint)
        if current.dedicated_endpoint_enabled and not current.dedicated_endpoint_dns:
            return None, "dedicated endpoint without a DNS name yet"
        return current, "ready"

    return poll(check, timeout_s, f"endpoint {endpoint}: no dedicatedEndpointDns", interval_s=1.0,
                backoff=1.5, max_interval_s=10.0)


def set_traffic(client: VertexClient, endpoint: str, split: dict[str, int]) -> dict[str, int]:
    """Replace the endpoint's traffic split (UpdateEndpoint with an update mask)."""
    current = get_endpoint(client, endpoint)
    known = {m.id for m in current.deployed_models}
    unknown = sorted(set(split) - known)
    if unknown:
        raise UserError(f"deployed models {unknown} are not on {current.name} (it has"
                        f" {sorted(known)}); were they undeployed by someone else?")
    current.traffic_split.clear()
    current.traffic_split.update({k: v for k, v in split.items() if v > 0})
    updated = client.call("updating the traffic split", client.endpoints.update_endpoint,
                          endpoint=current, update_mask={"paths": ["traffic_split"]})
    return dict(updated.traffic_split)


def undeploy(client: VertexClient, endpoint: str, deployed_model_id: str, timeout_s: float) -> bool:
    """Undeploy one deployed model. Vertex AI undeploys a model only when it has no traffic or
    the request's split takes its traffic away (UndeployModelRequest.traffic_split): the split
    sent is the others' shares rescaled to 100 (empty when it is the last one). A model whose
    traffic no other model could take is refused here, in one line."""
    current = get_endpoint(client, endpoint)
    if deployed_model_id not in {m.id for m in current.deployed_models}:
        return False
    share = current.traffic_split.get(deployed_model_id, 0)
    rest = {k: v for k, v in current.traffic_split.items() if k != deployed_model_id and v > 0}
    others = [m.id for m in current.deployed_models if m.id != deployed_model_id]
    if share and others and not rest:
        raise UserError(f"deployed model {deployed_model_id} takes all of {current.name}'s traffic"
                        f" and the others ({others}) take none: give them traffic first (a"
                        " rollback or promote does), or undeploy them before it")
    started = client.call("undeploying the model", client.endpoints.undeploy_model,
                          endpoint=current.name, deployed_model_id=deployed_model_id,
                          traffic_split=rescale(rest) if share else {}, idempotent=False)
    client.wait(client.endpoints, started.operation.name, "undeploying the model", timeout_s)
    return True


def check_endpoint_kind(endpoint: Any, psc_address: str = "") -> str:
    """The dedicated DNS of ``endpoint`` ('' for a shared public one or a Private Service
    Connect one). A private endpoint over VPC peering (``network`` set) is refused: Vertex AI
    cannot split its traffic, and only that VPC can call it. A Private Service Connect endpoint
    takes predictions only through its forwarding rule in the user's network: it needs
    ``psc_address``, which a public endpoint refuses."""
    if endpoint.network:
        raise UserError(f"endpoint {endpoint.name} is a private endpoint on {endpoint.network}"
                        " (VPC peering): Vertex AI does not split traffic there and only that"
                        " network can call it; use a public (shared or dedicated) or Private"
                        " Service Connect endpoint")
    psc = endpoint.private_service_connect_config.enable_private_service_connect
    if psc and not psc_address:
        raise UserError(f"endpoint {endpoint.name} is a Private Service Connect endpoint:"
                        " predictions reach it only through its forwarding rule in your network;"
                        " give psc_address (that rule's IP or DNS name) and run the pipeline where"
                        " the network reaches it")
    if psc_address and not psc:
        raise UserError(f"psc_address is for Private Service Connect endpoints, and"
                        f" {endpoint.name} is a public one; drop psc_address")
    return endpoint.dedicated_endpoint_dns if endpoint.dedicated_endpoint_enabled else ""


def model_of(deployed: Any) -> str:
    """The model (without its version) a deployed model serves."""
    return deployed.model.split("@")[0]
