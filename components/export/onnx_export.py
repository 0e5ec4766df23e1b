"""Export a model artifact to ONNX and verify it with onnxruntime."""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kfp_serve.components.errors import UserError, VerificationError, first_line
from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.formats import FORMATS, ONNX_EXTERNAL_DATA_FILE
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, dtype_from_onnx
from kfp_serve.components.staging import native_output_kept_out, quiet_export, staged_directory
from kfp_serve.components.verify import verify_at_batches

ONNX_FILE = FORMATS["onnx"].file
SUPPORTED_OPSETS = range(18, 21)
EXPORTERS = ("auto", "dynamo", "legacy")
# protobuf refuses messages over 2 GiB: bigger models keep their weights beside the graph
PROTOBUF_LIMIT_BYTES = 2 * 1024**3
_MISSING_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_UNSUPPORTED_LEGACY = re.compile(
    r"Exporting the operator '?([\w:.]+)'? to ONNX opset version \d+ is not supported"
    r"|ONNX export failed on an operator with unrecognized namespace ([\w:.]+)"
)
_PACKED_SEQUENCE = "aten::_pack_padded_sequence"
_FIRST_SENTENCE = re.compile(r"(?<=\.)\s+(?=[A-Z])")


class _ExportFailed(UserError):
    """One exporter could not write (or load, or check) the file."""


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


def export_failure(err: BaseException, exporter: str, module: Any = None) -> str:
    """Why one exporter failed, as plain text that ends with the cause: an operator with no ONNX
    mapping by name, else torch's headline and the innermost exception's line (the dynamo
    exporter wraps the real cause in a multi-page report)."""
    text = str(err)
    missing = sorted({f"{m.group(1)}.{m.group(2)}" for m in _MISSING_OP.finditer(text)})
    missing += sorted({(m.group(1) or m.group(2)).rstrip(".") for m in _UNSUPPORTED_LEGACY.finditer(text)})
    if missing:
        return f"{exporter}: operator(s) with no ONNX mapping: {', '.join(missing)}"
    if module is not None and _PACKED_SEQUENCE in str(getattr(module, "inlined_graph", "")):
        return (f"{exporter}: packed sequences (torch.nn.utils.rnn.pack_padded_sequence) have no"
                " ONNX export")
    headline = _FIRST_SENTENCE.split(first_line(err), maxsplit=1)[0].rstrip(".:")
    inner = err
    while inner.__cause__ is not None:
        inner = inner.__cause__
    cause = first_line(inner)
    if inner is not err and cause not in headline:
        return f"{exporter}: {headline}: {type(inner).__name__}: {cause}"
    return f"{exporter}: {headline}"


def export_onnx(model_dir: str | Path, output_dir: str | Path, opset: int = 18,
                atol: float = 1e-4, rtol: float = 1e-3, exporter: str = "auto") -> ExportResult:
    """Export the model artifact at ``model_dir`` to ``output_dir/model.onnx`` and verify it.

    The dynamo exporter works from the self-contained ``model.pt2``; the legacy TorchScript-based
    exporter from the artifact's ``model.ts``. ``auto`` tries dynamo where the artifact has a
    ``model.pt2`` (torch.export could keep its dynamic dims), and the legacy exporter where
    dynamo failed (to export, or to match the eager model) or there is no ``model.pt2``; the
    result names the exporter that made the file and why another one failed.
    Models over 2 GiB keep their weights in ``model.onnx.data`` beside the graph.
    ``output_dir`` receives ``model.onnx`` (+ data), ``signature.json`` and ``golden.npz`` only
    after every check passed; on failure nothing is left there.

    Raises:
        VerificationError: the export ran but disagrees with the eager model (every exporter
            tried).
        UserError: no exporter could write the model, naming each one's cause and what to
            serve instead; bad parameters.
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
    tries = [exporter]
    if exporter == "auto":
        tries = [name for name, present in (("dynamo", artifact.has_program),
                                             ("legacy", artifact.has_torchscript)) if present]
    failures: list[tuple[str, UserError]] = []
    for name in tries:
        try:
            result = _export_with(name, artifact, Path(output_dir), opset, atol, rtol)
        except (_ExportFailed, VerificationError) as err:
            failures.append((name, err))
            continue
        details = dict(result.details)
        if failures:
            tried, why = failures[0]
            details["fallback"] = f"{tried} failed: {str(why).removeprefix(f'{tried}: ')}"
        return dataclasses.replace(result, details=details, seconds=time.perf_counter() - started)
    raise _no_onnx_route(failures, exporter, artifact)


def _no_onnx_route(failures: list[tuple[str, UserError]], exporter: str, artifact: Any) -> UserError:
    """The one line for every exporter tried and failed: numbers that disagree (the file exists
    and runs) come first; otherwise the model has no ONNX route, and TorchScript serves it."""
    disagreements = [err for _, err in failures if isinstance(err, VerificationError)]
    if disagreements:
        others = [str(err) for _, err in failures if not isinstance(err, VerificationError)]
        return VerificationError("; ".join([str(err) for err in disagreements] + others))
    causes = "; ".join(str(err) for _, err in failures)
    advice = "serve the TorchScript export (serving_format=torchscript)"
    if any("no ONNX mapping" in str(err) for _, err in failures):
        advice = f"replace those operators or register ONNX functions for them, or {advice}"
    if exporter != "auto" and artifact.has_program and artifact.has_torchscript:
        advice = f"try exporter=auto (it tries the other exporter too), or {advice}"
    return UserError(f"this model cannot be exported to ONNX: {causes}; {advice}")


def _export_with(exporter: str, artifact: Any, output_dir: Path, opset: int, atol: float,
                 rtol: float) -> ExportResult:
    """One exporter, start to verified finish: ``_ExportFailed`` when it cannot write, load or
    check the file, VerificationError when the file disagrees with the eager model."""
    signature, golden = artifact.signature, artifact.golden
    # a file that does not load is a broken artifact, not an export failure: its own error
    source = artifact.program() if exporter == "dynamo" else artifact.torchscript()
    external = _parameter_bytes(source) >= PROTOBUF_LIMIT_BYTES
    with staged_directory(output_dir) as staging:
        model_path = staging / ONNX_FILE
        try:
            with quiet_export(), native_output_kept_out():
                if exporter == "dynamo":
                    _export_dynamo(source, model_path, signature, opset, external)
                else:
                    _export_legacy(source, model_path, signature, opset, golden)
        except Exception as err:  # torch.onnx raises many types; translate at this boundary
            raise _ExportFailed(export_failure(err, exporter, source)) from err
        try:
            _check_model(model_path)
            check_graph_against_signature(model_path, signature)
            session = onnxruntime_session(model_path)
        except UserError as err:
            raise _ExportFailed(f"{exporter}: {err}") from err
        comparisons = verify_at_batches(
            lambda inputs: run_onnxruntime(session, signature, inputs), golden, atol, rtol,
            f"the ONNX export ({exporter} exporter, onnxruntime)", signature,
        )
        signature.save(staging)
        golden.save(staging)
    details = {"opset": str(opset), "exporter": exporter, "runtime": "onnxruntime (CPU)",
               "weights": ONNX_EXTERNAL_DATA_FILE if external else "inside model.onnx"}
    return ExportResult("ONNX", output_dir / ONNX_FILE, signature, comparisons, details, 0.0,
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
