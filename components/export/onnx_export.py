"""Export a model artifact to ONNX and verify it with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kfp_serve.components.errors import UserError, first_line
from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.formats import FORMATS, ONNX_EXTERNAL_DATA_FILE
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, dtype_from_onnx
from kfp_serve.components.staging import quiet_export, staged_directory
from kfp_serve.components.verify import verify_at_batches

ONNX_FILE = FORMATS["onnx"].file
SUPPORTED_OPSETS = range(18, 21)
EXPORTERS = ("auto", "dynamo", "legacy")
# protobuf refuses messages over 2 GiB: bigger models keep their weights beside the graph
PROTOBUF_LIMIT_BYTES = 2 * 1024**3
_MISSING_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_UNSUPPORTED_LEGACY = re.compile(
    r"Exporting the operator '?([\w:.]+)'? to ONNX opset version \d+ is not supported"
)


def check_graph_against_signature(model_path: Path, signature: ModelSignature) -> None:
    """Raise UserError unless the ONNX graph's inputs/outputs match the signature."""
    import onnx

    if not model_path.is_file() or model_path.stat().st_size == 0:
        state = "is missing" if not model_path.is_file() else "is empty (0 bytes)"
        raise UserError(f"{model_path} {state}; export the model again (export_onnx)")
    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as err:  # google.protobuf.message.DecodeError and friends
        raise UserError(f"{model_path} is not an ONNX model ({first_line(err)}); export the model"
                        " again (export_onnx)") from err
    if not graph.node and not graph.input and not graph.output:
        raise UserError(f"{model_path} holds no ONNX graph; export the model again (export_onnx)")
    for kind, specs, values in (
        ("input", signature.inputs, graph.input),
        ("output", signature.outputs, graph.output),
    ):
        names = [v.name for v in values]
        if names != [s.name for s in specs]:
            raise UserError(f"ONNX graph {kind}s {names} differ from the signature's"
                            f" {[s.name for s in specs]}")
        for spec, value in zip(specs, values):
            tensor_type = value.type.tensor_type
            dtype = dtype_from_onnx(tensor_type.elem_type)
            rank = len(tensor_type.shape.dim)
            if dtype != spec.dtype or rank != spec.rank:
                raise UserError(
                    f"ONNX {kind} {spec.name!r} is {dtype} rank {rank} but the signature says"
                    f" {spec.dtype} rank {spec.rank}"
                )
            for axis, (dim, want) in enumerate(zip(tensor_type.shape.dim, spec.dims)):
                if isinstance(want, int) and dim.HasField("dim_value") and dim.dim_value != want:
                    raise UserError(f"ONNX {kind} {spec.name!r} dim {axis} is {dim.dim_value},"
                                    f" the signature says {want}")
                if isinstance(want, str) and dim.HasField("dim_value"):
                    raise UserError(
                        f"ONNX {kind} {spec.name!r} dim {axis} was fixed to {dim.dim_value} but"
                        f" the signature says it is dynamic ({want!r}); export with a batch >= 2"
                    )


def onnxruntime_session(model_path: Path, threads: int = 0):
    """A CPU onnxruntime session (UserError when onnxruntime cannot load the file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise UserError(f"onnxruntime cannot load {model_path.name}: {first_line(err)}") from err


def run_onnxruntime(session, signature: ModelSignature,
                    inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an onnxruntime session on named inputs; returns named outputs."""
    outputs = session.run(signature.output_names, {n: inputs[n] for n in signature.input_names})
    return dict(zip(signature.output_names, outputs))


def _dynamic_axes(signature: ModelSignature) -> dict[str, dict[int, str]]:
    return {
        spec.name: {axis: dim for axis, dim in enumerate(spec.dims) if isinstance(dim, str)}
        for spec in (*signature.inputs, *signature.outputs)
    }


def _parameter_bytes(source: Any) -> int:
    """Weight bytes of an exported program or a TorchScript module."""
    state = source.state_dict if hasattr(source, "graph_signature") else source.state_dict()
    return sum(t.numel() * t.element_size() for t in state.values())


