"""Deploy a published version to an endpoint with a traffic share, then promote it or roll it
back: the steps deploy_vertex, promote_vertex and rollback_vertex run.

What each guarantees, whatever else shares the endpoint:

- deploy adds one deployed model (its own, even of a version that already serves) and takes
  its share from the models that serve, in proportion; it records the split it found;
- rollback gives the canary's share back to the models that served before the deploy (in
  their proportions then) and undeploys the canary; models deployed since keep their shares;
- promote gives the canary the shares of the versions of the same model that served before the
  deploy, makes its version the model's default, and undeploys those versions; other models on
  the endpoint (another pipeline's canary, an unrelated model) keep their shares and stay.

Each step is safe to retry: run again, it finds what its earlier attempt did.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from kfp_serve.components.artifacts import VertexEndpoint
from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.api import VertexClient
from kfp_serve.components.vertex.endpoints import (
    VertexDeployment,
    deploy_to_endpoint,
    get_endpoint,
    get_or_create_endpoint,
    model_of,
    set_traffic,
    undeploy,
)
from kfp_serve.components.vertex.models import registry_version, upload
from kfp_serve.components.vertex.spec import VertexDeploySpec
from kfp_serve.components.vertex.traffic import promoted, rolled_back


def deploy(spec: VertexDeploySpec, api_endpoint: str = "", timeout_s: float = 1800.0,
           poll_s: float = 5.0, deploy_id: str = "",
           on_operation: Callable[[str], None] | None = None) -> VertexDeployment:
    """Check the spec, upload (or reuse) the model version, get or create the endpoint, deploy
    with the asked-for traffic share. ``deploy_id`` names this deploy step, the same on every
    retry of it (deploy_vertex passes its output artifact's URI); empty: the spec's own key,
    so a redeploy of the same spec resumes the earlier one. ``on_operation`` hears the name of
    each long-running operation as its wait begins (deploy_vertex's ``gcp_resources``)."""
    spec.check()
    client = VertexClient(spec.project, spec.location, api_endpoint, poll_s=poll_s)
    client.on_operation = on_operation
    protocol = served_name = ""
    if spec.registry_model:  # a version already in the Model Registry, deployed as it is
        model, protocol, served_name = registry_version(client, spec.registry_model)
        if spec.grpc and not model.container_spec.grpc_ports:
            raise UserError(f"grpc=True, but {spec.registry_model}'s container has no grpcPorts"
                            " (fixed when the version was uploaded): Vertex AI would refuse its gRPC"
                            " requests; deploy a published repository with grpc=True, or drop grpc")
        reused: list[str] = []
    else:
        model, reused = upload(client, spec, timeout_s)
    endpoint, _ = get_or_create_endpoint(client, spec.endpoint or spec.display_name, spec.labels,
                                         timeout_s, spec.endpoint_settings())
    result = deploy_to_endpoint(client, spec, model, endpoint, timeout_s,
                                deploy_id or spec.registry_model or spec.key, protocol)
    result.reused[:0] = reused
    if spec.registry_model:
        result.model_name, result.artifact_uri = served_name, model.artifact_uri
    return result


def _ours(client: VertexClient, endpoint: VertexEndpoint):
    """The endpoint now, and the deployed model the record names (None when it is gone)."""
    current = get_endpoint(client, endpoint.resource_name)
    mine = next((m for m in current.deployed_models if m.id == endpoint.deployed_model_id), None)
    return current, mine


def promote(endpoint: VertexEndpoint, undeploy_previous: bool, timeout_s: float = 1800.0,
            poll_s: float = 5.0) -> dict[str, int]:
    """The canary takes the traffic of the versions of its model that served before the deploy;
    they are undeployed if asked; its version becomes the model's default. Other models keep
    their shares. Returns the split after the change."""
    if endpoint.flex_start_s:
        raise UserError(f"deployed model {endpoint.deployed_model_id} runs on flex-start VMs, which"
                        f" Vertex AI undeploys {endpoint.flex_start_s} s after the deploy: promoted,"
                        " it would take the endpoint's traffic down with it; deploy the version on"
                        " on-demand, Spot or reserved capacity to promote it (flex-start suits"
                        " canaries and short evaluations)")
    client = VertexClient(endpoint.project, endpoint.location, endpoint.api_endpoint, poll_s=poll_s)
    current, mine = _ours(client, endpoint)
    if mine is None:
        raise UserError(f"deployed model {endpoint.deployed_model_id} is no longer on"
                        f" {endpoint.resource_name}: nothing to promote (was it rolled back or"
                        " undeployed?)")
    live = {m.id: m for m in current.deployed_models}
    ours = model_of(mine)
    replaced = {k for k in endpoint.previous_traffic
                if k in live and k != mine.id and model_of(live[k]) == ours}
    split = dict(current.traffic_split)
    wanted = promoted(split, mine.id, replaced)
    if wanted != split:
        split = set_traffic(client, endpoint.resource_name, wanted)
    # Vertex AI never moves "default" by itself: the first version would stay what the model
    # name without a version means
    version = f"{ours}@{mine.model_version_id}"
    client.call(f"making {version} the default version", client.models.merge_version_aliases,
                name=version, version_aliases=["default"])
    print(f"{version} is now the model's default version")
    if undeploy_previous:
        for other in sorted(replaced):
            if undeploy(client, endpoint.resource_name, other, timeout_s):
                print(f"undeployed deployed model {other}, which the promoted one replaced")
        split = dict(get_endpoint(client, endpoint.resource_name).traffic_split)
    foreign = sorted(set(live) - replaced - {mine.id})
    if foreign:
        print(f"left as they are: deployed models {foreign} (not versions this deploy replaced)")
    if not split.get(mine.id):
        print(f"note: deployed model {mine.id} takes no traffic: the models that hold it are not"
              " versions this deploy replaced")
    return split


def rollback(endpoint: VertexEndpoint, undeploy_canary: bool, timeout_s: float = 1800.0,
             poll_s: float = 5.0) -> dict[str, int]:
    """The canary's share goes back to the models that served before the deploy, in their
    proportions then; models deployed since keep theirs; the canary is undeployed if asked.
    With nothing serving before, undeploying the canary leaves the endpoint as it was: empty.
    Returns the split after the change."""
    client = VertexClient(endpoint.project, endpoint.location, endpoint.api_endpoint, poll_s=poll_s)
    current, mine = _ours(client, endpoint)
    if mine is None:  # already rolled back (a retry) or undeployed by someone else
        print(f"deployed model {endpoint.deployed_model_id} is not on the endpoint: nothing to roll back")
        return dict(current.traffic_split)
    live = {m.id for m in current.deployed_models}
    split = dict(current.traffic_split)
    wanted = rolled_back(split, mine.id, endpoint.previous_traffic, live)
    since = sorted(k for k, v in split.items() if k != mine.id and v > 0)
    if wanted is None and (endpoint.previous_traffic or since):
        gone = (f"the deployed models that served before this deploy"
                f" ({sorted(endpoint.previous_traffic)}) are gone" if endpoint.previous_traffic
                else "nothing served before this deploy")
        raise UserError(f"{gone} and the canary's {split.get(mine.id, 0)} % of"
                        f" {endpoint.resource_name} would go to models deployed since ({since}),"
                        " which a rollback does not hand traffic to: the canary keeps serving;"
                        " undeploy it with undeploy_vertex to give its share to them")
    if wanted is None:
        print("nothing served before this deploy: no traffic to give back")
    elif wanted != split:
        split = set_traffic(client, endpoint.resource_name, wanted)
    if undeploy_canary:
        undeploy(client, endpoint.resource_name, mine.id, timeout_s)
        split = dict(get_endpoint(client, endpoint.resource_name).traffic_split)
    return split


def promote_deployed(endpoint: VertexEndpoint, undeploy_previous: bool,
                     timeout_s: float = 1800.0) -> str:
    """:func:`promote` the deployed model a VertexEndpoint artifact records; the traffic split
    after the change, as JSON."""
    split = promote(endpoint, undeploy_previous, timeout_s)
    print(f"promoted deployed model {endpoint.deployed_model_id}: traffic {split}")
    return json.dumps(split)


def rollback_deployed(endpoint: VertexEndpoint, undeploy_canary: bool,
                      timeout_s: float = 1800.0) -> str:
    """:func:`rollback` the deployed model a VertexEndpoint artifact records; the traffic split
    after the change, as JSON."""
    split = rollback(endpoint, undeploy_canary, timeout_s)
    print(f"rolled back deployed model {endpoint.deployed_model_id}: traffic {split}")
    return json.dumps(split)
