"""The local pipeline with the serving configuration picked by measurement before packaging."""

from kfp import dsl

from kfp_serve.components import (
    build_triton_repository,
    deploy_local,
    publish_model,
    tune_triton_config,
    undeploy_local,
    validate_endpoint,
)
from kfp_serve.pipelines.definitions.shared import train_and_export


@dsl.pipeline(name="train-to-serve-local-tuned")
def train_to_serve_local_tuned(
    epochs: int = 15,
    min_accuracy: float = 0.95,
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    model_name: str = "digits",
    max_latency_ms: float = 10.0,
    tune_budget_s: float = 120.0,
    tune_seconds_per_level: float = 1.5,
    machine_type: str = "",
    publish_destination: str = "gs://kfp-serve-local/models/digits-tuned",
    validation_transport: str = "rest-binary",
):
    """Trains and exports the digits CNN, tunes its Triton config by measurement, serves and validates it.

    tune_triton_config serves candidate configurations on a local Triton and keeps the one with
    the most throughput within the p95 latency SLO; the repository is built with it, published,
    served on 127.0.0.1 and validated against the same SLO, with the server's own view of queue
    and compute time. The server is stopped at the end, also when a step fails.

    Args:
        epochs: Training epochs.
        min_accuracy: Fail training below this held-out accuracy.
        opset: ONNX opset (18-20).
        atol: Absolute tolerance of the export and the endpoint against the eager model.
        rtol: Relative tolerance of the export and the endpoint against the eager model.
        model_name: Name the model is served under.
        max_latency_ms: The p95 latency SLO (ms) the tuner and the validation hold to.
        tune_budget_s: Time for the configuration search.
        tune_seconds_per_level: Measuring time per concurrency level while tuning.
        machine_type: Prices the result (cost per million inferences), e.g. gke:n2-standard-8;
            empty: no price. (For your own hourly price, use the components' hourly_price.)
        publish_destination: Where the repository is published as a new version.
        validation_transport: rest, rest-binary or grpc: how tensors reach the server.
    """
    undeploy = undeploy_local(deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    with dsl.ExitHandler(undeploy):
        exported = train_and_export(epochs=epochs, min_accuracy=min_accuracy, opset=opset,
                                    atol=atol, rtol=rtol)
        tune = tune_triton_config(
            model=exported.outputs["onnx_model"], max_latency_ms=max_latency_ms,
            budget_s=tune_budget_s, seconds_per_level=tune_seconds_per_level,
            machine_type=machine_type,
        ).set_caching_options(False)  # timings belong to this run's machine
        repository = build_triton_repository(model=exported.outputs["onnx_model"],
                                             model_name=model_name,
                                             tuned_options=tune.outputs["tuned_options"])
        published = publish_model(source=repository.outputs["repository"],
                                  destination=publish_destination).set_caching_options(False)
        deploy = deploy_local(
            repository=published.outputs["published"], deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_caching_options(False)
        validate_endpoint(
            endpoint=deploy.outputs["endpoint"], model=exported.outputs["onnx_model"],
            atol=atol, rtol=rtol, transport=validation_transport, max_p95_latency_ms=max_latency_ms,
            machine_type=machine_type,
        ).set_caching_options(False)
