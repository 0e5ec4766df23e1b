"""Export a model artifact to ONNX with the dynamo exporter and verify it with onnxruntime."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kfp_serve.components.errors import UserError, VerificationError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, dtype_from_onnx
from kfp_serve.components.verify import (
    OutputComparison,
    compare_outputs,
    markdown_table,
    summarize_failures,
)

ONNX_FILE = "model.onnx"
SUPPORTED_OPSETS = range(18, 21)


@dataclass(frozen=True)
class OnnxExportResult:
    """The exported file and how it compares with the eager reference at each batch size."""

    path: Path
    opset: int
    comparisons: dict[int, list[OutputComparison]]

    def markdown(self) -> str:
        """The verification report: one table per verified batch size."""
        lines = ["# ONNX export verification: PASSED", "",
                 f"- file: `{self.path.name}` ({self.path.stat().st_size / 1e6:.2f} MB), opset"
                 f" {self.opset}, onnxruntime CPU vs the eager PyTorch reference (fp32)", ""]
        for batch, comparisons in self.comparisons.items():
            lines += [f"## Batch size {batch}", "", markdown_table(comparisons), ""]
        return "\n".join(lines)


def check_graph_against_signature(model_path: Path, signature: ModelSignature) -> None:
    """Raise UserError unless the ONNX graph's inputs/outputs match the signature."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
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


def run_onnxruntime(session, signature: ModelSignature,
                    inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an onnxruntime session on named inputs; returns named outputs."""
    outputs = session.run(signature.output_names, {n: inputs[n] for n in signature.input_names})
    return dict(zip(signature.output_names, outputs))


def verification_batches(golden: GoldenSet) -> list[int]:
    """The batch sizes verified: the whole golden set and a different, smaller one."""
    full = golden.batch_size
    return [full, 1] if full > 1 else [full]


def verify_onnx(model_path: Path, signature: ModelSignature, golden: GoldenSet,
                atol: float, rtol: float) -> dict[int, list[OutputComparison]]:
    """Compare onnxruntime's outputs with the golden references at two batch sizes.

    Raises:
        VerificationError: naming every output out of tolerance, at every batch size.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise UserError(f"onnxruntime cannot load {model_path.name}: {err}") from err
    comparisons: dict[int, list[OutputComparison]] = {}
    problems = []
    for batch in verification_batches(golden):
        part = golden.slice(0, batch)
        try:
            actual = run_onnxruntime(session, signature, part.inputs)
        except Exception as err:
            raise VerificationError(
                f"onnxruntime failed at batch size {batch}: {str(err).splitlines()[0]}"
            ) from err
        comparisons[batch] = compare_outputs(part.outputs, actual, atol, rtol)
        failure = summarize_failures(comparisons[batch], f"batch {batch}")
        if failure:
            problems.append(failure)
    if problems:
        raise VerificationError("ONNX outputs disagree with the eager model: " + " | ".join(problems))
    return comparisons


def export_onnx(model_dir: str | Path, output_dir: str | Path, opset: int = 18,
                atol: float = 1e-4, rtol: float = 1e-3) -> OnnxExportResult:
    """Export ``model.pt2`` to ``output_dir/model.onnx``, check it and verify it.

    ``output_dir`` receives ``model.onnx``, ``signature.json`` and ``golden.npz`` only after every
    check passed; on failure nothing is left there.
    """
    import torch

    from kfp_serve.components.model_artifact import load_torch_model

    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported; use {SUPPORTED_OPSETS.start}"
                        f"-{SUPPORTED_OPSETS.stop - 1} (the dynamo exporter needs >= 18)")
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    program, signature, golden = load_torch_model(model_dir)
    output = Path(output_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-staging-", dir=output.parent))
    staging.chmod(0o755)
    try:
        model_path = staging / ONNX_FILE
        with warnings.catch_warnings(), _quiet_loggers():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    program, (), str(model_path), dynamo=True, opset_version=opset,
                    input_names=signature.input_names, output_names=signature.output_names,
                    external_data=False, verbose=False,
                )
            except Exception as err:
                raise UserError(f"torch.onnx.export failed: {_first_line(err)}") from err
        _check_model(model_path)
        check_graph_against_signature(model_path, signature)
        comparisons = verify_onnx(model_path, signature, golden, atol, rtol)
        signature.save(staging)
        golden.save(staging)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxExportResult(output / ONNX_FILE, opset, comparisons)


def _check_model(model_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise UserError(f"onnx.checker rejected the export: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _quiet_loggers:
    """Silence the exporter's INFO chatter (it logs every pass) while exporting."""

    names = ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export")

    def __enter__(self):
        self.saved = {n: logging.getLogger(n).level for n in self.names}
        for name in self.names:
            logging.getLogger(name).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for name, level in self.saved.items():
            logging.getLogger(name).setLevel(level)
