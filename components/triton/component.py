"""KFP wrappers: build a Triton model repository; pack several into one."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def build_triton_repository(
    model: Input[Model],
    repository: Output[Artifact],
    model_name: str = "model",
    max_batch_size: int = 32,
    preferred_batch_sizes: Optional[List[int]] = None,
    max_queue_delay_microseconds: int = 100,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    version_policy: str = "latest:1",
    warmup: bool = False,
    tuned_options: Optional[Input[Artifact]] = None,
):
    """Builds a Triton model repository (``<model_name>/config.pbtxt`` + ``<model_name>/1/``).

    The platform follows the export: ONNX -> ``onnxruntime_onnx``, TorchScript ->
    ``pytorch_libtorch`` (tensors named ``<name>__<index>``, as that backend requires),
    TensorRT -> ``tensorrt_plan``. ``config.pbtxt`` is generated through Triton's protobuf schema
    from the model's signature (names, dtypes, dims; the batch dim left to Triton when
    ``max_batch_size > 0``) and checked against the model file before anything is written.

    Args:
        model: An OnnxModel, TorchScriptModel or TensorRTModel artifact.
        model_name: Name the model is served under (letters, digits, ``_ . -``).
        max_batch_size: Largest batch Triton forms; 0 turns batching off.
        preferred_batch_sizes: Batch sizes the dynamic batcher aims for (each <= max_batch_size).
        max_queue_delay_microseconds: How long the dynamic batcher waits to fill a batch.
        instance_kind: KIND_CPU, KIND_GPU or KIND_AUTO.
        instance_count: Model instances per device.
        version_policy: ``latest:N``, ``all`` or ``specific:1,2``.
        warmup: Run one golden sample through each instance before the model reports ready.
        tuned_options: A TritonModelOptions artifact from tune_triton_config; when given, its
            batching, instance and thread settings replace max_batch_size,
            preferred_batch_sizes, max_queue_delay_microseconds and instance_count here.

    Returns:
        repository: A TritonRepository artifact; metadata holds the model name, the served
            tensor names, the signature and, for ONNX, its IR version.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.errors import UserError
    from kfp_serve.components.formats import format_of_kind
    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    exported = artifacts.read(model, *artifacts.EXPORTED)
    model_format = format_of_kind(exported.kind())
    options = TritonModelOptions(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(int(s) for s in preferred_batch_sizes or ()),
        max_queue_delay_microseconds=max_queue_delay_microseconds,
        instance_kind=instance_kind,
        instance_count=instance_count,
        version_policy=version_policy,
        warmup=warmup,
    )
    if tuned_options is not None:
        tuned = artifacts.read(tuned_options, artifacts.TritonModelOptions)
        if tuned.model_format != model_format.name:
            raise UserError(f"tuned_options were measured on {tuned.model_format}, this model is"
                            f" {model_format.name}; tune this export")
        options = options.with_tuned(TritonModelOptions.from_dict(tuned.options))
    result = build_repository(model.path, model_format.name, repository.path, model_name, options)
    artifacts.mark(repository, artifacts.TritonRepository(
        model_name=result.model_name, tensor_names=result.tensor_names, signature=exported.signature,
        model_format=model_format.name, version=result.version,
        max_batch_size=options.max_batch_size, onnx_ir_version=result.onnx_ir_version))
    print(result.config_text)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def pack_triton_repositories(
    published_uris: List[str],
    repository: Output[Artifact],
    instance_counts: Optional[Dict[str, int]] = None,
    instance_kind: Optional[str] = None,
):
    """Packs the models of several published Triton repositories into one repository.

    Small models then share one Triton server (and one GPU) behind one InferenceService: publish
    the result with publish_model and deploy it with deploy_kserve. Each source is fetched with
    its manifest checked; model names must differ; each model keeps its config, except the
    instance groups asked for here (rewritten through Triton's protobuf schema).

    Args:
        published_uris: Two or more committed versions (``gs://.../v<N>`` or folders), each a
            Triton repository.
        instance_counts: Model name -> instances of that model (one instance group); models
            not named keep theirs.
        instance_kind: ``KIND_GPU``, ``KIND_CPU`` or ``KIND_AUTO`` for the instance groups;
            empty keeps each model's kind.

    Returns:
        repository: A TritonRepository artifact; metadata ``models`` lists the models,
            ``model_name`` is the first, and ``onnx_ir_version`` the highest ONNX IR packed.
    """
    import tempfile
    from pathlib import Path

    from kfp_serve.components import artifacts
    from kfp_serve.components.storage.fetch import fetch_version
    from kfp_serve.components.triton.pack import pack_repositories

    with tempfile.TemporaryDirectory() as scratch:
        sources = [fetch_version(uri, Path(scratch) / str(index))
                   for index, uri in enumerate(published_uris)]
        result = pack_repositories(sources, repository.path, instance_counts, instance_kind or None)
    artifacts.mark(repository, artifacts.TritonRepository(
        model_name=result.models[0], models=tuple(result.models), sources=tuple(published_uris),
        onnx_ir_version=result.onnx_ir_version))
    print(f"packed {result.models} into one repository")
