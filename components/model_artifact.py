"""The model artifact contract: what a training step hands to the rest of the suite.

A model artifact is a directory holding:

- ``model.pt2`` — the model as a self-contained ``torch.export`` program (no Python class needed
  to load it), exported with the signature's dynamic dims;
- ``signature.json`` — see :mod:`kfp_serve.components.signature`;
- ``golden.npz`` — sample inputs and the eager model's fp32 reference outputs;
- optionally ``model.ts`` — the model as TorchScript, scripted or traced where the Python class
  is available (``torchscript="script"`` is the only way to get a scripted model later, since
  scripting needs the class; the legacy ONNX exporter uses it too).

Users' own training components call :func:`save_torch_model` to write one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfp_serve.components.errors import UserError, first_line
from kfp_serve.components.formats import SCRIPTED_SOURCE_FILE, TORCH_PROGRAM_FILE
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature

if TYPE_CHECKING:
    import torch

TORCHSCRIPT_METHODS = ("script", "trace")


def _dynamic_shapes(signature: ModelSignature) -> tuple[dict[int, Any], ...]:
    """Every named dim is ``Dim.DYNAMIC``: it must stay dynamic, while torch.export may infer its
    range (e.g. ``seq <= 512`` from a position table) and equalities between inputs."""
    import torch

    return tuple(
        {axis: torch.export.Dim.DYNAMIC for axis, dim in enumerate(spec.dims) if isinstance(dim, str)}
        for spec in signature.inputs
    )


def outputs_by_name(result: Any, signature: ModelSignature) -> dict[str, np.ndarray]:
    """A model's return value (a tensor, a tuple in signature order, or a dict) as named numpy
    arrays; UserError when it does not match the signature's outputs."""
    import torch

    if isinstance(result, torch.Tensor):
        result = (result,)
    if isinstance(result, dict):
        values = [result.get(name) for name in signature.output_names]
    else:
        values = list(result)
    if len(values) != len(signature.outputs) or any(v is None for v in values):
        raise UserError(
            f"the model returned {len(values)} output(s) but the signature names"
            f" {signature.output_names}; return a tensor, a tuple in that order or a dict"
        )
    return {name: v.detach().cpu().numpy() for name, v in zip(signature.output_names, values)}


def _on_accelerator(module: torch.nn.Module) -> bool:
    return any(t.device.type != "cpu" for t in (*module.parameters(), *module.buffers()))


def run_eager(module: torch.nn.Module, signature: ModelSignature,
              inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the module in fp32 without autocast and return named numpy outputs."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in signature.input_names)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        return outputs_by_name(module(*args), signature)


def save_torch_model(
    module: torch.nn.Module,
    signature: ModelSignature,
    golden_inputs: dict[str, np.ndarray],
    directory: str | Path,
    torchscript: str | None = None,
) -> GoldenSet:
    """Write a model artifact: ``model.pt2``, ``signature.json`` and ``golden.npz``.

    Args:
        module: The trained model; called positionally with the inputs in signature order.
        signature: Names, dtypes and dims (dynamic dims named) of inputs and outputs.
        golden_inputs: Sample inputs by name, batch first. Use a batch of 2 or more so the
            exported program keeps the batch dim dynamic.
        directory: Where to write the files (created if missing).
        torchscript: Also write ``model.ts``: ``"script"`` (torch.jit.script; keeps control
            flow, needs scriptable code) or ``"trace"`` (torch.jit.trace on the golden inputs).

    Returns:
        The golden set, with reference outputs from the eager module.
    """
    import torch

    from kfp_serve.components.staging import quiet_export

    if torchscript is not None and torchscript not in TORCHSCRIPT_METHODS:
        raise UserError(f"torchscript={torchscript!r}; use one of {list(TORCHSCRIPT_METHODS)} or None")
    # A copy on the CPU: the artifact must load anywhere, and references computed on a GPU
    # (TF32 convolutions, fused kernels) would be off by ~1e-3 — the caller's module is untouched.
    module = copy.deepcopy(module).cpu().float().eval() if _on_accelerator(module) else module.eval()
    golden = GoldenSet(inputs=dict(golden_inputs), outputs=run_eager(module, signature, golden_inputs))
    golden.check_against(signature)
    for name, value in golden.outputs.items():
        if not np.all(np.isfinite(value)):
            raise UserError(
                f"the eager model produced NaN/Inf in output {name!r} on the golden inputs;"
                " fix the model or choose other sample inputs"
            )
    if signature.batched and golden.batch_size < 2:
        raise UserError("golden inputs need a batch of at least 2 to keep the batch dim dynamic")
    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    try:
        program = torch.export.export(module, args, dynamic_shapes=_dynamic_shapes(signature))
    except Exception as err:  # torch raises many types; translate at this one boundary
        raise UserError(f"torch.export could not capture the model: {first_line(err)}") from err
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out / TORCH_PROGRAM_FILE))
    if torchscript is not None:
        try:
            with quiet_export(), torch.no_grad():
                scripted = (torch.jit.script(module) if torchscript == "script"
                            else torch.jit.trace(module, args, check_trace=False))
        except Exception as err:
            raise UserError(f"torch.jit.{torchscript} failed: {first_line(err)}") from err
        with quiet_export():
            torch.jit.save(scripted, str(out / SCRIPTED_SOURCE_FILE))
    signature.save(out)
    golden.save(out)
    return golden


def load_torchscript(directory: str | Path) -> Any:
    """The artifact's ``model.ts`` (UserError when it was not saved or does not load)."""
    import torch

    path = Path(directory) / SCRIPTED_SOURCE_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing; save the model with save_torch_model(..., torchscript='script')"
            " (scripting needs the Python class, so it happens where the model is trained)"
        )
    from kfp_serve.components.staging import quiet_export

    try:
        with torch.no_grad(), quiet_export():
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise UserError(f"{path} is not a loadable TorchScript file ({first_line(err)})") from err


def load_torch_model(directory: str | Path) -> tuple[Any, ModelSignature, GoldenSet]:
    """Load ``(ExportedProgram, signature, golden set)`` from a model artifact directory."""
    import torch

    path = Path(directory) / TORCH_PROGRAM_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing; the model artifact must hold a torch.export program"
            " written by save_torch_model"
        )
    signature = ModelSignature.load(directory)
    golden = GoldenSet.load(directory)
    golden.check_against(signature)
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # corrupt zip, wrong file type, incompatible version
        raise UserError(
            f"{path} is not a loadable torch.export program ({type(err).__name__}:"
            f" {first_line(err)}); re-save the model with save_torch_model"
        ) from err
    _check_outputs_match_signature(program, signature, golden)
    return program, signature, golden


def _check_outputs_match_signature(program: Any, signature: ModelSignature,
                                   golden: GoldenSet) -> None:
    """The program must return as many outputs, of the dtypes and ranks, as the signature says."""
    import torch

    args = tuple(torch.from_numpy(golden.inputs[n][:1]) for n in signature.input_names)
    try:
        with torch.no_grad():
            outputs = outputs_by_name(program.module()(*args), signature)
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"the model does not run on its own golden inputs ({first_line(err)}); the"
            " signature's inputs may not match the model"
        ) from err
    for spec in signature.outputs:
        value = outputs[spec.name]
        if str(value.dtype) != spec.dtype or value.ndim != spec.rank:
            raise UserError(
                f"the model's output {spec.name!r} is {value.dtype} rank {value.ndim} but the"
                f" signature says {spec.dtype} rank {spec.rank}"
            )

