"""Benchmark: export + verify time per format, and throughput per format, for two models.

    .venv/bin/python benchmarks/export_formats.py [--output benchmarks/results/export_formats.md]

Models: the digits CNN (trained here, seconds) and a ~24M-parameter transformer encoder
classifier (random weights: export cost and speed do not depend on training). Each export is
the suite's real path: load the model artifact, export, check, verify at two batch sizes from
the saved file. Throughput comes from profile_formats (each runtime in its own process).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_io import default_output, write_results

from kfp_serve.components.errors import KfpServeError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.export.profile import profile_formats
from kfp_serve.components.export.torchscript_export import export_torchscript
from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.train.digits import train_digits

TRANSFORMER = dict(vocab=10000, d_model=512, layers=6, heads=8, ff=2048, num_classes=3)


def _timed(label, fn, rows):
    began = time.perf_counter()
    try:
        result = fn()
        rows.append((label, f"{time.perf_counter() - began:.1f}", "verified at batch sizes "
                     + ", ".join(str(b) for b in result.comparisons)))
        return result
    except KfpServeError as err:
        rows.append((label, f"{time.perf_counter() - began:.1f}", f"refused: {str(err)[:140]}"))
        return None


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("export_formats"),
                        help="default: benchmarks/runs/export_formats-<date>.md; the committed result is"
                        " benchmarks/results/export_formats.md")
    parser.add_argument("--seconds", type=float, default=2.0, help="profiling time per batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    profiles = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        train_digits(work / "digits", epochs=15)
        rows.append(("digits: train 15 epochs + save", f"{time.perf_counter() - began:.1f}", ""))
        _timed("digits: ONNX (dynamo)", lambda: export_onnx(work / "digits", work / "d_onnx"), rows)
        _timed("digits: TorchScript (trace)",
               lambda: export_torchscript(work / "digits", work / "d_ts"), rows)
        profiles.append(("digits CNN (input 1x8x8)", profile_formats(
            {"eager": work / "digits", "torchscript": work / "d_ts", "onnx": work / "d_onnx"},
            [1, 32, 256], args.seconds, args.threads)))

        model = build_text_encoder(**TRANSFORMER)
        params = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        save_torch_model(model, text_encoder_signature(3, TRANSFORMER["d_model"]),
                         text_encoder_inputs(4, 64, vocab=TRANSFORMER["vocab"]), work / "text",
                         torchscript="script")
        rows.append((f"transformer ({params / 1e6:.1f}M params): torch.export + script + save",
                     f"{time.perf_counter() - began:.1f}", ""))
        _timed("transformer: ONNX (dynamo)", lambda: export_onnx(work / "text", work / "t_onnx"), rows)
        _timed("transformer: TorchScript (the saved script)",
               lambda: export_torchscript(work / "text", work / "t_ts", method="saved"), rows)
        _timed("transformer: TorchScript (trace)",
               lambda: export_torchscript(work / "text", work / "t_trace", method="trace_program"), rows)
        profiles.append(("transformer encoder (seq 64)", profile_formats(
            {"eager": work / "text", "torchscript": work / "t_ts", "onnx": work / "t_onnx"},
            [1, 8], args.seconds, args.threads)))

    lines = [
        "# Export benchmark", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, torch {torch.__version__}, CPU only, fp32;"
        f" profiling with {args.threads} thread(s), {args.seconds} s per batch size.", "",
        "## Export + verify", "", "| step | seconds | result |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
    ]
    for title, result in profiles:
        lines += [f"## Throughput: {title}", "", result.table(), "",
                  f"Recommended for serving: **{result.recommended}**", ""]
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
