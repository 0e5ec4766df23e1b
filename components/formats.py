"""Model formats: one table of what each export writes and which server loads it.

Every module that names a model file (exports, Triton repositories, .mar archives, the profiler,
the local backends) reads it here, so a file name is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import UserError

#: the model artifact's self-contained torch.export program (``save_torch_model``)
TORCH_PROGRAM_FILE = "model.pt2"
#: the model artifact's optional TorchScript module, scripted or traced at save time (the
#: source of ``export_torchscript(method="script")``; not the served ``model.pt``)
SCRIPTED_SOURCE_FILE = "model.ts"
#: weights of an ONNX graph over 2 GiB, beside ``model.onnx``
ONNX_EXTERNAL_DATA_FILE = "model.onnx.data"


@dataclass(frozen=True)
class ModelFormat:
    """One servable format: its artifact kind, its file, and how Triton loads it."""

    name: str
    artifact_kind: str
    file: str  # the file name the serving backend loads
    triton_platform: str
    triton_backend: str
    torchserve: bool  # a .mar archive can carry it


FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("onnx", "OnnxModel", "model.onnx", "onnxruntime_onnx", "onnxruntime", True),
    ModelFormat("torchscript", "TorchScriptModel", "model.pt", "pytorch_libtorch", "pytorch", True),
    ModelFormat("tensorrt", "TensorRTModel", "model.plan", "tensorrt_plan", "tensorrt", False),
)}
EXPORTED_KINDS = tuple(f.artifact_kind for f in FORMATS.values())


def model_format(name: str) -> ModelFormat:
    """The format called ``name`` (UserError naming the known ones otherwise)."""
    if name not in FORMATS:
        raise UserError(f"model format {name!r} is not supported; use one of {sorted(FORMATS)}")
    return FORMATS[name]


def format_of_kind(kind: str) -> ModelFormat:
    """The format an exported artifact of ``kind`` (e.g. ``OnnxModel``) holds."""
    for candidate in FORMATS.values():
        if candidate.artifact_kind == kind:
            return candidate
    raise UserError(f"a {kind} holds no servable model format; use one of {list(EXPORTED_KINDS)}")


def onnx_ir_version(model_file: str | Path) -> int:
    """The IR version of an ONNX file (its graph only: external weights are not read). An older
    onnxruntime refuses a newer IR, so deploy steps compare it with the runtime's Triton."""
    import onnx

    return onnx.load(str(model_file), load_external_data=False).ir_version


def highest_onnx_ir(repository: str | Path) -> int | None:
    """The highest IR of the ONNX models in a Triton repository (``<model>/<version>/model.onnx``);
    None when it holds none."""
    found = [onnx_ir_version(p) for p in Path(repository).glob(f"*/*/{FORMATS['onnx'].file}")]
    return max(found, default=None)
