"""Bring your own model: import a saved model, export, package, publish, serve and validate it."""

from kfp import dsl

from kfp_serve.components import (
    build_triton_repository,
    deploy_local,
    export_model,
    publish_model,
    undeploy_local,
    validate_endpoint,
)


@dsl.pipeline(name="deploy-existing-model")
def deploy_existing_model(
    model_uri: str = "gs://my-bucket/models/my-model",
    publish_destination: str = "gs://my-bucket/serving/my-model",
    model_name: str = "model",
    serving_format: str = "auto",
    exporter: str = "auto",
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    max_batch_size: int = 32,
    endpoint_atol: float = 1e-4,
    endpoint_rtol: float = 1e-3,
    transport: str = "auto",
):
    """Imports a model trained elsewhere, exports and verifies it, publishes, serves and validates it.

    The model is a folder in the suite's model contract (``save_torch_model``: model.pt2,
    signature.json, golden.npz) at a gs:// URI or a local path. It is served here by the local
    runtime and stopped at the end; reuse the same steps with deploy_kserve or deploy_vertex in
    your own pipeline to serve it on a cluster.

    Args:
        model_uri: Where the saved model folder is (gs://BUCKET/PATH or a local folder).
        publish_destination: gs://BUCKET/PATH (or a folder) for the new repository version.
        model_name: Name the model is served under.
        serving_format: auto (ONNX where an export passes, else TorchScript), onnx or
            torchscript.
        exporter: ONNX exporter: auto (dynamo, then legacy where dynamo fails), dynamo or
            legacy.
        opset: ONNX opset (18-20).
        atol: Absolute tolerance of the export against the model's golden outputs.
        rtol: Relative tolerance of the export against the model's golden outputs.
        max_batch_size: Triton max_batch_size.
        endpoint_atol: Absolute tolerance of the live endpoint against the golden outputs.
        endpoint_rtol: Relative tolerance of the live endpoint against the golden outputs.
        transport: How validation sends tensors: auto (binary where JSON cannot carry a
            dtype, e.g. float16), rest, rest-binary or grpc.
    """
    undeploy = undeploy_local(deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    with dsl.ExitHandler(undeploy):
        imported = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=True,
                                metadata={"kfp_serve_kind": "TorchModel"})
        exported = export_model(model=imported.output, serving_format=serving_format,
                                exporter=exporter, opset=opset, atol=atol, rtol=rtol)
        repository = build_triton_repository(model=exported.outputs["exported_model"],
                                             model_name=model_name, max_batch_size=max_batch_size)
        published = publish_model(source=repository.outputs["repository"],
                                  destination=publish_destination).set_caching_options(False)
        deploy = deploy_local(repository=published.outputs["published"],
                              deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
        validate_endpoint(endpoint=deploy.outputs["endpoint"], model=exported.outputs["exported_model"],
                          atol=endpoint_atol, rtol=endpoint_rtol,
                          transport=transport).set_caching_options(False)
