"""Triton ``config.pbtxt`` built through Triton's own protobuf schema (``model_config_pb2``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kfp_serve.components import formats
from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature, TensorSpec, triton_config_dtype

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_POLICY = re.compile(r"^(latest(:\d+)?|all|specific:\d+(,\d+)*)$")


class InstanceKind(str, Enum):
    """Where Triton places a model's instances (``instance_group.kind``)."""

    CPU = "KIND_CPU"
    GPU = "KIND_GPU"
    AUTO = "KIND_AUTO"

    @classmethod
    def parse(cls, value: str | InstanceKind) -> InstanceKind:
        try:
            return cls(value)
        except ValueError:
            raise UserError(f"instance kind {value!r} is not valid; use"
                            f" {', '.join(k.value for k in cls)}") from None


#: the settings tune_triton_config measures; the rest stay as the user asked
TUNED_FIELDS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_microseconds",
                "dynamic_batching", "instance_count", "parameters")


@dataclass(frozen=True)
class TritonModelOptions:
    """What the user chooses about serving; everything tensor-related comes from the signature.

    Checks itself on construction: a bad value is a one-line UserError here, not a Triton load
    error later.
    """

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 100
    dynamic_batching: bool = True  # off: each request runs as sent (the queue delay is unused)
    instance_kind: InstanceKind = InstanceKind.CPU
    instance_count: int = 1
    parameters: dict[str, str] = field(default_factory=dict)
    version_policy: str = "latest:1"
    warmup: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "instance_kind", InstanceKind.parse(self.instance_kind))
        object.__setattr__(self, "preferred_batch_sizes", tuple(self.preferred_batch_sizes))
        if self.max_batch_size < 0:
            raise UserError("max_batch_size must be >= 0 (0 turns batching off)")
        bad_sizes = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad_sizes:
            raise UserError(f"preferred batch sizes {bad_sizes} must lie in"
                            f" 1..max_batch_size={self.max_batch_size}")
        if not self.dynamic_batching and self.preferred_batch_sizes:
            raise UserError("preferred batch sizes belong to dynamic batching; turn dynamic_batching"
                            " on or leave them unset")
        if self.max_queue_delay_microseconds < 0:
            raise UserError("max_queue_delay_microseconds must be >= 0")
        if self.instance_count < 1:
            raise UserError("instance_count must be >= 1")
        parse_version_policy(self.version_policy)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON, artifact metadata); :meth:`from_dict` reads it back."""
        return {**asdict(self), "instance_kind": self.instance_kind.value,
                "preferred_batch_sizes": list(self.preferred_batch_sizes)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TritonModelOptions:
        """Options from plain data, where numbers may arrive as floats (artifact metadata);
        unknown keys are refused."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserError(f"unknown Triton model options {unknown}")
        coerced = dict(values)
        for key in ("max_batch_size", "max_queue_delay_microseconds", "instance_count"):
            if key in coerced:
                coerced[key] = int(coerced[key])
        if "preferred_batch_sizes" in coerced:
            coerced["preferred_batch_sizes"] = tuple(int(b) for b in coerced["preferred_batch_sizes"])
        if "parameters" in coerced:
            coerced["parameters"] = {str(k): str(v) for k, v in coerced["parameters"].items()}
        for flag in ("dynamic_batching", "warmup"):
            if flag in coerced:
                coerced[flag] = bool(coerced[flag])
        return cls(**coerced)

    def with_tuned(self, tuned: TritonModelOptions) -> TritonModelOptions:
        """These options with the settings a tuner measured (batching, queue delay, preferred
        sizes, instances and threads) taken from ``tuned``; the instance kind, version policy
        and warm-up stay as asked here."""
        return replace(self, **{name: getattr(tuned, name) for name in TUNED_FIELDS})


def validate_model_name(name: str) -> str:
    """Raise UserError unless ``name`` is usable as a Triton model (and directory) name."""
    if not MODEL_NAME_RE.match(name or ""):
        raise UserError(
            f"model name {name!r} is not valid for Triton; use 1-128 letters, digits, _ . -"
            " not starting with . or -"
        )
    return name


