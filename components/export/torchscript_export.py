"""Export a model artifact to TorchScript (trace or script), optionally frozen, and verify it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kfp_serve.components.errors import UserError, VerificationError, first_line
from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.formats import FORMATS
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.staging import quiet_export, staged_directory
from kfp_serve.components.verify import verify_at_batches

TORCHSCRIPT_FILE = FORMATS["torchscript"].file  # what Triton's pytorch_libtorch backend loads
METHODS = ("trace", "script")


def run_torchscript(module: Any, signature: ModelSignature,
                    inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a TorchScript module positionally on named inputs; returns named outputs."""
    import torch

    from kfp_serve.components.model_artifact import outputs_by_name

    args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in signature.input_names)
    with torch.no_grad():
        return outputs_by_name(module(*args), signature)


def _trace(program: Any, signature: ModelSignature, golden) -> Any:
    import torch

    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    with torch.no_grad():
        return torch.jit.trace(program.module(), args, check_trace=False)


def export_torchscript(model_dir: str | Path, output_dir: str | Path, method: str = "trace",
                       freeze: bool = True, optimize_for_inference: bool = False,
                       atol: float = 1e-4, rtol: float = 1e-3) -> ExportResult:
    """Write ``output_dir/model.pt`` (TorchScript) and verify it at two batch sizes.

    ``trace`` traces the artifact's ``model.pt2`` on the golden inputs (no Python class
    needed; data-dependent control flow is frozen at the traced path). ``script`` takes the
    scripted ``model.ts`` saved with the artifact (scripting needs the class, so it happens at
    training time). ``freeze`` inlines weights and attributes; ``optimize_for_inference`` also
    fuses ops for CPU inference (the result is specialised to the CPU).
    """
    import torch

    from kfp_serve.components.model_artifact import load_torch_model, load_torchscript

    if method not in METHODS:
        raise UserError(f"method {method!r} is not known; use one of {list(METHODS)}")
    if optimize_for_inference and not freeze:
        raise UserError("optimize_for_inference needs freeze=True (it works on frozen modules)")
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    started = time.perf_counter()
    program, signature, golden = load_torch_model(model_dir)
    with staged_directory(output_dir) as staging, quiet_export():
        try:
            module = (_trace(program, signature, golden) if method == "trace"
                      else load_torchscript(model_dir))
            module = module.eval()
            if freeze:
                module = torch.jit.freeze(module)
            if optimize_for_inference:
                module = torch.jit.optimize_for_inference(module)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"TorchScript {method} failed: {first_line(err)}") from err
        path = staging / TORCHSCRIPT_FILE
        try:  # verify what a server will load: the saved file, not the in-memory module
            torch.jit.save(module, str(path))
            reloaded = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:
            hint = " (try optimize_for_inference=False)" if optimize_for_inference else ""
            raise UserError(
                f"the TorchScript module does not survive save and reload: {first_line(err)}{hint}"
            ) from err
        try:
            comparisons = verify_at_batches(
                lambda inputs: run_torchscript(reloaded, signature, inputs), golden, atol, rtol,
                f"the TorchScript export ({method})",
            )
        except VerificationError as err:
            if method == "trace":
                raise VerificationError(
                    f"{err}; tracing records one path through the model and may fix dims such as"
                    " the batch size: save the model with torchscript='script' and use"
                    " method='script'"
                ) from err
            raise
        signature.save(staging)
        golden.save(staging)
    details = {"method": method, "frozen": str(freeze),
               "optimize_for_inference": str(optimize_for_inference),
               "runtime": f"torch.jit {torch.__version__} (CPU)"}
    return ExportResult("TorchScript", Path(output_dir) / TORCHSCRIPT_FILE, comparisons, details,
                        time.perf_counter() - started)
