"""Latency and throughput of each exported format, each runtime in its own process.

A worker process (``python -m kfp_serve.components.export.profile``) loads one format, warms up,
then times back-to-back calls at each batch size for a bounded time and prints JSON. Separate
processes keep one runtime's thread pools and allocations from skewing another's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.formats import FORMATS, TORCH_PROGRAM_FILE
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature

#: format -> (file inside its artifact folder, can a serving step take it)
PROFILED: dict[str, tuple[str, bool]] = {
    "eager": (TORCH_PROGRAM_FILE, False),
    "torchscript": (FORMATS["torchscript"].file, True),
    "onnx": (FORMATS["onnx"].file, True),
}


@dataclass(frozen=True)
class Measurement:
    """One format at one batch size."""

    model_format: str
    batch_size: int
    iterations: int
    p50_ms: float
    p95_ms: float
    samples_per_s: float


@dataclass(frozen=True)
class ProfileResult:
    measurements: list[Measurement]
    recommended: str
    threads: int

    def table(self) -> str:
        lines = ["| format | batch | p50 latency (ms) | p95 latency (ms) | throughput (samples/s) |",
                 "|---|---|---|---|---|"]
        for m in self.measurements:
            lines.append(f"| {m.model_format} | {m.batch_size} | {m.p50_ms:.3f} | {m.p95_ms:.3f} |"
                         f" {m.samples_per_s:,.0f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        return "\n".join([
            "# Format profile", "",
            f"- each runtime in its own process, {self.threads or 'default'} thread(s), CPU, fp32",
            f"- recommended for serving: **{self.recommended}** (highest throughput at the"
            " largest batch among the formats a serving step can take)", "",
            self.table(), "",
        ])


def batch_inputs(golden: GoldenSet, batch: int) -> dict[str, np.ndarray]:
    """Golden inputs repeated along the batch axis to ``batch`` rows."""
    return {name: np.ascontiguousarray(np.resize(value, (batch, *value.shape[1:])))
            for name, value in golden.inputs.items()}


def _runner(model_format: str, path: Path, signature: ModelSignature, threads: int):
    if model_format == "onnx":
        from kfp_serve.components.export.onnx_export import onnxruntime_session, run_onnxruntime

        session = onnxruntime_session(path, threads)
        return lambda inputs: run_onnxruntime(session, signature, inputs)
    import torch

    if threads:
        torch.set_num_threads(threads)
    if model_format == "torchscript":
        from kfp_serve.components.export.torchscript_export import run_torchscript

        module = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda inputs: run_torchscript(module, signature, inputs)
    if model_format == "eager":
        from kfp_serve.components.model_artifact import open_model, run_module

        module = open_model(path.parent).module()  # the exported program, else model.ts
        return lambda inputs: run_module(module, signature, inputs)
    raise UserError(f"format {model_format!r} cannot be profiled; use one of {sorted(PROFILED)}")


def measure(model_format: str, folder: Path, batch_sizes: list[int], seconds: float,
            threads: int) -> list[Measurement]:
    """Time one format in this process (the worker's body)."""
    signature = ModelSignature.load(folder)
    golden = GoldenSet.load(folder)
    run = _runner(model_format, folder / PROFILED[model_format][0], signature, threads)
    results = []
    for batch in batch_sizes:
        inputs = batch_inputs(golden, batch)
        for _ in range(3):
            run(inputs)
        latencies = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(latencies) < 5:
            began = time.perf_counter()
            run(inputs)
            latencies.append(time.perf_counter() - began)
        lat = np.asarray(latencies) * 1000
        results.append(Measurement(model_format, batch, len(latencies),
                                   float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                                   batch * len(latencies) / float(np.sum(latencies))))
    return results


def profile_formats(folders: dict[str, str | Path], batch_sizes: list[int],
                    seconds_per_batch: float = 2.0, threads: int = 0,
                    timeout_s: float = 600.0) -> ProfileResult:
    """Profile each ``format -> artifact folder`` in its own process and recommend one."""
    unknown = sorted(set(folders) - set(PROFILED))
    if unknown:
        raise UserError(f"cannot profile {unknown}; known formats: {sorted(PROFILED)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise UserError(f"batch sizes {batch_sizes} must be a non-empty list of integers >= 1")
    if seconds_per_batch <= 0:
        raise UserError("seconds_per_batch must be > 0")
    measurements: list[Measurement] = []
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    for model_format, folder in folders.items():
        command = [sys.executable, "-m", "kfp_serve.components.export.profile",
                   "--format", model_format, "--folder", str(folder),
                   "--batch-sizes", ",".join(str(b) for b in batch_sizes),
                   "--seconds", str(seconds_per_batch), "--threads", str(threads)]
        print(f"profiling {model_format} at batch sizes {batch_sizes} ...", flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise InfrastructureError(
                f"profiling {model_format} did not finish in {timeout_s:.0f}s") from err
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise InfrastructureError(f"profiling {model_format} failed: {tail}")
        measurements += [Measurement(**m) for m in json.loads(done.stdout.strip().splitlines()[-1])]
    return ProfileResult(measurements, recommend(measurements), threads)


def recommend(measurements: list[Measurement]) -> str:
    """The servable format with the highest throughput at the largest profiled batch size."""
    servable = [m for m in measurements if PROFILED[m.model_format][1]]
    if not servable:
        raise UserError("no servable format was profiled; include onnx or torchscript")
    largest = max(m.batch_size for m in servable)
    return max((m for m in servable if m.batch_size == largest),
               key=lambda m: m.samples_per_s).model_format


def _main() -> None:
    parser = argparse.ArgumentParser(description="profile one exported format (worker process)")
    parser.add_argument("--format", required=True, choices=sorted(PROFILED))
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--batch-sizes", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    from kfp_serve.components.staging import quiet_export

    with quiet_export():
        results = measure(args.format, args.folder, [int(b) for b in args.batch_sizes.split(",")],
                          args.seconds, args.threads)
    print(json.dumps([m.__dict__ for m in results]))


if __name__ == "__main__":
    _main()