def triton_tensor_names(model_format: str, signature: ModelSignature) -> dict[str, str]:
    """Signature name -> the tensor name the server uses.

    Triton's pytorch_libtorch backend binds TorchScript tensors by position and requires the
    ``<name>__<index>`` convention; every other platform keeps the signature's names.
    """
    if model_format != "torchscript":
        return {t.name: t.name for t in (*signature.inputs, *signature.outputs)}
    names = {t.name: f"{t.name}__{i}" for i, t in enumerate(signature.inputs)}
    names.update({t.name: f"{t.name}__{i}" for i, t in enumerate(signature.outputs)})
    return names


def parse_version_policy(text: str) -> mc.ModelVersionPolicy:
    """``latest`` / ``latest:N`` / ``all`` / ``specific:1,3`` -> ModelVersionPolicy."""
    if not _POLICY.match(text):
        raise UserError(f"version policy {text!r} is not valid; use latest, latest:N, all or"
                        " specific:1,2")
    if text.startswith("latest"):
        count = int(text.partition(":")[2] or 1)
        return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=count))
    if text == "all":
        return mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All())
    versions = [int(v) for v in text.partition(":")[2].split(",")]
    return mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=versions))


def warmup_file_name(tensor: str) -> str:
    return f"{tensor}.bin"


def build_config(name: str, model_format: str, signature: ModelSignature,
                 options: TritonModelOptions,
                 warmup_shapes: dict[str, tuple[int, ...]] | None = None) -> mc.ModelConfig:
    """The ModelConfig message for one model.

    With ``max_batch_size > 0`` Triton adds the batch dimension itself, so the dims written here
    leave it out; a signature without a dynamic leading batch dim needs ``max_batch_size=0``.
    With ``options.warmup`` Triton runs one golden sample (files under ``<model>/warmup/``,
    shapes in ``warmup_shapes`` with a batch of 1) through each instance before it is ready.
    """
    validate_model_name(name)
    served = formats.model_format(model_format)
    if options.max_batch_size > 0 and not signature.batched:
        raise UserError(
            "max_batch_size > 0 needs every input and output to start with the dynamic 'batch'"
            " dim; set max_batch_size=0 for this model"
        )
    scalars = [t.name for t in (*signature.inputs, *signature.outputs) if t.rank == 1]
    if options.max_batch_size > 0 and scalars:
        # Triton's dims may not be empty: with batching, a [batch] tensor travels as [batch, 1]
        # (dims [1]), which clients of this signature do not send
        raise UserError(
            f"{scalars} hold one value per row ([batch]); Triton's batching wants at least one"
            " more dim: set max_batch_size=0 (the batch dim stays dynamic, requests are not"
            " batched together) or give them a trailing dim of 1 in the model ([batch, 1])"
        )
    config = mc.ModelConfig(
        name=name,
        platform=served.triton_platform,
        backend=served.triton_backend,
        max_batch_size=options.max_batch_size,
        default_model_filename=served.file,
        version_policy=parse_version_policy(options.version_policy),
    )
    batched = options.max_batch_size > 0
    names = triton_tensor_names(model_format, signature)
    config.input.extend(
        mc.ModelInput(name=names[t.name], data_type=_dtype(t), dims=_dims(t, batched))
        for t in signature.inputs
    )
    config.output.extend(
        mc.ModelOutput(name=names[t.name], data_type=_dtype(t), dims=_dims(t, batched))
        for t in signature.outputs
    )
    if options.warmup:
        if not warmup_shapes:
            raise UserError("warmup needs the golden sample's shapes")
        warmup = mc.ModelWarmup(name="golden_sample", batch_size=1, count=1)
        for spec in signature.inputs:
            dims = list(warmup_shapes[spec.name])
            warmup.inputs[names[spec.name]].CopyFrom(mc.ModelWarmup.Input(
                data_type=_dtype(spec), dims=dims[1:] if batched else dims,
                input_data_file=warmup_file_name(names[spec.name])))
        config.model_warmup.append(warmup)
    if batched and options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.instance_group.append(
        mc.ModelInstanceGroup(
            kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind.value),
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
    """-1 for dynamic dims; without the batch dim when Triton batches."""
    dims = spec.shape_with_unknowns()
    return dims[1:] if batched else dims
