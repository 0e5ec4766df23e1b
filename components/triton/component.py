"""KFP wrapper: build a Triton model repository."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def build_triton_repository(
    onnx_model: Input[Model],
    repository: Output[Artifact],
    model_name: str = "model",
    max_batch_size: int = 32,
    preferred_batch_sizes: Optional[list[int]] = None,
    max_queue_delay_microseconds: int = 100,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
):
    """Builds a Triton model repository (``<model_name>/config.pbtxt`` + ``<model_name>/1/``).

    ``config.pbtxt`` is generated through Triton's protobuf schema from the model's signature
    (names, dtypes, dims; the batch dim left to Triton when ``max_batch_size > 0``) and checked
    against the ONNX graph before anything is written.

    Args:
        onnx_model: An OnnxModel artifact (from export_onnx).
        model_name: Name the model is served under (letters, digits, ``_ . -``).
        max_batch_size: Largest batch Triton forms; 0 turns batching off.
        preferred_batch_sizes: Batch sizes the dynamic batcher aims for (each <= max_batch_size).
        max_queue_delay_microseconds: How long the dynamic batcher waits to fill a batch.
        instance_kind: KIND_CPU, KIND_GPU or KIND_AUTO.
        instance_count: Model instances per device.

    Returns:
        repository: A TritonRepository artifact; metadata holds the model name and config text.
    """
    from kfp_serve.components.artifacts import expect, mark
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    expect(onnx_model, "OnnxModel")

    options = TritonModelOptions(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(int(s) for s in preferred_batch_sizes or ()),
        max_queue_delay_microseconds=max_queue_delay_microseconds,
        instance_kind=instance_kind,
        instance_count=instance_count,
    )
    result = build_repository(onnx_model.path, "onnx", repository.path, model_name, options)
    mark(repository, "TritonRepository", model_name=result.model_name, version=result.version,
         max_batch_size=max_batch_size, signature=ModelSignature.load(onnx_model.path).to_dict())
    print(result.config_text)
