"""Deploy a published version to an endpoint with a traffic share, then promote it or roll it
back: the steps deploy_vertex, promote_vertex and rollback_vertex run."""

from __future__ import annotations

import json

from kfp_serve.components.artifacts import VertexEndpoint
from kfp_serve.components.vertex.api import VertexClient
from kfp_serve.components.vertex.endpoints import (
    VertexDeployment,
    deploy_to_endpoint,
    get_endpoint,
    get_or_create_endpoint,
    rescale,
    set_traffic,
    undeploy,
)
from kfp_serve.components.vertex.models import upload
from kfp_serve.components.vertex.spec import VertexDeploySpec


def deploy(spec: VertexDeploySpec, api_endpoint: str = "", timeout_s: float = 1800.0,
           poll_s: float = 5.0) -> VertexDeployment:
    """Check the spec, upload (or reuse) the model version, get or create the endpoint, deploy
    with the asked-for traffic share."""
    spec.check()
    client = VertexClient(spec.project, spec.location, api_endpoint, poll_s=poll_s)
    model, reused = upload(client, spec, timeout_s)
    endpoint, _ = get_or_create_endpoint(client, spec.endpoint or spec.display_name, spec.labels,
                                         timeout_s)
    result = deploy_to_endpoint(client, spec, model, endpoint, timeout_s)
    result.reused[:0] = reused
    return result


def promote(project: str, location: str, endpoint: str, deployed_model_id: str,
            undeploy_previous: bool, api_endpoint: str = "", timeout_s: float = 1800.0,
            poll_s: float = 5.0) -> dict[str, int]:
    """All traffic to ``deployed_model_id``; the models it replaces are undeployed if asked."""
    client = VertexClient(project, location, api_endpoint, poll_s=poll_s)
    split = set_traffic(client, endpoint, {deployed_model_id: 100})
    promoted = next((m for m in get_endpoint(client, endpoint).deployed_models
                     if m.id == deployed_model_id), None)
    if promoted is not None:  # Vertex AI never moves "default" by itself: the first version
        # would stay what the model name without a version means
        version = f"{promoted.model.split('@')[0]}@{promoted.model_version_id}"
        client.call(f"making {version} the default version", client.models.merge_version_aliases,
                    name=version, version_aliases=["default"])
        print(f"{version} is now the model's default version")
    if undeploy_previous:
        for other in [m.id for m in get_endpoint(client, endpoint).deployed_models]:
            if other != deployed_model_id:
                undeploy(client, endpoint, other, timeout_s)
                print(f"undeployed the previous deployed model {other}")
    return split


def promote_deployed(endpoint: VertexEndpoint, undeploy_previous: bool,
                     timeout_s: float = 1800.0) -> str:
    """:func:`promote` the deployed model a VertexEndpoint artifact records; the traffic split
    after the change, as JSON."""
    split = promote(endpoint.project, endpoint.location, endpoint.resource_name,
                    endpoint.deployed_model_id, undeploy_previous, endpoint.api_endpoint, timeout_s)
    print(f"promoted deployed model {endpoint.deployed_model_id}: traffic {split}")
    return json.dumps(split)


def rollback_deployed(endpoint: VertexEndpoint, undeploy_canary: bool,
                      timeout_s: float = 1800.0) -> str:
    """:func:`rollback` the deployed model a VertexEndpoint artifact records; the traffic split
    after the change, as JSON."""
    split = rollback(endpoint.project, endpoint.location, endpoint.resource_name,
                     endpoint.deployed_model_id, endpoint.previous_traffic, undeploy_canary,
                     endpoint.api_endpoint, timeout_s)
    print(f"rolled back deployed model {endpoint.deployed_model_id}: traffic {split}")
    return json.dumps(split)


def rollback(project: str, location: str, endpoint: str, deployed_model_id: str,
             previous_traffic: dict[str, int], undeploy_canary: bool, api_endpoint: str = "",
             timeout_s: float = 1800.0, poll_s: float = 5.0) -> dict[str, int]:
    """Give the traffic back to the models that served before the deploy; undeploy the canary
    if asked. With nothing serving before, the canary keeps the endpoint (nothing to roll
    back to) unless it is undeployed."""
    client = VertexClient(project, location, api_endpoint, poll_s=poll_s)
    current = get_endpoint(client, endpoint)
    live = {m.id for m in current.deployed_models}
    before = rescale({k: int(v) for k, v in previous_traffic.items() if k in live and int(v) > 0})
    if before:
        split = set_traffic(client, endpoint, before)
    else:
        split = dict(current.traffic_split)
        print("nothing served before this deploy: no traffic to give back")
    if undeploy_canary:
        undeploy(client, endpoint, deployed_model_id, timeout_s)
        split = dict(get_endpoint(client, endpoint).traffic_split)
    return split
