"""Steps the train-to-serve pipelines share: nested pipelines, and the canary decision."""

from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Model

from kfp_serve.components import (
    build_triton_repository,
    export_onnx,
    export_torchscript,
    promote_kserve,
    publish_model,
    rollback_kserve,
    train_digits_classifier,
    validate_endpoint,
)


class ExportOutputs(NamedTuple):
    model: Model
    onnx_model: Model
    torchscript_model: Model


@dsl.pipeline(name="train-and-export")
def train_and_export(
    epochs: int = 15,
    min_accuracy: float = 0.95,
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportOutputs:
    """Trains the digits CNN and exports it to ONNX and TorchScript, each verified against it.

    Args:
        epochs: Training epochs.
        min_accuracy: Fail training below this held-out accuracy.
        opset: ONNX opset (18-20).
        atol: Absolute tolerance of the exports against the eager model.
        rtol: Relative tolerance of the exports against the eager model.

    Returns:
        model: The trained TorchModel.
        onnx_model: The verified ONNX export (with its signature and golden set).
        torchscript_model: The verified TorchScript export.
    """
    train = train_digits_classifier(epochs=epochs, min_accuracy=min_accuracy)
    onnx = export_onnx(model=train.outputs["model"], opset=opset, atol=atol, rtol=rtol)
    torchscript = export_torchscript(model=train.outputs["model"], atol=atol, rtol=rtol)
    return ExportOutputs(model=train.outputs["model"], onnx_model=onnx.outputs["onnx_model"],
                         torchscript_model=torchscript.outputs["torchscript_model"])


class PackageOutputs(NamedTuple):
    model: Model
    onnx_model: Model
    torchscript_model: Model
    published: Artifact


@dsl.pipeline(name="train-and-publish-triton")
def train_and_publish_triton(
    publish_destination: str,
    epochs: int = 15,
    min_accuracy: float = 0.95,
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    model_name: str = "digits",
    max_batch_size: int = 32,
) -> PackageOutputs:
    """Trains the digits CNN, exports and verifies ONNX and TorchScript, publishes a Triton repository.

    Args:
        publish_destination: gs://BUCKET/PATH (or a folder) for the new repository version.
        epochs: Training epochs.
        min_accuracy: Fail training below this held-out accuracy.
        opset: ONNX opset (18-20).
        atol: Absolute tolerance of the export against the eager model.
        rtol: Relative tolerance of the export against the eager model.
        model_name: Name the model is served under.
        max_batch_size: Triton max_batch_size.

    Returns:
        model: The trained TorchModel.
        onnx_model: The verified ONNX export (with its signature and golden set).
        torchscript_model: The verified TorchScript export.
        published: The committed repository version (its URI is the storageUri).
    """
    exported = train_and_export(epochs=epochs, min_accuracy=min_accuracy, opset=opset, atol=atol,
                                rtol=rtol)
    repository = build_triton_repository(model=exported.outputs["onnx_model"], model_name=model_name,
                                         max_batch_size=max_batch_size)
    published = publish_model(source=repository.outputs["repository"],
                              destination=publish_destination).set_caching_options(False)
    return PackageOutputs(model=exported.outputs["model"], onnx_model=exported.outputs["onnx_model"],
                          torchscript_model=exported.outputs["torchscript_model"],
                          published=published.outputs["published"])


def validate_then_promote_or_roll_back(endpoint, model, atol, rtol,
                                       promote: Callable[[], Any],
                                       roll_back: Callable[[], Any]) -> None:
    """Inside a pipeline: validate what a deploy step made (``endpoint``), then run ``promote``
    when it passed and ``roll_back`` when not; each makes its task (uncached). The tasks join
    the calling pipeline, not a nested one: dsl.If on a nested pipeline's output would need the
    verdict passed out and back in."""
    validate = validate_endpoint(endpoint=endpoint, model=model, atol=atol, rtol=rtol,
                                 fail_on_mismatch=False).set_caching_options(False)
    with dsl.If(validate.outputs["Output"] == True):  # noqa: E712 (a KFP condition, not Python)
        promote().set_caching_options(False)
    with dsl.Else():
        roll_back().set_caching_options(False)


def validate_kserve_canary(deploy, model, atol, rtol, api_host) -> None:
    """The KServe canary decision: validate the canary deploy_kserve made, then promote_kserve
    or rollback_kserve (the KServe and TorchServe pipelines share it)."""
    service = deploy.outputs["inference_service"]
    validate_then_promote_or_roll_back(
        service, model, atol, rtol,
        promote=lambda: promote_kserve(inference_service=service, api_host=api_host),
        roll_back=lambda: rollback_kserve(inference_service=service, api_host=api_host),
    )
