"""Export a model to the format it will be served in: ONNX where it can be, else TorchScript."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kfp_serve.components.errors import UserError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.export.torchscript_export import export_torchscript

#: ``auto``: ONNX (onnxruntime in Triton), else TorchScript (libtorch in Triton)
SERVING_FORMATS = ("auto", "onnx", "torchscript")


def export_for_serving(model_dir: str | Path, output_dir: str | Path, serving_format: str = "auto",
                       exporter: str = "auto", opset: int = 18, atol: float = 1e-4,
                       rtol: float = 1e-3) -> ExportResult:
    """Export and verify the model in ``serving_format``; ``auto`` takes the ONNX export where one
    passes (every ONNX exporter tried, see ``export_onnx``) and the TorchScript export where
    none does, recording why in the result's details (``served_as``)."""
    from kfp_serve.components.model_artifact import open_model

    if serving_format not in SERVING_FORMATS:
        raise UserError(f"serving_format {serving_format!r} is not known; use one of {list(SERVING_FORMATS)}")
    open_model(model_dir)  # a folder outside the model contract says so, not "no export serves it"
    if serving_format == "torchscript":
        return export_torchscript(model_dir, output_dir, atol=atol, rtol=rtol)
    if serving_format == "onnx":
        return export_onnx(model_dir, output_dir, opset=opset, atol=atol, rtol=rtol,
                           exporter=exporter)
    try:
        return export_onnx(model_dir, output_dir, opset=opset, atol=atol, rtol=rtol,
                           exporter=exporter)
    except UserError as err:
        onnx_failure = err
    try:
        result = export_torchscript(model_dir, output_dir, atol=atol, rtol=rtol)
    except UserError as torchscript_failure:
        raise UserError(f"neither export serves this model: ONNX: {onnx_failure} | TorchScript:"
                        f" {torchscript_failure}") from torchscript_failure
    why = str(onnx_failure).removesuffix("; serve the TorchScript export (serving_format=torchscript)")
    return dataclasses.replace(result, details={**result.details, "served_as": f"TorchScript, as"
                               f" no ONNX export serves it ({why})"})
