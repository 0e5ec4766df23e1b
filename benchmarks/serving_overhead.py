"""Benchmark: the local runtime against the same model in-process, and where the gap goes.

    .venv/bin/python benchmarks/serving_overhead.py [--output benchmarks/results/serving_overhead.md]

For the digits CNN at batch 32 and a 24.3M-parameter transformer encoder at batch 1: onnxruntime
in-process (its own process, same thread count as the server's instance), then the same ONNX
model served by the local Triton runtime with its defaults, driven by the validator's load
generator over JSON REST, binary REST, gRPC and gRPC streams (each client's requests on one
ModelStreamInfer stream) at a few concurrency levels. Triton's own
counters (read before and after each level) split the time of a request into queue, input,
inference and output inside the server; the rest of the client's latency is the protocol (HTTP
or gRPC, encoding, the Python stub's IPC) and the client itself, on the same two cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import default_output, write_results

from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local.triton_server import start_server, stop_server
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.triton.config import TritonModelOptions
from kfp_serve.components.triton.repository import build_repository
from kfp_serve.components.validate.load import run_load_grpc, run_requests
from kfp_serve.components.validate.server_metrics import difference, read_counters
from kfp_serve.components.validate.targets import OipBinaryRestTarget, OipGrpcTarget, OipRestTarget

IN_PROCESS = """
import sys, time, numpy as np, onnxruntime as ort
from pathlib import Path
from kfp_serve.components.golden import GoldenSet
path, batch, threads, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = ort.SessionOptions(); options.intra_op_num_threads = threads
session = ort.InferenceSession(path + "/model.onnx", options, providers=["CPUExecutionProvider"])
golden = GoldenSet.load(Path(path))
feed = {k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:]))) for k, v in golden.inputs.items()}
for _ in range(5): session.run(None, feed)
n, began = 0, time.perf_counter()
while time.perf_counter() - began < seconds:
    session.run(None, feed); n += 1
print(n * batch / (time.perf_counter() - began))
"""


def in_process(folder: Path, batch: int, threads: int, seconds: float) -> float:
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(folder), str(batch), str(threads),
                           str(seconds)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def served(folder: Path, name: str, batch: int, concurrency: list[int], seconds: float,
           work: Path) -> list[tuple]:
    """Rows ``(transport, concurrency, samples/s, client p50 ms, ServerStats)``."""
    build_repository(folder, "onnx", work / f"repo_{name}", name,
                     TritonModelOptions(max_batch_size=max(32, batch)))
    record = start_server(work / f"repo_{name}", name, f"bench-{name}")
    rows = []
    try:
        signature, golden = ModelSignature.load(folder), GoldenSet.load(folder)
        inputs = {k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:])))
                  for k, v in golden.inputs.items()}
        for transport in ("rest", "rest-binary", "grpc", "grpc-stream"):
            for clients in concurrency:
                if transport.startswith("grpc"):
                    target = OipGrpcTarget(record.grpc_url, name, signature,
                                           stream=transport == "grpc-stream")
                    request, outputs = target._request(inputs)
                    target.infer(inputs)

                    def level(c=clients, request=request, outputs=outputs, target=target):
                        return run_load_grpc(target.make_client, name, [request], outputs, [c], seconds)[0]
                else:
                    kind = OipBinaryRestTarget if transport == "rest-binary" else OipRestTarget
                    target = kind(record.url, name, signature)
                    target.infer(inputs)

                    def level(c=clients, target=target):
                        return run_requests(target.endpoint.connection, target.infer_path,
                                            [target.request(inputs)], [c], seconds)[0]
                target.close()
                _, before = read_counters(record.metrics_url, name)
                measured = level()
                server, after = read_counters(record.metrics_url, name)
                rows.append((transport, clients, measured.throughput * batch, measured.p50_ms,
                             difference(server, before, after, name)))
                print(f"{name} {transport} c={clients}: {measured.throughput * batch:,.0f} samples/s",
                      flush=True)
    finally:
        stop_server(record)
    return rows


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    from kfp_serve.components.export.onnx_export import export_onnx
    from kfp_serve.components.model_artifact import save_torch_model
    from kfp_serve.components.train.digits import train_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("serving_overhead"),
                        help="default: benchmarks/runs/serving_overhead-<date>.md; the committed result is"
                        " benchmarks/results/serving_overhead.md")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    lines = ["# The local runtime against in-process onnxruntime", "",
             f"Machine: {platform.processor() or platform.machine()}, {cores} cores, Python"
             f" {platform.python_version()}; {time.strftime('%Y-%m-%d')}. Client and server share"
             f" the cores. The server runs with its defaults: one instance, intra-op threads = all"
             f" {cores} cores (as Triton's onnxruntime backend); in-process uses the same count."
             f" {args.seconds:g} s per level.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_digits(work / "digits", epochs=3, min_accuracy=0.0)
        export_onnx(work / "digits", work / "d_onnx")
        model = build_text_encoder(vocab=10000, d_model=512, layers=6, heads=8, ff=2048, num_classes=3)
        save_torch_model(model, text_encoder_signature(3, 512), text_encoder_inputs(4, 64, vocab=10000),
                         work / "text", torchscript="script")
        export_onnx(work / "text", work / "t_onnx")
        for title, folder, name, batch, concurrency in (
                ("digits CNN, batch 32 per request", work / "d_onnx", "digits", 32, [1, 2, 4]),
                ("transformer encoder (24.3M), batch 1 per request, seq 64", work / "t_onnx", "text",
                 1, [1, 2, 4])):
            base = in_process(folder, batch, cores, args.seconds)
            rows = served(folder, name, batch, concurrency, args.seconds, work)
            lines += [f"## {title}", "",
                      f"In-process onnxruntime, {cores} threads: **{base:,.0f} samples/s**.", "",
                      "| transport | concurrency | samples/s | x in-process | client p50 (ms) |"
                      " server: queue | input | infer | output (ms/request) | batch formed |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for transport, clients, rate, p50, stats in rows:
                lines.append(
                    f"| {transport} | {clients} | {rate:,.0f} | {rate / base:.2f} | {p50:.2f} |"
                    f" {stats.queue_ms:.3f} | {stats.input_ms:.3f} | {stats.infer_ms:.3f} |"
                    f" {stats.output_ms:.3f} | {stats.mean_batch or 0:.2f} |")
            lines.append("")
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
