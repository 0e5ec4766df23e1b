"""KFP wrappers: deploy to a Vertex AI endpoint, promote or roll back, undeploy."""

from typing import Dict, List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from kfp_serve.components import images
from kfp_serve.components.vertex.kfp_types import VertexEndpoint, VertexModel


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_vertex(
    vertex_model: Output[VertexModel],
    vertex_endpoint: Output[VertexEndpoint],
    report: Output[Markdown],
    gcp_resources: dsl.OutputPath(str),
    project: str,
    location: str,
    display_name: str,
    model: Input[Artifact] = None,
    registry_model: Optional[str] = None,
    endpoint: Optional[str] = None,
    serving_image: Optional[str] = None,
    machine_type: str = "n1-standard-4",
    accelerator_type: Optional[str] = None,
    accelerator_count: int = 0,
    min_replicas: int = 1,
    max_replicas: int = 1,
    cpu_utilization_target: int = 0,
    accelerator_utilization_target: int = 0,
    traffic_percentage: int = 100,
    labels: Optional[Dict[str, str]] = None,
    env: Optional[Dict[str, str]] = None,
    version_aliases: Optional[List[str]] = None,
    service_account: Optional[str] = None,
    spot: bool = False,
    reservation: Optional[str] = None,
    required_replicas: int = 0,
    flex_start_max_runtime_s: int = 0,
    request_count_target: int = 0,
    access_logging: bool = False,
    container_logging: bool = True,
    dedicated_endpoint: bool = False,
    grpc: bool = False,
    inference_timeout_s: int = 0,
    request_logging_rate: float = 0.0,
    request_logging_table: Optional[str] = None,
    psc_address: Optional[str] = None,
    deployment_timeout_s: int = 0,
    startup_timeout_s: int = 0,
    health_period_s: int = 0,
    shared_memory_mb: int = 0,
    operation_timeout_s: float = 1800.0,
    api_endpoint: Optional[str] = None,
) -> NamedTuple("Outputs", [("deployed_model_id", str), ("endpoint_resource_name", str)]):
    """Uploads a published model as a new Vertex AI model version and deploys it to an endpoint.

    The model version goes under the model of the same display name (a new model the first
    time), so each run adds a version instead of a new model. The endpoint is found by display
    name (created when missing) or given as an id/resource name. The traffic split is computed
    from the endpoint's live state: the new deployed model gets traffic_percentage and the ones
    serving now share the rest in their current proportions (each keeps at least 1 %). Every
    deploy makes its own deployed model, even of a version that already serves, and records the
    split it found, which rollback_vertex restores. Long-running operations are waited for with
    a timeout; one that ends with an error fails the step with that error (a serving quota, a
    stockout of the machine and a request-rate limit each say so, with their fix); SIGTERM
    cancels the running operation. A retried step resumes: it reuses the model version and the
    deployed model an earlier attempt of this step made (and the split it found), and waits for
    an operation still running on the endpoint, instead of starting duplicates.

    Args:
        project: Google Cloud project id.
        location: Vertex AI region, e.g. ``us-central1``.
        display_name: Model display name (versions accumulate under it).
        model: A PublishedVersion on gs:// of a TritonRepository (served by Triton through
            rawPredict) or a TorchServeArchive (served by Vertex AI's PyTorch container).
        registry_model: Instead of ``model``: a version already in the Model Registry,
            ``MODEL_ID@VERSION``, ``MODEL_ID@alias`` (e.g. ``@champion``) or its resource name,
            deployed as it is (Triton in Vertex AI mode or Vertex AI's PyTorch container).
        endpoint: Endpoint display name, numeric id or resource name; empty: display_name.
        serving_image: Serving container image in Artifact Registry; required for Triton (copy
            ``nvcr.io/nvidia/tritonserver:<tag>-py3`` there); empty for TorchServe picks
            Vertex AI's prebuilt PyTorch image (CPU or GPU).
        machine_type: Machine type of each replica, e.g. ``n1-standard-4``, ``g2-standard-8``.
        accelerator_type: e.g. ``NVIDIA_TESLA_T4`` or ``NVIDIA_L4``; empty for CPU.
        accelerator_count: Accelerators per replica (must suit the machine type).
        min_replicas: Minimum replicas (at least 1: Vertex AI does not scale to zero).
        max_replicas: Maximum replicas (autoscaling between the two).
        cpu_utilization_target: Autoscaling target CPU utilization in percent (0: Vertex AI's 60).
        accelerator_utilization_target: Autoscaling target accelerator duty cycle in percent.
        traffic_percentage: Share of the endpoint's traffic for the new model (0-100).
        labels: Labels on the model and a created endpoint.
        env: Environment variables of the serving container.
        version_aliases: Aliases for the new version (e.g. ``candidate``).
        service_account: Service account the deployed model runs as.
        spot: Run the replicas on Spot VMs (cheaper, may be preempted; cannot consume a
            reservation).
        reservation: Compute Engine capacity to draw from: ``any`` (any matching reservation,
            else on-demand), ``none`` (on-demand only) or a reservation's full name
            ``projects/P/zones/Z/reservations/NAME``; empty: Vertex AI's default.
        required_replicas: A partial deploy succeeds once this many replicas are ready (the
            rest keep being retried); 0: all min_replicas.
        flex_start_max_runtime_s: Run the replicas on flex-start VMs (Dynamic Workload
            Scheduler: discounted, for short work) for at most this many seconds (up to 604800,
            7 days); Vertex AI undeploys the model then, so promote_vertex refuses it (0: not
            flex-start; deployed through the v1beta1 API).
        request_count_target: Autoscale on requests per minute per replica (0: not on request
            count).
        access_logging: Log each prediction request's access (Cloud Logging).
        container_logging: Keep the serving container's stdout/stderr in Cloud Logging.
        dedicated_endpoint: Create the endpoint as a dedicated public endpoint (its own DNS name,
            Google's recommended kind); an existing endpoint keeps its kind.
        grpc: Turn Triton's gRPC server on as well (``grpcPorts``: ``--allow-grpc=true`` on
            port 8001): Vertex AI's DirectRawPredict then carries Triton's own gRPC calls
            (validate_endpoint with ``transport=grpc``). A Triton repository on a dedicated
            endpoint only.
        inference_timeout_s: The endpoint's prediction timeout in seconds (0: Vertex AI's
            default).
        request_logging_rate: Share of requests (0-1] logged with their responses to BigQuery
            (0: none).
        request_logging_table: ``bq://PROJECT[.DATASET[.TABLE]]`` for that log; empty: a new
            dataset in ``project``.
        psc_address: For a Private Service Connect endpoint: its forwarding rule's IP or DNS
            name in your network, where validation calls it (the pipeline must run inside that
            network).
        deployment_timeout_s: How long Vertex AI lets the deploy take (at most 7200; 0: its
            default); a model that loads for long needs more.
        startup_timeout_s: How long the server may take to become ready before its health
            checks count (a startup probe on its health route; 0: none).
        health_period_s: Seconds between health checks of a serving replica (0: the default).
        shared_memory_mb: /dev/shm for the container in MB (Triton's Python backend and
            PyTorch workers use it; 0: the default).
        operation_timeout_s: How long to wait for each long-running operation.
        api_endpoint: Vertex AI API host; empty: ``{location}-aiplatform.googleapis.com``.

    Returns:
        vertex_model: google.VertexModel (metadata.resourceName ``.../models/ID@VERSION``).
        vertex_endpoint: google.VertexEndpoint (metadata.resourceName, deployed_model_id,
            traffic, previous_traffic; validate_endpoint calls it).
        report: The deployment summary.
        gcp_resources: The running long-running operation as Google Cloud Pipeline Components
            write it (``VertexLro``), so Vertex AI Pipelines shows and cancels it.
        deployed_model_id: Id of the new deployed model on the endpoint.
        endpoint_resource_name: ``projects/.../locations/.../endpoints/ID``.
    """
    from collections import namedtuple

    from kfp_serve.components import artifacts
    from kfp_serve.components.vertex import api as vertex_api
    from kfp_serve.components.vertex.container import LargeModel
    from kfp_serve.components.vertex.rollout import deploy
    from kfp_serve.components.vertex.spec import VertexDeploySpec

    published = artifacts.deployable(model, registry_model or "", "registry_model (a version"
                                     " already in the Model Registry)", "deploy_vertex")
    content = published.content if published else None
    spec = VertexDeploySpec(
        project=project, location=location, display_name=display_name,
        artifact_uri=published.uri if published else "",
        content_kind=published.content_kind if published else "",
        archive_format=content.model_format if isinstance(content, artifacts.TorchServeArchive) else "",
        model_name=content.model_name if content else "", registry_model=registry_model or "",
        serving_image=serving_image or "", endpoint=endpoint or "", machine_type=machine_type,
        accelerator_type=accelerator_type or "", accelerator_count=accelerator_count,
        min_replicas=min_replicas, max_replicas=max_replicas,
        cpu_utilization_target=cpu_utilization_target,
        accelerator_utilization_target=accelerator_utilization_target,
        traffic_percentage=traffic_percentage, labels=labels or {}, env=env or {},
        version_aliases=version_aliases or [], service_account=service_account or "",
        spot=spot, reservation=reservation or "", required_replicas=required_replicas,
        flex_start_s=flex_start_max_runtime_s,
        request_count_target=request_count_target, access_logging=access_logging,
        container_logging=container_logging, dedicated_endpoint=dedicated_endpoint, grpc=grpc,
        inference_timeout_s=inference_timeout_s, request_logging_rate=request_logging_rate,
        request_logging_table=request_logging_table or "", psc_address=psc_address or "",
        large_model=LargeModel(deployment_timeout_s, startup_timeout_s, health_period_s,
                               shared_memory_mb),
    )

    # the operation running now, for the pipeline's UI
    record = vertex_api.gcp_resources_writer(gcp_resources, location, api_endpoint or "")
    # this step's identity, the same on each of its retries: its output's URI names the run and
    # the task (a retry resumes what an earlier attempt made; another run makes its own)
    result = deploy(spec, api_endpoint or "", operation_timeout_s, deploy_id=vertex_endpoint.uri,
                    on_operation=record)
    result.write_outputs(spec, result.endpoint_record(
        spec, api_endpoint or "", getattr(content, "tensor_names", None) or {}),
        result.summary(spec), api_endpoint or "", vertex_model, vertex_endpoint, report.path)
    return namedtuple("Outputs", ["deployed_model_id", "endpoint_resource_name"])(
        result.deployed_model_id, result.endpoint)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def promote_vertex(
    vertex_endpoint: Input[VertexEndpoint],
    undeploy_previous: bool = True,
    operation_timeout_s: float = 1800.0,
) -> str:
    """Promotes the new deployed model: it takes the traffic of the versions it replaces.

    The versions of the same model that served before the deploy hand it their shares (and are
    undeployed if asked); other models on the endpoint, such as another pipeline's canary or an
    unrelated model, keep their shares and stay deployed. Its model version becomes the model's
    ``default`` (Vertex AI never moves that alias on upload, so the model name alone would
    otherwise keep meaning version 1). A deployed model on flex-start VMs is refused: Vertex AI
    undeploys it when its time runs out. Safe to retry.

    Args:
        vertex_endpoint: The google.VertexEndpoint from deploy_vertex.
        undeploy_previous: Undeploy the versions it replaces (they stop costing node hours).
        operation_timeout_s: How long to wait for each undeploy operation.

    Returns:
        Output: The endpoint's traffic split after the change, as JSON.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.vertex.rollout import promote_deployed

    endpoint = artifacts.read(vertex_endpoint, artifacts.VertexEndpoint)
    return promote_deployed(endpoint, undeploy_previous, operation_timeout_s)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def rollback_vertex(
    vertex_endpoint: Input[VertexEndpoint],
    undeploy_canary: bool = True,
    operation_timeout_s: float = 1800.0,
) -> str:
    """Rolls back: the canary's share goes back to the models that served before the deploy.

    They get it in their proportions from before the deploy; models deployed since keep their
    shares. With nothing serving before, undeploying the canary leaves the endpoint empty, as it
    was. Safe to retry.

    Args:
        vertex_endpoint: The google.VertexEndpoint from deploy_vertex.
        undeploy_canary: Undeploy the new deployed model (its node hours stop).
        operation_timeout_s: How long to wait for the undeploy operation.

    Returns:
        Output: The endpoint's traffic split after the change, as JSON.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.vertex.rollout import rollback_deployed

    endpoint = artifacts.read(vertex_endpoint, artifacts.VertexEndpoint)
    return rollback_deployed(endpoint, undeploy_canary, operation_timeout_s)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def undeploy_vertex(
    project: str,
    location: str,
    endpoint: str,
    deployed_model_id: str,
    operation_timeout_s: float = 1800.0,
    api_endpoint: Optional[str] = None,
) -> bool:
    """Undeploys one deployed model (safe when it is gone, e.g. in an exit handler).

    Args:
        project: Google Cloud project id.
        location: Vertex AI region.
        endpoint: Endpoint id or resource name.
        deployed_model_id: The deployed model to remove; the others keep their shares.
        operation_timeout_s: How long to wait for the undeploy operation.
        api_endpoint: Vertex AI API host; empty: ``{location}-aiplatform.googleapis.com``.

    Returns:
        Output: True if it was deployed and is now undeployed.
    """
    from kfp_serve.components.vertex.api import VertexClient
    from kfp_serve.components.vertex.endpoints import undeploy

    client = VertexClient(project, location, api_endpoint or "")
    done = undeploy(client, endpoint, deployed_model_id, operation_timeout_s)
    print(f"undeployed {deployed_model_id}" if done else f"{deployed_model_id} was not deployed")
    return done


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def scale_vertex(
    project: str,
    location: str,
    endpoint: str,
    deployed_model_id: str,
    min_replicas: int,
    max_replicas: int,
    operation_timeout_s: float = 1800.0,
    api_endpoint: Optional[str] = None,
) -> str:
    """Changes a deployed model's replicas in place, without redeploying it.

    Vertex AI's MutateDeployedModel: the deployed model keeps its id, its traffic share and its
    serving replicas while the counts change (a redeploy would make a new deployed model and
    move traffic). Safe to retry.

    Args:
        project: Google Cloud project id.
        location: Vertex AI region.
        endpoint: Endpoint id or resource name.
        deployed_model_id: The deployed model to scale (deploy_vertex's output of that name).
        min_replicas: New minimum replicas (at least 1).
        max_replicas: New maximum replicas (at least min_replicas).
        operation_timeout_s: How long to wait for the operation.
        api_endpoint: Vertex AI API host; empty: ``{location}-aiplatform.googleapis.com``.

    Returns:
        Output: The replicas Vertex AI reports afterwards, as JSON
            (``{"min_replicas": 2, "max_replicas": 6}``).
    """
    import json

    from kfp_serve.components.vertex.scaling import scale

    replicas = scale(project, location, endpoint, deployed_model_id, min_replicas, max_replicas,
                     api_endpoint or "", operation_timeout_s)
    print(f"deployed model {deployed_model_id}: {replicas}")
    return json.dumps(replicas)