def _export_dynamo(program: Any, path: Path, signature: ModelSignature, opset: int,
                   external_data: bool) -> None:
    import torch

    torch.onnx.export(
        program, (), str(path), dynamo=True, opset_version=opset,
        input_names=signature.input_names, output_names=signature.output_names,
        external_data=external_data, verbose=False,
    )


def _export_legacy(module: Any, path: Path, signature: ModelSignature, opset: int,
                   golden: GoldenSet) -> None:
    import torch

    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    torch.onnx.export(
        module, args, str(path), dynamo=False, opset_version=opset,
        input_names=signature.input_names, output_names=signature.output_names,
        dynamic_axes=_dynamic_axes(signature),
    )


def translate_export_error(err: BaseException) -> UserError:
    """A one-line error from the exporter's multi-page report; names a missing op if any."""
    text = str(err)
    missing = sorted({f"{m.group(1)}.{m.group(2)}" for m in _MISSING_OP.finditer(text)})
    missing += sorted({m.group(1) for m in _UNSUPPORTED_LEGACY.finditer(text)})
    if missing:
        return UserError(
            f"the model uses operator(s) with no ONNX mapping: {', '.join(missing)}; replace"
            " them, register an ONNX function for them, or serve the TorchScript export instead"
        )
    return UserError(f"torch.onnx.export failed: {first_line(err)}")


def export_onnx(model_dir: str | Path, output_dir: str | Path, opset: int = 18,
                atol: float = 1e-4, rtol: float = 1e-3, exporter: str = "auto") -> ExportResult:
    """Export the model artifact at ``model_dir`` to ``output_dir/model.onnx`` and verify it.

    The dynamo exporter works from the self-contained ``model.pt2``; the legacy TorchScript-based
    exporter from the artifact's ``model.ts``. ``auto`` is dynamo where the artifact has a
    ``model.pt2`` (torch.export could keep its dynamic dims), else legacy.
    Models over 2 GiB keep their weights in ``model.onnx.data`` beside the graph.
    ``output_dir`` receives ``model.onnx`` (+ data), ``signature.json`` and ``golden.npz`` only
    after every check passed; on failure nothing is left there.
    """
    from kfp_serve.components.model_artifact import open_model

    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported; use {SUPPORTED_OPSETS.start}"
                        f"-{SUPPORTED_OPSETS.stop - 1} (the dynamo exporter needs >= 18)")
    if exporter not in EXPORTERS:
        raise UserError(f"exporter {exporter!r} is not known; use one of {list(EXPORTERS)}")
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    started = time.perf_counter()
    artifact = open_model(model_dir)
    signature, golden = artifact.signature, artifact.golden
    if exporter == "auto":
        exporter = "dynamo" if artifact.has_program else "legacy"
    source = artifact.program() if exporter == "dynamo" else artifact.torchscript()
    external = _parameter_bytes(source) >= PROTOBUF_LIMIT_BYTES
    with staged_directory(output_dir) as staging:
        model_path = staging / ONNX_FILE
        with quiet_export(), contextlib.redirect_stdout(io.StringIO()):
            try:
                if exporter == "dynamo":
                    _export_dynamo(source, model_path, signature, opset, external)
                else:
                    _export_legacy(source, model_path, signature, opset, golden)
            except UserError:
                raise
            except Exception as err:  # torch.onnx raises many types; translate at this boundary
                raise translate_export_error(err) from err
        _check_model(model_path)
        check_graph_against_signature(model_path, signature)
        session = onnxruntime_session(model_path)
        comparisons = verify_at_batches(
            lambda inputs: run_onnxruntime(session, signature, inputs), golden, atol, rtol,
            "the ONNX export (onnxruntime)",
        )
        signature.save(staging)
        golden.save(staging)
    details = {"opset": str(opset), "exporter": exporter, "runtime": "onnxruntime (CPU)",
               "weights": ONNX_EXTERNAL_DATA_FILE if external else "inside model.onnx"}
    return ExportResult("ONNX", Path(output_dir) / ONNX_FILE, signature, comparisons, details,
                        time.perf_counter() - started,
                        resized_shapes=golden.resized_shapes)


def _check_model(model_path: Path) -> None:
    import onnx

    try:
        # a path (not a loaded proto) lets the checker handle models with external data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise UserError(f"onnx.checker rejected the export: {first_line(err)}") from err
