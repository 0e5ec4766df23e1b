"""The embedded default: train, export, publish, serve and validate on one machine."""

from kfp import dsl

from kfp_serve.components import (
    deploy_local,
    profile_formats,
    undeploy_local,
    validate_endpoint,
)
from kfp_serve.pipelines.definitions.shared import train_and_publish_triton


@dsl.pipeline(name="train-to-serve-local")
def train_to_serve_local(
    epochs: int = 15,
    min_accuracy: float = 0.95,
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    endpoint_atol: float = 1e-4,
    endpoint_rtol: float = 1e-3,
    model_name: str = "digits",
    max_batch_size: int = 32,
    http_port: int = 0,
    profile_seconds: float = 0.5,
    publish_destination: str = "gs://kfp-serve-local/models/digits",
    validation_transport: str = "auto",
):
    """Trains, exports and profiles the digits CNN; publishes, serves (local Triton) and validates it.

    Everything runs on one machine; the server listens on 127.0.0.1 and is stopped at the end of
    the run, also when validation fails.

    Args:
        epochs: Training epochs.
        min_accuracy: Fail training below this held-out accuracy.
        opset: ONNX opset (18-20).
        atol: Absolute tolerance of the exports against the eager model.
        rtol: Relative tolerance of the exports against the eager model.
        endpoint_atol: Absolute tolerance of the live endpoint against the eager model.
        endpoint_rtol: Relative tolerance of the live endpoint against the eager model.
        model_name: Name the model is served under.
        max_batch_size: Triton max_batch_size (0 turns batching off).
        http_port: HTTP port of the local server on 127.0.0.1; 0 picks a free one.
        profile_seconds: Measuring time per format and batch size in the format profile.
        publish_destination: Where the repository is published as a new version (gs://... or
            a local folder); the server is deployed from the published copy. Locally,
            `kfp-serve run --gcs-emulator` serves gs:// from fake-gcs-server.
        validation_transport: auto (binary tensors where JSON cannot carry a dtype), rest,
            rest-binary or grpc: how the golden set reaches the server.
    """
    undeploy = undeploy_local(deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    with dsl.ExitHandler(undeploy):
        package = train_and_publish_triton(
            publish_destination=publish_destination, epochs=epochs, min_accuracy=min_accuracy,
            opset=opset, atol=atol, rtol=rtol, model_name=model_name,
            max_batch_size=max_batch_size,
        )
        profile_formats(
            model=package.outputs["model"], onnx_model=package.outputs["onnx_model"],
            torchscript_model=package.outputs["torchscript_model"],
            batch_sizes=[1, 32], seconds_per_batch=profile_seconds,
        ).set_caching_options(False)  # timings belong to this run's machine
        deploy = deploy_local(
            repository=package.outputs["published"],
            deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER, http_port=http_port,
        ).set_caching_options(False)  # a cached deploy would start no server
        validate_endpoint(
            endpoint=deploy.outputs["endpoint"], model=package.outputs["onnx_model"],
            atol=endpoint_atol, rtol=endpoint_rtol, transport=validation_transport,
        ).set_caching_options(False)
