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
#: ``trace_program`` traces the exported program (model.pt2); save_torch_model's "trace" is of
#: the eager model, which ``saved`` takes
METHODS = ("auto", "saved", "trace_program")


def run_torchscript(module: Any, signature: ModelSignature,
                    inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a TorchScript module positionally on named inputs; returns named outputs."""
    from kfp_serve.components.capture import run_module

    return run_module(module, signature, inputs)


def _trace_program(program: Any, signature: ModelSignature, golden) -> Any:
    import torch

    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    with torch.no_grad():
        return torch.jit.trace(program.module(), args, check_trace=False)


def export_torchscript(model_dir: str | Path, output_dir: str | Path, method: str = "auto",
                       freeze: bool = True, optimize_for_inference: bool = False,
                       atol: float = 1e-4, rtol: float = 1e-3) -> ExportResult:
    """Write ``output_dir/model.pt`` (TorchScript) and verify it at two batch sizes (and at a
    second size of the other dynamic dims, where the golden set has one).

    ``saved`` takes the artifact's ``model.ts``: traced from the eager model and checked at a
    second size, or scripted, by ``save_torch_model`` where the Python class was at hand.
    ``trace_program`` traces the artifact's ``model.pt2`` (no class needed; the exported program
    bakes in the golden batch size on many models). ``auto`` is ``saved`` where the artifact has
    a ``model.ts``, else ``trace_program``. ``freeze`` inlines weights and attributes;
    ``optimize_for_inference`` also fuses ops for CPU inference (specialised to the CPU).
    """
    import torch

    from kfp_serve.components.model_artifact import open_model

    if method == "trace":
        raise UserError("method 'trace' is now 'trace_program' (it traces the exported model.pt2;"
                        " a trace of the eager model is what 'saved' takes)")
    if method not in METHODS:
        raise UserError(f"method {method!r} is not known; use one of {list(METHODS)}")
    if optimize_for_inference and not freeze:
        raise UserError("optimize_for_inference needs freeze=True (it works on frozen modules)")
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    started = time.perf_counter()
    artifact = open_model(model_dir)
    signature, golden = artifact.signature, artifact.golden
    if method == "auto":
        method = "saved" if artifact.has_torchscript else "trace_program"
    with staged_directory(output_dir) as staging, quiet_export():
        try:
            module = (_trace_program(artifact.program(), signature, golden) if method == "trace_program"
                      else artifact.torchscript())
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
                f"the TorchScript export ({method})", signature,
            )
        except VerificationError as err:
            if method == "trace_program":
                raise VerificationError(
                    f"{err}; tracing the exported program fixes dims such as the batch size:"
                    " save the model with save_torch_model (its model.ts is traced from the eager"
                    " model and checked) and use method='saved' or 'auto'"
                ) from err
            raise
        signature.save(staging)
        golden.save(staging)
    how = f"model.ts, {artifact.info.get('torchscript', 'saved')}" if method == "saved" else "model.pt2"
    details = {"method": method, "source": how, "frozen": str(freeze),
               "optimize_for_inference": str(optimize_for_inference),
               "runtime": f"torch.jit {torch.__version__} (CPU)"}
    return ExportResult("TorchScript", Path(output_dir) / TORCHSCRIPT_FILE, signature, comparisons, details,
                        time.perf_counter() - started,
                        resized_shapes=golden.resized_shapes)
