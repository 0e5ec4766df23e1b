"""Train to TorchServe on KServe: a .mar archive deployed as a canary, validated, promoted or rolled back."""


from kfp import dsl

from kfp_serve.components import build_torchserve_archive, deploy_kserve, publish_model
from kfp_serve.pipelines.definitions.shared import train_and_export, validate_kserve_canary


@dsl.pipeline(name="train-to-serve-torchserve")
def train_to_serve_torchserve(
    publish_destination: str = "gs://my-bucket/models/digits-torchserve",
    namespace: str = "kubeflow-user-example-com",
    service_name: str = "digits-torchserve",
    model_name: str = "digits",
    canary_traffic_percent: int = 10,
    batch_size: int = 8,
    max_batch_delay_ms: int = 20,
    epochs: int = 15,
    endpoint_atol: float = 1e-4,
    endpoint_rtol: float = 1e-3,
    deployment_mode: str = "Knative",
    ready_timeout_s: float = 900.0,
    api_host: str = "",
):
    """Trains, publishes a TorchServe .mar, deploys a canary on KServe's TorchServe runtime, validates.

    Args:
        publish_destination: gs://BUCKET/PATH where each run publishes a new archive version.
        namespace: Namespace of the InferenceService (the pipeline's service account needs the
            Role in rbac/kfp-serve-kserve.yaml there).
        service_name: InferenceService name.
        model_name: Name the model is served under (the .mar name; /v1/models/<name>:predict).
        canary_traffic_percent: Traffic share of the new revision until validation decides
            (Knative mode only: set 100 with deployment_mode Standard).
        batch_size: TorchServe batch size (requests grouped per handler call).
        max_batch_delay_ms: How long TorchServe waits to fill a batch.
        epochs: Training epochs.
        endpoint_atol: Absolute tolerance of the canary against the eager model.
        endpoint_rtol: Relative tolerance of the canary against the eager model.
        deployment_mode: Knative (a canary by traffic split, rolled back by traffic) or Standard
            (the new model takes all traffic once rolled out; a failed validation re-applies
            the previous model).
        ready_timeout_s: How long to wait for the InferenceService to become Ready.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.
    """
    exported = train_and_export(epochs=epochs)
    archive = build_torchserve_archive(model=exported.outputs["torchscript_model"],
                                       model_name=model_name, batch_size=batch_size,
                                       max_batch_delay_ms=max_batch_delay_ms)
    published = publish_model(source=archive.outputs["archive"],
                              destination=publish_destination).set_caching_options(False)
    deploy = deploy_kserve(
        model=published.outputs["published"], name=service_name, namespace=namespace,
        model_format="pytorch", protocol_version="v1",
        canary_traffic_percent=canary_traffic_percent, deployment_mode=deployment_mode,
        ready_timeout_s=ready_timeout_s, api_host=api_host,
    ).set_caching_options(False)
    validate_kserve_canary(deploy, exported.outputs["torchscript_model"], endpoint_atol,
                           endpoint_rtol, api_host)
