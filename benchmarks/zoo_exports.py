"""Benchmark: save + export + verify time per zoo model and format, with default parameters.

    .venv/bin/python benchmarks/zoo_exports.py [--output benchmarks/results/zoo_exports.md]

Every model of tests/harness/model_zoo.py (a Hugging Face BERT encoder, a ResNet-18 layout, a
GRU, a dict-returning multi-head model, uint8 images, bool/int32 inputs, data-dependent control
flow, a left-padded GPT-2 LM, a ViT, a T5 encoder, audio convolutions, a detection head, argmax
outputs, a packed LSTM, a float16 model) goes through save_torch_model, export_onnx and
export_torchscript exactly as a user's pipeline calls them, each export verified at two batch
sizes and, where another dim is dynamic, at a second size of it. Reports how each was captured
(torch.export or TorchScript, trace or script) and which ONNX exporter made the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from results_io import default_output, write_results

from kfp_serve.components.errors import UserError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.export.torchscript_export import export_torchscript
from kfp_serve.components.model_artifact import ARTIFACT_INFO_FILE, save_torch_model


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("zoo_exports"),
                        help="default: benchmarks/runs/zoo_exports-<date>.md; the committed result is"
                        " benchmarks/results/zoo_exports.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in ZOO:
            folder = Path(tmp) / entry.name
            model = entry.build()
            params = sum(p.numel() for p in model.parameters())
            began = time.perf_counter()
            save_torch_model(model, entry.signature, entry.example(4), folder / "model")
            save = time.perf_counter() - began
            info = json.loads((folder / "model" / ARTIFACT_INFO_FILE).read_text())
            began = time.perf_counter()
            try:
                onnx = export_onnx(folder / "model", folder / "onnx")
                fallback = " after dynamo failed" if "fallback" in onnx.details else ""
                how = onnx.details["exporter"] + fallback
            except UserError:  # no ONNX route (the zoo entry says why); served as TorchScript
                onnx, how = None, "no ONNX route"
            onnx_s = time.perf_counter() - began
            began = time.perf_counter()
            torchscript = export_torchscript(folder / "model", folder / "ts")
            ts_s = time.perf_counter() - began
            source = "torch.export" if "program" in info else "TorchScript only"
            rows.append(f"| {entry.name} | {params:,} | {entry.note} | {source},"
                        f" {info.get('torchscript', 'no')} | {save:.1f} s | {onnx_s:.1f} s"
                        f" ({how}) | {ts_s:.1f} s | {save + onnx_s + ts_s:.1f} s |"
                        f" {', '.join((onnx or torchscript).comparisons)} |")
            print(rows[-1], flush=True)
    write_results(args.output, [
        "# Zoo: save + export + verify per model, default parameters", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}. Save = eager reference,"
        " torch.export, TorchScript (trace checked at batch 1 and resized dims, or script) and the"
        " write; each export reloads its file and verifies the cases in the last column.", "",
        "| model | params | what | captured as, model.ts | save | ONNX | TorchScript | total |"
        " verified |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows, ""])


if __name__ == "__main__":
    main()
