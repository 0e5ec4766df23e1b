"""Train to a canary on KServe: deploy, validate the canary, promote it or roll it back."""


from kfp import dsl

from kfp_serve.components import deploy_kserve
from kfp_serve.pipelines.definitions.shared import train_and_publish_triton, validate_kserve_canary


@dsl.pipeline(name="train-to-serve-kserve")
def train_to_serve_kserve(
    publish_destination: str = "gs://my-bucket/models/digits",
    namespace: str = "kubeflow-user-example-com",
    service_name: str = "digits",
    canary_traffic_percent: int = 10,
    epochs: int = 15,
    endpoint_atol: float = 1e-4,
    endpoint_rtol: float = 1e-3,
    deployment_mode: str = "Knative",
    ready_timeout_s: float = 900.0,
    api_host: str = "",
):
    """Trains and publishes a Triton repository, deploys a KServe canary, validates it, promotes/rolls back.

    Args:
        publish_destination: gs://BUCKET/PATH where each run publishes a new repository version.
        namespace: Namespace of the InferenceService (the pipeline's service account needs the
            Role in rbac/kfp-serve-kserve.yaml there).
        service_name: InferenceService name.
        canary_traffic_percent: Traffic share of the new revision until validation decides (an
            InferenceService's first revision always takes 100 %). Knative mode only: set 100
            with deployment_mode Standard.
        epochs: Training epochs.
        endpoint_atol: Absolute tolerance of the canary against the eager model.
        endpoint_rtol: Relative tolerance of the canary against the eager model.
        deployment_mode: Knative (a canary by traffic split, rolled back by traffic) or Standard
            (the new model takes all traffic once rolled out; a failed validation re-applies
            the previous model).
        ready_timeout_s: How long to wait for the InferenceService to become Ready.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.
    """
    package = train_and_publish_triton(publish_destination=publish_destination, epochs=epochs,
                                       model_name=service_name)
    deploy = deploy_kserve(
        model=package.outputs["published"], name=service_name, namespace=namespace,
        canary_traffic_percent=canary_traffic_percent, deployment_mode=deployment_mode,
        ready_timeout_s=ready_timeout_s, api_host=api_host,
    ).set_caching_options(False)
    validate_kserve_canary(deploy, package.outputs["onnx_model"], endpoint_atol, endpoint_rtol, api_host)
