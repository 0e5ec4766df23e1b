"""Endpoints: found or created by name, a model version deployed with a traffic share, the
split changed, a deployed model undeployed; a retried step resumes instead of duplicating."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.artifacts import VertexEndpoint, VertexModel
from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.api import VertexClient, predict_url, rest_url
from kfp_serve.components.vertex.spec import VertexDeploySpec, traffic_split


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

    def model_record(self, spec: VertexDeploySpec) -> VertexModel:
        """The google.VertexModel artifact's record."""
        return VertexModel(resource_name=self.version_name, model_version_id=self.model_version_id,
                           artifact_uri=spec.artifact_uri)

    def endpoint_record(self, spec: VertexDeploySpec, api_endpoint: str,
                        tensor_names: dict[str, str]) -> VertexEndpoint:
        """The google.VertexEndpoint artifact's record: what validation, promote and rollback
        read."""
        return VertexEndpoint(
            resource_name=self.endpoint, deployed_model_id=self.deployed_model_id,
            project=spec.project, location=spec.location, model_name=spec.model_name,
            predict_base=predict_url(spec.location, self.endpoint, api_endpoint, self.dedicated_dns),
            api_base=rest_url(spec.location, self.endpoint, api_endpoint), api_endpoint=api_endpoint,
            protocol=self.protocol, traffic=self.traffic, previous_traffic=self.previous_traffic,
            tensor_names=tensor_names)


def endpoint_name(client: VertexClient, endpoint: str) -> str:
    """A resource name for an endpoint id or resource name."""
    return endpoint if endpoint.startswith("projects/") else f"{client.parent}/endpoints/{endpoint}"


def get_endpoint(client: VertexClient, endpoint: str) -> Any:
    return client.call(f"reading endpoint {endpoint}", client.endpoints.get_endpoint,
                       name=endpoint_name(client, endpoint))


def get_or_create_endpoint(client: VertexClient, endpoint: str, labels: dict[str, str],
                           timeout_s: float) -> tuple[Any, bool]:
    """An endpoint by resource name or numeric id (must exist), or by display name (created
    when missing). Returns (endpoint, created)."""
    if endpoint.startswith("projects/") or endpoint.isdigit():
        return get_endpoint(client, endpoint), False
    pager = client.call("listing endpoints", client.endpoints.list_endpoints, request={
        "parent": client.parent, "filter": f'display_name="{endpoint}"'})
    found = list(pager)
    if len(found) > 1:
        raise UserError(f"{len(found)} endpoints are named {endpoint!r}; pass the one to use as"
                        " projects/.../endpoints/ID")
    if found:
        return found[0], False
    body = client.types.Endpoint(display_name=endpoint, labels={**labels, "managed-by": "kfp-serve"})
    started = client.call("creating the endpoint", client.endpoints.create_endpoint,
                          parent=client.parent, endpoint=body)
    response = client.wait(client.endpoints, started.operation.name, "creating the endpoint", timeout_s)
    created = client.types.Endpoint.deserialize(response.value)
    return get_endpoint(client, created.name), True


def deploy_to_endpoint(client: VertexClient, spec: VertexDeploySpec, model: Any, endpoint: Any,
                       timeout_s: float) -> VertexDeployment:
    """Deploy ``model`` (a version) to ``endpoint`` with the asked-for traffic share.

    A retry resumes: an operation still running on the endpoint is waited for, and a
    deployed model of this very version is reused instead of deploying it twice.
    """
    version_name = f"{model.name.split('@')[0]}@{model.version_id}"
    _, protocol = spec.container()
    dedicated = check_endpoint_kind(endpoint)
    reused = client.finish_pending(client.endpoints, endpoint.name,
                                   "an earlier operation on the endpoint", timeout_s)
    if reused:
        endpoint = get_endpoint(client, endpoint.name)
    previous = dict(endpoint.traffic_split)
    mine = deployed_model_of(endpoint, version_name)
    if mine is not None:
        reused.append(f"deployed model {mine}")
        return VertexDeployment(version_name.split("@")[0], model.version_id, endpoint.name, mine,
                                dict(endpoint.traffic_split), previous, protocol, reused, dedicated)
    split = traffic_split(previous, "0", spec.traffic_percentage)
    deployed = client.types.DeployedModel.from_json(json.dumps(spec.deployed_model_body(version_name)))
    started = client.call("deploying the model", client.endpoints.deploy_model,
                          endpoint=endpoint.name, deployed_model=deployed, traffic_split=split)
    response = client.wait(client.endpoints, started.operation.name, "deploying the model", timeout_s)
    deployed_id = client.types.DeployModelResponse.deserialize(response.value).deployed_model.id
    endpoint = get_endpoint(client, endpoint.name)
    return VertexDeployment(version_name.split("@")[0], model.version_id, endpoint.name, deployed_id,
                            dict(endpoint.traffic_split), previous, protocol, reused, dedicated)


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
    """Undeploy one deployed model; the others keep their shares, rescaled to 100."""
    current = get_endpoint(client, endpoint)
    if deployed_model_id not in {m.id for m in current.deployed_models}:
        return False
    rest = {k: v for k, v in current.traffic_split.items() if k != deployed_model_id and v > 0}
    if not rest:
        others = [m.id for m in current.deployed_models if m.id != deployed_model_id]
        rest = {others[0]: 100} if others else {}
    split = rescale(rest)
    started = client.call("undeploying the model", client.endpoints.undeploy_model,
                          endpoint=current.name, deployed_model_id=deployed_model_id,
                          traffic_split=split)
    client.wait(client.endpoints, started.operation.name, "undeploying the model", timeout_s)
    return True


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


def deployed_model_of(endpoint: Any, version_name: str) -> str | None:
    """The id of the deployed model of ``version_name`` on ``endpoint``, or None."""
    model, _, version = version_name.partition("@")
    for deployed in endpoint.deployed_models:
        name, _, deployed_version = deployed.model.partition("@")
        if name == model and (deployed.model_version_id or deployed_version) == version:
            return deployed.id
    return None


def rescale(split: dict[str, int]) -> dict[str, int]:
    """Shares scaled to sum to exactly 100 (largest remainder)."""
    total = sum(split.values())
    if not split or total == 100:
        return dict(split)
    exact = {k: 100 * v / total for k, v in split.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[:100 - sum(out.values())]:
        out[k] += 1
    return out
