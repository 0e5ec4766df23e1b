"""Train to a Vertex AI endpoint: deploy a new version with a traffic share, validate it,
promote it or roll it back."""

from kfp import dsl

from kfp_serve.components import deploy_vertex, promote_vertex, rollback_vertex
from kfp_serve.pipelines.definitions.shared import (
    train_and_publish_triton,
    validate_then_promote_or_roll_back,
)


@dsl.pipeline(name="train-to-serve-vertex")
def train_to_serve_vertex(
    project: str = "my-project",
    location: str = "us-central1",
    publish_destination: str = "gs://my-bucket/models/digits",
    serving_image: str = "us-central1-docker.pkg.dev/my-project/serving/tritonserver:24.09-py3",
    display_name: str = "digits",
    endpoint: str = "digits",
    machine_type: str = "n1-standard-4",
    accelerator_type: str = "",
    accelerator_count: int = 0,
    min_replicas: int = 1,
    max_replicas: int = 1,
    traffic_percentage: int = 10,
    epochs: int = 15,
    endpoint_atol: float = 1e-4,
    endpoint_rtol: float = 1e-3,
    operation_timeout_s: float = 1800.0,
    api_endpoint: str = "",
):
    """Trains, publishes a Triton repository, deploys it to Vertex AI with a traffic share, validates.

    Args:
        project: Google Cloud project id.
        location: Vertex AI region (the bucket should be in it too).
        publish_destination: gs://BUCKET/PATH where each run publishes a new repository version.
        serving_image: A tritonserver image in Artifact Registry (copy
            nvcr.io/nvidia/tritonserver:<tag>-py3 there).
        display_name: Model display name; each run adds a version to this model.
        endpoint: Endpoint display name (created on the first run), id or resource name.
        machine_type: Machine type per replica.
        accelerator_type: e.g. NVIDIA_TESLA_T4 or NVIDIA_L4; empty for CPU.
        accelerator_count: Accelerators per replica.
        min_replicas: Minimum replicas.
        max_replicas: Maximum replicas.
        traffic_percentage: Traffic share of the new deployed model until validation decides
            (the first model on an endpoint takes 100 %).
        epochs: Training epochs.
        endpoint_atol: Absolute tolerance of the deployed model against the eager model.
        endpoint_rtol: Relative tolerance of the deployed model against the eager model.
        operation_timeout_s: How long to wait for each Vertex AI operation.
        api_endpoint: Vertex AI API host; empty: {location}-aiplatform.googleapis.com.
    """
    package = train_and_publish_triton(publish_destination=publish_destination, epochs=epochs,
                                       model_name=display_name)
    deploy = deploy_vertex(
        model=package.outputs["published"], project=project, location=location,
        display_name=display_name, endpoint=endpoint, serving_image=serving_image,
        machine_type=machine_type, accelerator_type=accelerator_type,
        accelerator_count=accelerator_count, min_replicas=min_replicas, max_replicas=max_replicas,
        traffic_percentage=traffic_percentage, operation_timeout_s=operation_timeout_s,
        api_endpoint=api_endpoint,
    ).set_caching_options(False)
    endpoint_artifact = deploy.outputs["vertex_endpoint"]
    validate_then_promote_or_roll_back(
        endpoint_artifact, package.outputs["onnx_model"], endpoint_atol, endpoint_rtol,
        promote=lambda: promote_vertex(vertex_endpoint=endpoint_artifact,
                                       operation_timeout_s=operation_timeout_s),
        roll_back=lambda: rollback_vertex(vertex_endpoint=endpoint_artifact,
                                          operation_timeout_s=operation_timeout_s),
    )
