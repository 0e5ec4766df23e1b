"""Latency and throughput of each exported format, each runtime in its own process.

A worker process (``python -m kfp_serve.components.export.profile``) loads its formats, warms
up, then times back-to-back calls at each batch size until the measurement is stable and prints
JSON. onnxruntime runs in one process, the torch formats (eager, TorchScript: one libtorch and
its thread pool) in another, so one runtime's thread pools and allocations do not skew the
other's numbers and torch is imported once.

Adaptive: calls are grouped in windows of at least ``WINDOW_S`` (and one call); a measurement
stops when the throughputs of its last ``STABLE_WINDOWS`` windows lie within ``STABLE_SPREAD``
of their median, or at its time cap. The spread it ended with is reported, and the
recommendation calls two formats a tie when they are closer than ``TIE`` or than their spreads
together; a tie goes to ONNX (the documented rule: the same model gets the same answer run
after run, and ONNX serves on Triton's onnxruntime backend with no libtorch).
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
from kfp_serve.components.report import Table
from kfp_serve.components.signature import ModelSignature

WINDOW_S = 0.05
STABLE_WINDOWS = 3
STABLE_SPREAD = 0.05
TIE = 0.10
#: which worker process runs a format: formats sharing a runtime share a process
RUNTIME = {"eager": "torch", "torchscript": "torch", "onnx": "onnxruntime"}
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
    spread: float = 0.0  # (max - min) / median throughput of the last windows
    stable: bool = True  # False: the time cap ended it first


@dataclass(frozen=True)
class ProfileResult:
    measurements: list[Measurement]
    recommended: str
    threads: int
    reason: str = ""  # why that format: a clear winner, or a tie and its rule
    seconds: float = 0.0

    def table(self) -> str:
        rows = [[m.model_format, str(m.batch_size), f"{m.p50_ms:.3f}", f"{m.p95_ms:.3f}",
                 f"{m.samples_per_s:,.0f}", f"{m.spread:.1%}{'' if m.stable else ' (capped)'}",
                 str(m.iterations)] for m in self.measurements]
        return Table(["format", "batch", "p50 latency (ms)", "p95 latency (ms)",
                      "throughput (samples/s)", "spread", "calls"], rows).markdown()

    def markdown(self) -> str:
        return "\n".join([
            "# Format profile", "",
            f"- each runtime in its own process, {self.threads or 'default'} thread(s), CPU, fp32;"
            f" {self.seconds:.1f} s",
            f"- recommended for serving: **{self.recommended}**: {self.reason}",
            "- spread: how far the last windows' throughputs lie apart; a measurement stops when"
            f" it is under {STABLE_SPREAD:.0%} (capped: the time cap came first)", "",
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
        from kfp_serve.components.capture import run_module
        from kfp_serve.components.model_artifact import open_model

        # the exported program as saved (open_model's checks already ran at export), else
        # the TorchScript that save_torch_model wrote for models torch.export cannot take
        module = torch.export.load(str(path)).module() if path.is_file() else open_model(path.parent).module()
        return lambda inputs: run_module(module, signature, inputs)
    raise UserError(f"format {model_format!r} cannot be profiled; use one of {sorted(PROFILED)}")


def timed_until_stable(run, inputs, batch: int, cap_s: float) -> tuple[list[float], float, bool]:
    """Call ``run(inputs)`` in windows until the last windows agree or ``cap_s`` passes:
    ``(latencies in s, spread, stable)``."""
    began = time.perf_counter()
    run(inputs)  # warm-up: a second one only where a call is cheap
    if time.perf_counter() - began < 4 * WINDOW_S:
        run(inputs)
    latencies: list[float] = []
    rates: list[float] = []
    deadline = time.perf_counter() + cap_s
    while True:
        window_began, calls = time.perf_counter(), 0
        while calls == 0 or time.perf_counter() - window_began < WINDOW_S:
            began = time.perf_counter()
            run(inputs)
            latencies.append(time.perf_counter() - began)
            calls += 1
        rates.append(calls * batch / (time.perf_counter() - window_began))
        last = rates[-STABLE_WINDOWS:]
        spread = (max(last) - min(last)) / float(np.median(last))
        if len(rates) >= STABLE_WINDOWS and spread <= STABLE_SPREAD:
            return latencies, spread, True
        if time.perf_counter() >= deadline and len(rates) >= 2:
            return latencies, spread, False


def measure(model_formats: list[str], folders: dict[str, Path], batch_sizes: list[int],
            cap_s: float, threads: int) -> list[Measurement]:
    """Time formats in this process (the worker's body), one after the other."""
    results = []
    for model_format in model_formats:
        folder = folders[model_format]
        signature = ModelSignature.load(folder)
        golden = GoldenSet.load(folder)
        run = _runner(model_format, folder / PROFILED[model_format][0], signature, threads)
        for batch in batch_sizes:
            latencies, spread, stable = timed_until_stable(run, batch_inputs(golden, batch), batch,
                                                           cap_s)
            lat = np.asarray(latencies) * 1000
            results.append(Measurement(model_format, batch, len(latencies),
                                       float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                                       batch * len(latencies) / float(np.sum(latencies)),
                                       round(spread, 4), stable))
    return results


def profile_formats(folders: dict[str, str | Path], batch_sizes: list[int],
                    seconds_per_batch: float = 2.0, threads: int = 0,
                    timeout_s: float = 600.0, budget_s: float | None = None) -> ProfileResult:
    """Profile each ``format -> artifact folder`` (one process per runtime) and recommend one.

    Each measurement runs until stable, at most ``seconds_per_batch``; with ``budget_s`` that
    cap shrinks so all measurements together fit the budget.
    """
    unknown = sorted(set(folders) - set(PROFILED))
    if unknown:
        raise UserError(f"cannot profile {unknown}; known formats: {sorted(PROFILED)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise UserError(f"batch sizes {batch_sizes} must be a non-empty list of integers >= 1")
    if seconds_per_batch <= 0 or (budget_s is not None and budget_s <= 0):
        raise UserError("seconds_per_batch and budget_s must be > 0")
    cap = seconds_per_batch
    if budget_s is not None:
        cap = min(cap, budget_s / (len(folders) * len(batch_sizes)))
    began = time.perf_counter()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    by_runtime: dict[str, list[str]] = {}
    for model_format in folders:
        by_runtime.setdefault(RUNTIME[model_format], []).append(model_format)
    found: dict[tuple[str, int], Measurement] = {}
    for runtime, formats in by_runtime.items():
        command = [sys.executable, "-m", "kfp_serve.components.export.profile",
                   "--formats", ",".join(formats),
                   *[f"--folder={f}={folders[f]}" for f in formats],
                   "--batch-sizes", ",".join(str(b) for b in batch_sizes),
                   "--seconds", str(cap), "--threads", str(threads)]
        print(f"profiling {', '.join(formats)} ({runtime}) at batch sizes {batch_sizes} ...", flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise InfrastructureError(
                f"profiling {', '.join(formats)} did not finish in {timeout_s:.0f}s") from err
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise InfrastructureError(f"profiling {', '.join(formats)} failed: {tail}")
        for m in json.loads(done.stdout.strip().splitlines()[-1]):
            found[(m["model_format"], m["batch_size"])] = Measurement(**m)
    measurements = [found[(f, b)] for f in folders for b in batch_sizes]  # in the order asked
    recommended, reason = recommend_with_reason(measurements)
    return ProfileResult(measurements, recommended, threads, reason, time.perf_counter() - began)


def recommend(measurements: list[Measurement]) -> str:
    """The servable format with the highest throughput at the largest profiled batch size; a
    tie (see :func:`recommend_with_reason`) goes to ONNX."""
    return recommend_with_reason(measurements)[0]


def recommend_with_reason(measurements: list[Measurement]) -> tuple[str, str]:
    """``(format, why)``: the fastest servable format at the largest batch size, unless the
    runner-up is within ``TIE`` or within both measurements' spreads: then a tie, won by ONNX."""
    servable = [m for m in measurements if PROFILED[m.model_format][1]]
    if not servable:
        raise UserError("no servable format was profiled; include onnx or torchscript")
    largest = max(m.batch_size for m in servable)
    ranked = sorted((m for m in servable if m.batch_size == largest),
                    key=lambda m: m.samples_per_s, reverse=True)
    best = ranked[0]
    if len(ranked) == 1:
        return best.model_format, f"the only servable format profiled (batch {largest})"
    second = ranked[1]
    gap = (best.samples_per_s - second.samples_per_s) / best.samples_per_s
    noise = max(TIE, best.spread + second.spread)
    if gap > noise:
        return best.model_format, (f"{gap:.0%} more throughput than {second.model_format} at batch"
                                   f" {largest}, beyond the noise ({noise:.0%})")
    winner = "onnx" if "onnx" in (best.model_format, second.model_format) else best.model_format
    return winner, (f"a tie at batch {largest}: {best.model_format} {best.samples_per_s:,.0f} vs"
                    f" {second.model_format} {second.samples_per_s:,.0f} samples/s ({gap:.0%} apart,"
                    f" within the noise of {noise:.0%}); ties go to onnx")


def _main() -> None:
    parser = argparse.ArgumentParser(description="profile exported formats (worker process)")
    parser.add_argument("--formats", required=True)
    parser.add_argument("--folder", action="append", required=True, help="FORMAT=PATH")
    parser.add_argument("--batch-sizes", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    from kfp_serve.components.staging import quiet_export

    folders = {f: Path(p) for f, _, p in (item.partition("=") for item in args.folder)}
    with quiet_export():
        results = measure(args.formats.split(","), folders,
                          [int(b) for b in args.batch_sizes.split(",")], args.seconds, args.threads)
    print(json.dumps([m.__dict__ for m in results]))


if __name__ == "__main__":
    _main()
