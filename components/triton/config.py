"""Triton ``config.pbtxt`` built through Triton's own protobuf schema (``model_config_pb2``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature, TensorSpec, triton_config_dtype

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "pytorch", "model.pt"),
}


@dataclass(frozen=True)
class TritonModelOptions:
    """What the user chooses about serving; everything tensor-related comes from the signature."""

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 100
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    parameters: dict[str, str] = field(default_factory=dict)


def validate_model_name(name: str) -> str:
    """Raise UserError unless ``name`` is usable as a Triton model (and directory) name."""
    if not MODEL_NAME_RE.match(name or ""):
        raise UserError(
            f"model name {name!r} is not valid for Triton; use 1-128 letters, digits, _ . -"
            " not starting with . or -"
        )
    return name


def build_config(name: str, model_format: str, signature: ModelSignature,
                 options: TritonModelOptions) -> mc.ModelConfig:
    """The ModelConfig message for one model.

    With ``max_batch_size > 0`` Triton adds the batch dimension itself, so the dims written here
    leave it out; a signature without a dynamic leading batch dim needs ``max_batch_size=0``.
    """
    validate_model_name(name)
    if model_format not in PLATFORMS:
        raise UserError(f"model format {model_format!r} is not supported; use {sorted(PLATFORMS)}")
    if options.max_batch_size < 0:
        raise UserError("max_batch_size must be >= 0 (0 turns batching off)")
    if options.max_batch_size > 0 and not signature.batched:
        raise UserError(
            "max_batch_size > 0 needs every input and output to start with the dynamic 'batch'"
            " dim; set max_batch_size=0 for this model"
        )
    bad_sizes = [s for s in options.preferred_batch_sizes if not 1 <= s <= options.max_batch_size]
    if bad_sizes:
        raise UserError(
            f"preferred batch sizes {bad_sizes} must lie in 1..max_batch_size={options.max_batch_size}"
        )
    if options.instance_kind not in ("KIND_CPU", "KIND_GPU", "KIND_AUTO"):
        raise UserError(
            f"instance kind {options.instance_kind!r} is not valid; use KIND_CPU, KIND_GPU or KIND_AUTO"
        )
    if options.instance_count < 1:
        raise UserError("instance_count must be >= 1")
    platform, backend, filename = PLATFORMS[model_format]
    config = mc.ModelConfig(
        name=name,
        platform=platform,
        backend=backend,
        max_batch_size=options.max_batch_size,
        default_model_filename=filename,
    )
    batched = options.max_batch_size > 0
    config.input.extend(
        mc.ModelInput(name=t.name, data_type=_dtype(t), dims=_dims(t, batched))
        for t in signature.inputs
    )
    config.output.extend(
        mc.ModelOutput(name=t.name, data_type=_dtype(t), dims=_dims(t, batched))
        for t in signature.outputs
    )
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.instance_group.append(
        mc.ModelInstanceGroup(
            kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind),
            count=options.instance_count,
        )
    )
    for key, value in sorted(options.parameters.items()):
        config.parameters[key].string_value = value
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    """Text format, as Triton reads it from ``config.pbtxt``."""
    return text_format.MessageToString(config)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text (raises UserError on a syntax error)."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as err:
        raise UserError(f"config.pbtxt does not parse: {err}") from err


def _dtype(spec: TensorSpec) -> int:
    return mc.DataType.Value(triton_config_dtype(spec.dtype))


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    dims = spec.shape_with_unknowns()
    return dims[1:] if batched else dims
