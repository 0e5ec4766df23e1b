"""The model artifact contract: what a training step hands to the rest of the suite.

A model artifact is a directory holding:

- ``model.pt2``: the model as a self-contained ``torch.export`` program (no Python class needed
  to load it) with the signature's dynamic dims, returning a tuple in signature order;
- ``model.ts``: the model as TorchScript (traced from the eager model and checked at a second
  batch size and dim size, or scripted), returning a tuple in signature order. Either file may
  be missing where its tool cannot take the model (``artifact.json`` says why), never both;
- ``signature.json``: see :mod:`kfp_serve.components.signature`;
- ``golden.npz``: sample inputs and the eager model's reference outputs, computed on the CPU
  without autocast in the model's own precision (fp32, or float16 for a float16 model, stored
  as the signature's dtype), and the same samples with other dynamic dims cut shorter, where
  there are any;
- ``artifact.json``: how each file was made, and why one is missing.

Users' own training components call :func:`save_torch_model` to write one. The model is called
with its inputs by name where its ``forward`` names them all (Hugging Face models), else in
signature order; it may return a tensor, a tuple in signature order, or a dict or ``ModelOutput``
whose keys are the signature's output names (in any order).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfp_serve.components.capture import (
    TORCHSCRIPT_METHODS,
    Captured,
    capture_program,
    capture_torchscript,
    run_module,
    signature_module,
)
from kfp_serve.components.errors import UserError, first_line
from kfp_serve.components.formats import SCRIPTED_SOURCE_FILE, TORCH_PROGRAM_FILE
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.verify import mask_over, visible_positions

if TYPE_CHECKING:
    import torch

ARTIFACT_INFO_FILE = "artifact.json"


def _as_numpy(golden_inputs: Mapping[str, Any], signature: ModelSignature) -> dict[str, np.ndarray]:
    """Golden inputs given as torch tensors or numpy arrays, checked against the signature with
    the reason when they disagree."""
    import torch

    given = set(golden_inputs)
    if given != set(signature.input_names):
        raise UserError(f"golden inputs are {sorted(given)} but the signature's inputs are"
                        f" {signature.input_names}; pass one array per signature input")
    arrays = {}
    for spec in signature.inputs:
        value = golden_inputs[spec.name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if str(value.dtype) != spec.dtype:
            raise UserError(f"golden input {spec.name!r} is {value.dtype} but the signature says"
                            f" {spec.dtype}; convert it (e.g. .astype('{spec.dtype}')) or change"
                            " the signature")
        if value.ndim != spec.rank or not spec.matches_shape(value.shape):
            raise UserError(f"golden input {spec.name!r} has shape {list(value.shape)} but the"
                            f" signature says {list(spec.dims)} (rank {spec.rank})")
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str) and value.shape[axis] < 2:
                raise UserError(
                    f"golden input {spec.name!r} has size {value.shape[axis]} on its dynamic dim"
                    f" {dim!r} (axis {axis}); give it at least 2 (torch.export fixes a size-1 dim"
                    " to 1)")
        arrays[spec.name] = np.ascontiguousarray(value)
    return arrays


def _resized_inputs(signature: ModelSignature,
                    inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The inputs with every dynamic dim past the first axis (a sequence, an image side) cut
    shorter, consistently across inputs that share the dim's name; None when there is none."""
    sizes: dict[str, int] = {}
    for spec in signature.inputs:
        for axis, dim in enumerate(spec.dims[1:], start=1):
            if isinstance(dim, str):
                size = inputs[spec.name].shape[axis]
                sizes[dim] = size - max(1, size // 3)
    if not sizes:
        return None
    resized = {}
    for spec in signature.inputs:
        index = tuple(slice(0, sizes[d]) if isinstance(d, str) and axis else slice(None)
                      for axis, d in enumerate(spec.dims))
        resized[spec.name] = np.ascontiguousarray(inputs[spec.name][index])
    return resized


def save_torch_model(
    module: torch.nn.Module,
    signature: ModelSignature,
    golden_inputs: Mapping[str, Any],
    directory: str | Path,
    torchscript: str | None = "auto",
) -> GoldenSet:
    """Write a model artifact: ``model.pt2`` and/or ``model.ts``, ``signature.json``,
    ``golden.npz`` and ``artifact.json``.

    Args:
        module: The trained model. Its inputs are passed by name when ``forward`` names them all
            (e.g. ``input_ids``, ``attention_mask``), else in signature order; it returns a
            tensor, a tuple in signature order, or a dict/``ModelOutput`` by output name.
        signature: Names, dtypes and dims (dynamic dims named) of inputs and outputs.
        golden_inputs: Sample inputs by name (torch tensors or numpy arrays), batch first; every
            dynamic dim at least 2 (use a batch of 2 or more).
        directory: Where to write the files (created if missing; replaced only when complete).
        torchscript: ``"auto"`` traces the eager model (checked at batch 1 and at a second
            size of the other dynamic dims) and scripts it where tracing cannot hold (data-
            dependent flow); ``"trace"`` or ``"script"`` only that way, failing if it cannot;
            None writes no ``model.ts``.

    Returns:
        The golden set, with reference outputs from the eager module.

    Raises:
        UserError: bad inputs, outputs that do not match the signature, NaN references, or a
            model neither torch.export nor TorchScript can capture (naming the dim and why).
    """
    import torch

    from kfp_serve.components.staging import quiet_export, staged_directory

    if torchscript is not None and torchscript not in TORCHSCRIPT_METHODS:
        raise UserError(f"torchscript={torchscript!r}; use one of {list(TORCHSCRIPT_METHODS)} or None")
    inputs = _as_numpy(golden_inputs, signature)
    # A copy on the CPU: the artifact must load anywhere, and references computed on a GPU
    # (TF32 convolutions, fused kernels) would be off by ~1e-3; the caller's module is untouched.
    # Its dtype stays: a float16 model keeps the float16 signature it was saved with.
    on_accelerator = any(t.device.type != "cpu" for t in (*module.parameters(), *module.buffers()))
    module = copy.deepcopy(module).cpu().eval() if on_accelerator else module.eval()
    wrapped = signature_module(module, signature)
    golden = GoldenSet(inputs=inputs, outputs=run_module(wrapped, signature, inputs))
    golden.check_against(signature)
    visible = visible_positions(signature, inputs)
    for name, value in golden.outputs.items():
        shown = value[mask_over(visible[name], value.shape)] if name in visible else value
        if not np.all(np.isfinite(shown)):
            raise UserError(f"the eager model produced NaN/Inf in output {name!r} on the golden"
                            " inputs; fix the model or choose other sample inputs")
    resized = _resized_inputs(signature, inputs)
    if resized is not None:
        try:
            golden.resized = GoldenSet(resized, run_module(wrapped, signature, resized))
            golden.resized.check_against(signature)
        except Exception:  # a model that needs its full size (e.g. a fixed position table)
            golden.resized = None
    saved = Captured()
    with quiet_export():
        capture_program(wrapped, signature, golden, saved)
    if torchscript is not None:
        capture_torchscript(wrapped, module, signature, golden, torchscript, saved)
        if torchscript != "auto" and saved.torchscript is None:
            raise UserError(f"torch.jit.{torchscript} cannot take the model:"
                            f" {saved.info['torchscript_problem'].split(': ', 1)[-1]}")
    if saved.program is None and saved.torchscript is None:
        ts = saved.info.get("torchscript_problem", "not asked for (torchscript=None)")
        raise UserError(f"{saved.info['program_problem']}; TorchScript cannot take it either ({ts})")
    with staged_directory(directory) as staging, quiet_export():
        if saved.program is not None:
            torch.export.save(saved.program, str(staging / TORCH_PROGRAM_FILE))
        if saved.torchscript is not None:
            torch.jit.save(saved.torchscript, str(staging / SCRIPTED_SOURCE_FILE))
        (staging / ARTIFACT_INFO_FILE).write_text(json.dumps(saved.info, indent=2, sort_keys=True))
        signature.save(staging)
        golden.save(staging)
    for key in ("program_problem", "torchscript_problem", "torchscript_warning"):
        if key in saved.info:
            print(f"note: {saved.info[key]}")
    return golden


@dataclass
class ModelArtifact:
    """A loaded model artifact: its signature, golden set, and the files it has."""

    directory: Path
    signature: ModelSignature
    golden: GoldenSet
    info: dict[str, str]

    @property
    def has_program(self) -> bool:
        return (self.directory / TORCH_PROGRAM_FILE).is_file()

    @property
    def has_torchscript(self) -> bool:
        return (self.directory / SCRIPTED_SOURCE_FILE).is_file()

    def program(self) -> Any:
        """The torch.export program (UserError naming why when the artifact has none)."""
        import torch

        path = self.directory / TORCH_PROGRAM_FILE
        if not path.is_file():
            why = self.info.get("program_problem")
            raise UserError(f"{path} is missing" + (f" ({why})" if why else "; the model artifact"
                            " must hold a torch.export program written by save_torch_model"))
        try:
            return torch.export.load(str(path))
        except Exception as err:  # corrupt zip, wrong file type, incompatible version
            raise UserError(f"{path} is not a loadable torch.export program ({type(err).__name__}:"
                            f" {first_line(err)}); re-save the model with save_torch_model") from err

    def torchscript(self) -> Any:
        """The TorchScript module saved with the model (UserError naming why when none)."""
        import torch

        from kfp_serve.components.staging import quiet_export

        path = self.directory / SCRIPTED_SOURCE_FILE
        if not path.is_file():
            why = self.info.get("torchscript_problem", "it was saved with torchscript=None")
            raise UserError(f"{path} is missing: {why}; serve the ONNX export, or make the model"
                            " traceable or scriptable")
        try:
            with torch.no_grad(), quiet_export():
                return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:
            raise UserError(f"{path} is not a loadable TorchScript file ({first_line(err)})") from err

    def module(self) -> Any:
        """A runnable module: the exported program's, else the TorchScript one."""
        return self.program().module() if self.has_program else self.torchscript()


def open_model(directory: str | Path) -> ModelArtifact:
    """Load and check a model artifact: the signature, golden set and at least one model file,
    whose outputs agree with the signature."""
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"{directory} does not exist; pass the folder save_torch_model wrote"
                        " (model.pt2, signature.json, golden.npz)")
    if not directory.is_dir():
        raise UserError(f"{directory} is a file; pass the folder save_torch_model wrote around it"
                        " (model.pt2, signature.json, golden.npz), not one file")
    if not (directory / TORCH_PROGRAM_FILE).is_file() and not (directory / SCRIPTED_SOURCE_FILE).is_file():
        raise UserError(f"{directory / TORCH_PROGRAM_FILE} is missing; the model artifact must hold"
                        " a torch.export program written by save_torch_model")
    signature = ModelSignature.load(directory)
    golden = GoldenSet.load(directory)
    golden.check_against(signature)
    info_path = directory / ARTIFACT_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    artifact = ModelArtifact(directory, signature, golden, info)
    _check_outputs_match_signature(artifact.module(), signature, golden)
    return artifact


