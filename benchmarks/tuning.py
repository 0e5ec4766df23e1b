"""Benchmark: tune_triton_config's choice against the defaults, and the tuner's own run time.

    .venv/bin/python benchmarks/tuning.py [--output benchmarks/results/tuning.md]

For the digits CNN and a 24.3M-parameter transformer encoder (ONNX, one sample per request):
run the tuner with its defaults (budget 180 s), then confirm: serve the default configuration
and the chosen one, each on a fresh local Triton, and measure the throughput within the same
p95 SLO over a concurrency sweep with longer levels than the tuner's, binary tensors over HTTP.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from results_io import default_output, write_results

from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local.triton_server import start_server, stop_server
from kfp_serve.components.machine import available_cores
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.triton.repository import build_repository
from kfp_serve.components.tune.search import starting_point
from kfp_serve.components.tune.tuner import tune
from kfp_serve.components.validate.targets import OipBinaryRestTarget


def confirm(folder: Path, options, concurrency: list[int], seconds: float, slo_ms: float,
            work: Path, label: str) -> tuple[float, list]:
    """Best samples/s within the SLO on a fresh server with ``options``, and the levels."""
    build_repository(folder, "onnx", work / f"repo-{label}", "model", options)
    record = start_server(work / f"repo-{label}", "model", f"bench-{label}")
    try:
        signature, golden = ModelSignature.load(folder), GoldenSet.load(folder)
        target = OipBinaryRestTarget(record.url, "model", signature)
        target.infer(golden.slice(0, 1).inputs)
        levels = target.load(golden, concurrency, seconds)
    finally:
        stop_server(record)
    best = max((lv.throughput for lv in levels if lv.p95_ms <= slo_ms and not lv.errors), default=0.0)
    return best, levels


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    from kfp_serve.components.export.onnx_export import export_onnx
    from kfp_serve.components.model_artifact import save_torch_model
    from kfp_serve.components.train.digits import train_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("tuning"),
                        help="default: benchmarks/runs/tuning-<date>.md; the committed result is"
                        " benchmarks/results/tuning.md")
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--confirm-seconds", type=float, default=3.0)
    args = parser.parse_args()
    cores = available_cores()
    lines = ["# Tuned serving configuration against the defaults", "",
             f"Machine: {platform.processor() or platform.machine()}, {cores} cores (client and"
             f" server share them), Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}."
             f" Tuner: budget {args.budget:g} s, 1.5 s per level, load over binary HTTP."
             f" Confirmation: {args.confirm_seconds:g} s per level, fresh server per configuration.",
             ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_digits(work / "digits", epochs=15)
        export_onnx(work / "digits", work / "d_onnx")
        model = build_text_encoder(vocab=10000, d_model=512, layers=6, heads=8, ff=2048, num_classes=3)
        save_torch_model(model, text_encoder_signature(3, 512), text_encoder_inputs(4, 64, vocab=10000),
                         work / "text", torchscript=None)
        export_onnx(work / "text", work / "t_onnx")
        rows, sections = [], []
        for title, folder, slo, concurrency in (
                ("digits CNN", work / "d_onnx", 10.0, [1, 2, 4, 8, 16, 32]),
                ("transformer encoder (24.3M, seq 64)", work / "t_onnx", 250.0, [1, 2, 4, 8])):
            print(f"tuning {title} ...", flush=True)
            result = tune(folder, "onnx", slo, budget_s=args.budget)
            default = starting_point(cores).options("onnx")
            chosen = result.chosen.candidate.options("onnx")
            base, base_levels = confirm(folder, default, concurrency, args.confirm_seconds, slo, work,
                                        "default")
            tuned, tuned_levels = confirm(folder, chosen, concurrency, args.confirm_seconds, slo, work,
                                          "tuned")
            rows.append(f"| {title} | p95 <= {slo:g} ms | {result.chosen.candidate.label} |"
                        f" {len(result.trials)} in {result.seconds:.0f} s | {base:,.1f} | {tuned:,.1f} |"
                        f" {tuned / base if base else float('nan'):.2f}x |")
            sections += [f"## {title}", "", "Tuner's candidates (its own short measurements):", "",
                      "| # | configuration | samples/s within SLO | seconds |", "|---|---|---|---|",
                      *[f"| {i} | {t.candidate.label} | {t.score(slo):,.1f} | {t.seconds:.1f} |"
                        for i, t in enumerate(result.trials, 1)], "",
                      "Confirmation (samples/s at p95 ms per concurrency):", "",
                      "| concurrency | defaults | tuned |", "|---|---|---|",
                      *[f"| {a.concurrency} | {a.throughput:,.1f} at {a.p95_ms:.2f} |"
                        f" {b.throughput:,.1f} at {b.p95_ms:.2f} |"
                        for a, b in zip(base_levels, tuned_levels)], ""]
    lines += ["| model | SLO | chosen | candidates | defaults (samples/s within SLO) |"
              " tuned | tuned / defaults |", "|---|---|---|---|---|---|---|", *rows, "", *sections]
    write_results(args.output, lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
