"""Change a deployed model's replicas in place (MutateDeployedModel): no redeploy, no new
deployed model id, no traffic moved."""

from __future__ import annotations

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.api import VertexClient
from kfp_serve.components.vertex.endpoints import get_endpoint

#: the DeployedModel fields MutateDeployedModel changes that this suite sets
#: (endpoint_service.proto, MutateDeployedModelRequest.deployed_model)
_MASK = ["dedicated_resources.min_replica_count", "dedicated_resources.max_replica_count"]


def scale(project: str, location: str, endpoint: str, deployed_model_id: str, min_replicas: int,
          max_replicas: int, api_endpoint: str = "", timeout_s: float = 1800.0,
          poll_s: float = 5.0) -> dict[str, int]:
    """Set the deployed model's minimum and maximum replicas; returns them as Vertex AI now
    reports them. A model no longer on the endpoint is refused in one line."""
    if not 1 <= min_replicas <= max_replicas:
        raise UserError(f"replicas: need 1 <= min_replicas ({min_replicas}) <= max_replicas"
                        f" ({max_replicas}); Vertex AI endpoints do not scale to zero")
    client = VertexClient(project, location, api_endpoint, poll_s=poll_s)
    current = get_endpoint(client, endpoint)
    if deployed_model_id not in {m.id for m in current.deployed_models}:
        raise UserError(f"deployed model {deployed_model_id} is not on {current.name} (it has"
                        f" {sorted(m.id for m in current.deployed_models)}); nothing to scale")
    body = client.types.DeployedModel(id=deployed_model_id, dedicated_resources={
        "min_replica_count": min_replicas, "max_replica_count": max_replicas})
    started = client.call("changing the replicas", client.endpoints.mutate_deployed_model,
                          endpoint=current.name, deployed_model=body,
                          update_mask={"paths": _MASK}, idempotent=True)
    client.wait(client.endpoints, started.operation.name, "changing the replicas", timeout_s)
    [deployed] = [m for m in get_endpoint(client, current.name).deployed_models
                  if m.id == deployed_model_id]
    resources = deployed.dedicated_resources
    return {"min_replicas": resources.min_replica_count, "max_replicas": resources.max_replica_count}
