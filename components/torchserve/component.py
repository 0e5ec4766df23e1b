"""KFP wrapper: build a TorchServe model archive and the layouts KServe and Vertex AI load."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def build_torchserve_archive(
    model: Input[Model],
    archive: Output[Artifact],
    model_name: str = "model",
    batch_size: int = 8,
    max_batch_delay_ms: int = 50,
    workers: int = 1,
    response_timeout_s: int = 120,
    service_envelope: str = "",
    vertex_layout: bool = True,
):
    """Builds a TorchServe .mar (torch-model-archiver) with the suite's handler, plus config.

    The folder holds ``config/config.properties`` and ``model-store/<model_name>.mar`` (KServe's
    TorchServe runtime: point ``storageUri`` at it) and ``model.mar`` (Vertex AI's prebuilt
    PyTorch container: point ``artifact_uri`` at it). The handler answers KServe v1 /
    Vertex ``{"instances": ...}`` and Open Inference Protocol v2 ``{"inputs": ...}`` JSON and
    runs TorchServe's batches as one model call; it is import-checked now, not at serve time.

    Args:
        model: An OnnxModel or TorchScriptModel artifact.
        model_name: Name the model is served under.
        batch_size: Largest batch TorchServe forms.
        max_batch_delay_ms: How long TorchServe waits to fill a batch.
        workers: Worker processes for the model.
        response_timeout_s: Seconds before TorchServe abandons a request.
        service_envelope: Empty (the handler speaks v1 and v2 itself), ``kserve`` or ``kservev2``.
        vertex_layout: Also write ``model.mar`` at the top for Vertex AI.

    Returns:
        archive: A TorchServeArchive artifact; metadata holds the model name and signature.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.formats import format_of_kind
    from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive

    exported = artifacts.read(model, artifacts.OnnxModel, artifacts.TorchScriptModel)
    model_format = format_of_kind(exported.kind()).name
    options = ArchiveOptions(batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms,
                             workers=workers, response_timeout_s=response_timeout_s,
                             service_envelope=service_envelope)
    result = build_archive(model.path, model_format, archive.path, model_name, options,
                           vertex_layout=vertex_layout)
    artifacts.mark(archive, artifacts.TorchServeArchive(
        model_name=model_name, model_format=model_format, signature=exported.signature))
    print(result.config_properties)