def _check_outputs_match_signature(module: Any, signature: ModelSignature, golden: GoldenSet) -> None:
    """The model must return as many outputs, of the dtypes and ranks, as the signature says."""
    try:
        outputs = run_module(module, signature, golden.slice(0, 1).inputs)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"the model does not run on its own golden inputs ({first_line(err)}); the"
                        " signature's inputs may not match the model") from err
    for spec in signature.outputs:
        value = outputs[spec.name]
        if str(value.dtype) != spec.dtype or value.ndim != spec.rank:
            raise UserError(f"the model's output {spec.name!r} is {value.dtype} rank {value.ndim} but"
                            f" the signature says {spec.dtype} rank {spec.rank}")
    _check_reference_is_current(outputs, golden.slice(0, 1).outputs)


#: far looser than any verification tolerance: only a reference from another model fails it
STALE_ATOL, STALE_RTOL = 1e-2, 1e-2


def _check_reference_is_current(computed: dict, reference: dict) -> None:
    """The golden outputs are what this model computes on the golden inputs (else every export
    would be blamed for disagreeing, when the reference is from a model since changed)."""
    import numpy as np

    for name, expected in reference.items():
        got = np.asarray(computed[name])
        if expected.dtype.kind not in "fc" or got.shape != expected.shape:
            continue
        wide, ref = got.astype(np.float64), expected.astype(np.float64)
        off = np.abs(wide - ref) > STALE_ATOL + STALE_RTOL * np.abs(ref)
        off &= ~(np.isnan(wide) & np.isnan(ref))
        if off.any():
            raise UserError(
                f"golden.npz's output {name!r} is not what the model itself computes on its golden"
                f" inputs ({int(off.sum())} of {off.size} values off by more than"
                f" {STALE_ATOL:g} + {STALE_RTOL:g}*|reference|): the reference is stale (the"
                " model changed after it was saved); save the model again (save_torch_model)")
