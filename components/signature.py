"""The model signature: named, typed tensors with fixed and dynamic dimensions.

A dimension is an ``int`` (fixed) or a ``str`` (dynamic, named — tensors that share a name share
the size, as in ONNX ``dim_param`` and ``torch.export.Dim``). The first dimension is the batch
dimension when it is named :data:`BATCH` on every input and output.

The signature is written beside every model artifact as ``signature.json`` and read by export,
Triton config generation and validation, so nobody re-guesses names, dtypes or batch dimensions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from kfp_serve.components.errors import UserError

Dim = Union[int, str]
BATCH = "batch"
SIGNATURE_FILE = "signature.json"

# numpy dtype name -> (Triton config enum name, Open Inference Protocol datatype, ONNX elem type)
_DTYPES: dict[str, tuple[str, str, int]] = {
    "float32": ("TYPE_FP32", "FP32", 1),
    "float16": ("TYPE_FP16", "FP16", 10),
    "float64": ("TYPE_FP64", "FP64", 11),
    "int64": ("TYPE_INT64", "INT64", 7),
    "int32": ("TYPE_INT32", "INT32", 6),
    "int8": ("TYPE_INT8", "INT8", 3),
    "uint8": ("TYPE_UINT8", "UINT8", 2),
    "bool": ("TYPE_BOOL", "BOOL", 9),
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")


def supported_dtypes() -> list[str]:
    """The numpy dtype names a signature may use."""
    return sorted(_DTYPES)


def triton_config_dtype(dtype: str) -> str:
    """``float32`` -> ``TYPE_FP32`` (Triton ``config.pbtxt``)."""
    return _DTYPES[dtype][0]


def protocol_dtype(dtype: str) -> str:
    """``float32`` -> ``FP32`` (Open Inference Protocol v2)."""
    return _DTYPES[dtype][1]


def dtype_from_protocol(datatype: str) -> str:
    """``FP32`` -> ``float32``; raises UserError for a type the suite does not handle."""
    for name, (_, proto, _) in _DTYPES.items():
        if proto == datatype:
            return name
    raise UserError(f"unsupported tensor datatype {datatype!r}; supported: {supported_dtypes()}")


def dtype_from_onnx(elem_type: int) -> str:
    """``1`` -> ``float32``; raises UserError for an ONNX type the suite does not handle."""
    for name, (_, _, onnx_type) in _DTYPES.items():
        if onnx_type == elem_type:
            return name
    raise UserError(f"unsupported ONNX element type {elem_type}; supported: {supported_dtypes()}")


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its numpy dtype name and dims (``int`` fixed, ``str`` dynamic).

    An output may be ``masked_by`` an input whose dims lead its own (``logits`` [batch, seq,
    vocab] by ``attention_mask`` [batch, seq]): where that input is 0 the output's values are
    read by no caller (padding), so verification and validation compare only the others and say
    how many they skipped.
    """

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    masked_by: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise UserError(
                f"tensor name {self.name!r} is not valid; use letters, digits and _ . : / -"
                " starting with a letter or _"
            )
        if self.dtype not in _DTYPES:
            raise UserError(
                f"tensor {self.name!r} has dtype {self.dtype!r}; use one of {supported_dtypes()}"
            )
        object.__setattr__(self, "dims", tuple(self.dims))
        for dim in self.dims:
            if isinstance(dim, bool) or not isinstance(dim, (int, str)):
                raise UserError(f"tensor {self.name!r}: dim {dim!r} must be an int or a name")
            if isinstance(dim, int) and dim < 1:
                raise UserError(
                    f"tensor {self.name!r}: fixed dim {dim} must be >= 1; name dynamic dims"
                    f" (e.g. {BATCH!r})"
                )

    @property
    def rank(self) -> int:
        return len(self.dims)

    def shape_with_unknowns(self) -> list[int]:
        """Dims with every dynamic dim as -1 (the Triton / Open Inference Protocol spelling)."""
        return [d if isinstance(d, int) else -1 for d in self.dims]

    def matches_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete shape fits these dims (same rank, equal fixed dims)."""
        if len(shape) != self.rank:
            return False
        return all(isinstance(d, str) or d == s for d, s in zip(self.dims, shape))

    def to_dict(self) -> dict:
        data = {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}
        if self.masked_by:
            data["masked_by"] = self.masked_by
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        try:
            # a whole number that travelled as a float (KFP's metadata turns ints into floats)
            dims = tuple(int(d) if isinstance(d, float) and d.is_integer() else d for d in data["dims"])
            return cls(name=data["name"], dtype=data["dtype"], dims=dims,
                       masked_by=data.get("masked_by") or None)
        except (KeyError, TypeError) as err:
            raise UserError(
                f"tensor spec {data!r} needs 'name', 'dtype' and 'dims' ({err})"
            ) from err


@dataclass(frozen=True)
class ModelSignature:
    """The inputs and outputs of a model, in call order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not self.inputs or not self.outputs:
            raise UserError("a signature needs at least one input and one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UserError(f"tensor names must be unique across inputs and outputs: {duplicates}")
        for spec in self.inputs:
            if spec.masked_by:
                raise UserError(f"input {spec.name!r} has masked_by; only outputs are masked (by an"
                                " input)")
        for spec in self.outputs:
            if spec.masked_by:
                _check_mask(spec, self.inputs)

    @property
    def batched(self) -> bool:
        """True when every input and output has the dynamic batch dim first."""
        return all(t.dims and t.dims[0] == BATCH for t in (*self.inputs, *self.outputs))

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, "output")

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelSignature:
        if not isinstance(data, dict) or "inputs" not in data or "outputs" not in data:
            raise UserError("a signature is a JSON object with 'inputs' and 'outputs' lists")
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            metadata=dict(data.get("metadata", {})),
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SIGNATURE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelSignature:
        path = Path(directory) / SIGNATURE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise UserError(
                f"{path} is missing; a model artifact must carry its signature"
                " (write it with kfp_serve.components.model_artifact.save_torch_model)"
            ) from err
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err}); re-export the model") from err
        return cls.from_dict(data)


def _by_name(specs: tuple[TensorSpec, ...], name: str, kind: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise UserError(f"the signature has no {kind} named {name!r}; it has {[s.name for s in specs]}")


def _check_mask(output: TensorSpec, inputs: tuple[TensorSpec, ...]) -> None:
    """A mask is an input whose dims lead the output's, so each of its values covers the output
    values behind it."""
    mask = next((spec for spec in inputs if spec.name == output.masked_by), None)
    if mask is None:
        raise UserError(f"output {output.name!r} is masked_by {output.masked_by!r}, which is not an"
                        f" input; use one of {[s.name for s in inputs]}")
    if mask.dims != output.dims[:mask.rank]:
        raise UserError(f"output {output.name!r} is masked_by {mask.name!r}, but the mask's dims"
                        f" {list(mask.dims)} do not lead the output's {list(output.dims)}; a mask"
                        " covers the output's first dims (e.g. [batch, seq] for [batch, seq, vocab])")
