"""Benchmark: is validate_endpoint's load generator the bottleneck? And what does serving cost?

    .venv/bin/python benchmarks/load_generator.py [--output benchmarks/results/load_generator.md]

Needs Debian's wrk and nginx (apt-get install wrk nginx-light).

0. The generator's maximum rate: the same request against a trivial endpoint (nginx answering
   a fixed JSON body) from run_load and from wrk, at the same concurrency.
1. The same single-sample JSON inference request to a local Triton server (the digits model)
   from run_load (the validator's load phase) and from wrk (Debian's, with a Lua body), at the
   same concurrency, for the same time. Their request rates show whether our generator limits
   what the validation measures.
2. Serving overhead: samples/s through the local Triton runtime (JSON over HTTP, batch 32) vs
   onnxruntime in-process on the same model and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import default_output, write_results

from kfp_serve.components.export.onnx_export import export_onnx, onnxruntime_session, run_onnxruntime
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local.triton_server import start_server, stop_server
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.train.digits import train_digits
from kfp_serve.components.triton.config import TritonModelOptions
from kfp_serve.components.triton.repository import build_repository
from kfp_serve.components.validate.targets import OipRestTarget


class _Nginx:
    """nginx on a free 127.0.0.1 port answering every request with a fixed JSON body."""

    def __init__(self, work: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        root = work / "nginx"
        root.mkdir()
        temps = "".join(f"{kind}_temp_path {root}/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (root / "nginx.conf").write_text(
            f"worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\naccess_log off;\n{temps}keepalive_requests 1000000;\n"
            f"server {{ listen 127.0.0.1:{self.port};\n location / {{ default_type application/json;"
            " return 200 '{\"model_name\":\"digits\",\"outputs\":[]}'; } }\n}\n")
        self.process = subprocess.Popen(["nginx", "-p", str(root), "-c", str(root / "nginx.conf"),
                                         "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _wrk(url: str, body: dict, clients: int, seconds: int, work: Path) -> float:
    script = work / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(json.dumps(body))}\n")
    done = subprocess.run(["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds}s",
                           "-s", str(script), f"{url}/v2/models/digits/infer"],
                          capture_output=True, text=True, check=True)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if non2xx:
        raise RuntimeError(f"wrk got {non2xx.group(1)} error responses: {done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))


def _row(clients: int, ours: float, ref: float, errors: float) -> str:
    return f"| {clients} | {ours:,.0f} | {ref:,.0f} | {ours / ref:.2f} | {errors:.1%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("load_generator"),
                        help="default: benchmarks/runs/load_generator-<date>.md; the committed result is"
                        " benchmarks/results/load_generator.md")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install wrk nginx-light")
    rows, serving, trivial = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["KFP_SERVE_STATE_DIR"] = str(work / "state")
        train_digits(work / "model")
        export_onnx(work / "model", work / "onnx")
        build_repository(work / "onnx", "onnx", work / "repo", "digits", TritonModelOptions())
        signature, golden = ModelSignature.load(work / "onnx"), GoldenSet.load(work / "onnx")
        sample = golden.inputs["image"][:1]
        body = {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
                            "data": sample.reshape(-1).tolist()}]}
        nginx = _Nginx(work)
        try:
            for clients in (1, 4, 16):
                [level] = OipRestTarget(nginx.url, "digits", signature).load(golden, [clients], args.seconds)
                wrk = _wrk(nginx.url, body, clients, args.seconds, work)
                trivial.append((clients, level.throughput, wrk, level.error_rate))
                print("trivial", clients, level.throughput, wrk, flush=True)
        finally:
            nginx.stop()
        record = start_server(work / "repo", "digits", "bench")
        try:
            for clients in (1, 4, 16):
                [level] = OipRestTarget(record.url, "digits", signature).load(golden, [clients], args.seconds)
                wrk = _wrk(record.url, body, clients, args.seconds, work)
                rows.append((clients, level.throughput, wrk, level.error_rate))
                print(clients, level.throughput, wrk, flush=True)
            batch = {"image": np.resize(golden.inputs["image"], (32, 1, 8, 8)).astype(np.float32)}
            client = OipRestTarget(record.url, "digits", signature)
            for _ in range(5):
                client.infer(batch)
            began, n = time.perf_counter(), 0
            while time.perf_counter() - began < args.seconds:
                client.infer(batch)
                n += 1
            serving.append(("local Triton, JSON over HTTP, 1 client", 32 * n / (time.perf_counter() - began)))
            client.close()
        finally:
            stop_server(record)
        session = onnxruntime_session(work / "onnx" / "model.onnx", threads=1)
        began, n = time.perf_counter(), 0
        while time.perf_counter() - began < args.seconds:
            run_onnxruntime(session, signature, batch)
            n += 1
        serving.append(("onnxruntime in-process, 1 thread", 32 * n / (time.perf_counter() - began)))
    lines = [
        "# Load generator and serving overhead", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (client and server share them),"
        f" Python {platform.python_version()}; {args.seconds} s per measurement; the digits model"
        " on the local Triton runtime (1 model instance, onnxruntime 1 thread). run_load spreads"
        " its clients over one worker process per core.", "",
        "## Maximum rate: a trivial endpoint (nginx, fixed JSON answer), run_load vs wrk", "",
        "| concurrency | run_load (req/s) | wrk (req/s) | run_load / wrk | run_load errors |",
        "|---|---|---|---|---|",
        *[_row(*t) for t in trivial],
        "", f"run_load's best rate on the trivial endpoint is"
        f" {max(t[1] for t in trivial) / max(r[2] for r in rows):.1f}x the best rate wrk reaches on"
        " the model endpoint below, where run_load measures"
        f" {min(r[1] / r[2] for r in rows):.2f}-{max(r[1] / r[2] for r in rows):.2f} of wrk's rate"
        " although it shares the cores with the server.", "",
        "## Request rate: validate_endpoint's run_load vs wrk (same request, same concurrency)", "",
        "| concurrency | run_load (req/s) | wrk (req/s) | run_load / wrk | run_load errors |",
        "|---|---|---|---|---|",
        *[_row(*r) for r in rows],
        "", "## Serving overhead (batch 32)", "", "| path | samples/s |", "|---|---|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in serving], "",
    ]
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
