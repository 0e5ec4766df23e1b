"""Build a Triton model repository from exported, verified model artifacts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components import formats
from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.triton.config import (
    TritonModelOptions,
    build_config,
    to_pbtxt,
    triton_tensor_names,
    validate_model_name,
    warmup_file_name,
)

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ModelEntry:
    """One exported model to place in the repository."""

    model_dir: Path
    model_format: str  # onnx | torchscript | tensorrt
    name: str
    options: TritonModelOptions
    version: int = 1


@dataclass(frozen=True)
class RepositoryResult:
    """Where the models landed inside the repository."""

    repository: Path
    model_name: str
    version: int
    config_text: str
    tensor_names: dict[str, str]  # signature name -> served name (first model)
    onnx_ir_version: int | None = None  # the highest ONNX IR in the repository, if any


def check_model_file(model_dir: Path, model_format: str, signature: ModelSignature) -> None:
    """The file exists and agrees with the signature (ONNX graph I/O; TorchScript outputs)."""
    path = model_dir / formats.model_format(model_format).file
    if not path.is_file():
        raise UserError(f"{path} is missing; pass the {model_format} export's artifact")
    if model_format == "onnx":
        from kfp_serve.components.export.onnx_export import check_graph_against_signature

        check_graph_against_signature(path, signature)
    elif model_format == "torchscript":
        _check_torchscript(path, signature, GoldenSet.load(model_dir))


def _check_torchscript(path: Path, signature: ModelSignature, golden: GoldenSet) -> None:
    import torch

    from kfp_serve.components.errors import first_line
    from kfp_serve.components.export.torchscript_export import run_torchscript
    from kfp_serve.components.staging import quiet_export

    try:
        with quiet_export():
            module = torch.jit.load(str(path), map_location="cpu").eval()
            args = [torch.from_numpy(golden.inputs[n][:1]) for n in signature.input_names]
            with torch.no_grad():
                returned = module(*args)
            if not isinstance(returned, (torch.Tensor, tuple)):
                raise UserError(
                    f"{path.name} returns a {type(returned).__name__}; Triton's pytorch backend"
                    " serves only a tensor or a tuple of tensors (outputs bound by position):"
                    " export it with export_torchscript, which returns a tuple in signature order")
            outputs = run_torchscript(module, signature, golden.slice(0, 1).inputs)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{path.name} does not run on its golden sample: {first_line(err)}") from err
    for spec in signature.outputs:
        if str(outputs[spec.name].dtype) != spec.dtype or outputs[spec.name].ndim != spec.rank:
            raise UserError(f"{path.name} output {spec.name!r} is {outputs[spec.name].dtype} rank"
                            f" {outputs[spec.name].ndim}; the signature says {spec.dtype} rank"
                            f" {spec.rank}")


def build_repository(model_dir: str | Path, model_format: str, repository_dir: str | Path,
                     model_name: str, options: TritonModelOptions,
                     version: int = 1) -> RepositoryResult:
    """A repository holding one model (see :func:`build_multi_model_repository`)."""
    entry = ModelEntry(Path(model_dir), model_format, model_name, options, version)
    return build_multi_model_repository([entry], repository_dir)


def build_multi_model_repository(entries: list[ModelEntry],
                                 repository_dir: str | Path) -> RepositoryResult:
    """Write ``<repository>/<name>/config.pbtxt`` and ``<name>/<version>/<file>`` per model.

    Each config is built through Triton's protobuf schema from the model's signature and checked
    against the model file before anything is written; the repository appears at
    ``repository_dir`` only once complete.
    """
    from kfp_serve.components.staging import staged_directory

    if not entries:
        raise UserError("a repository needs at least one model")
    names = [validate_model_name(e.name) for e in entries]
    if len(set(names)) != len(names):
        raise UserError(f"model names in one repository must differ: {names}")
    planned = []
    for entry in entries:
        if entry.version < 1:
            raise UserError(f"version {entry.version} must be >= 1 (Triton version folders are 1, 2, ...)")
        formats.model_format(entry.model_format)
        signature = ModelSignature.load(entry.model_dir)
        golden = GoldenSet.load(entry.model_dir)
        sample = golden.slice(0, 1)
        config = build_config(entry.name, entry.model_format, signature, entry.options,
                              {k: v.shape for k, v in sample.inputs.items()})
        check_model_file(entry.model_dir, entry.model_format, signature)
        planned.append((entry, config, triton_tensor_names(entry.model_format, signature), sample))
    with staged_directory(repository_dir) as staging:
        for entry, config, tensor_names, sample in planned:
            model_root = staging / entry.name
            version_dir = model_root / str(entry.version)
            version_dir.mkdir(parents=True)
            filename = formats.model_format(entry.model_format).file
            shutil.copy2(entry.model_dir / filename, version_dir / filename)
            external = entry.model_dir / formats.ONNX_EXTERNAL_DATA_FILE
            if entry.model_format == "onnx" and external.is_file():  # weights of models > 2 GiB
                shutil.copy2(external, version_dir / formats.ONNX_EXTERNAL_DATA_FILE)
            if entry.options.warmup:
                (model_root / "warmup").mkdir()
                for name, value in sample.inputs.items():
                    target = model_root / "warmup" / warmup_file_name(tensor_names[name])
                    target.write_bytes(value.astype(value.dtype.newbyteorder("<")).tobytes())
            (model_root / CONFIG_FILE).write_text(to_pbtxt(config))
    first, config, tensor_names, _ = planned[0]
    return RepositoryResult(Path(repository_dir), first.name, first.version, to_pbtxt(config),
                            tensor_names, formats.highest_onnx_ir(repository_dir))
