"""Benchmark: the same work as Triton Model Navigator's ``optimize``, both sides in one run.

    .venv/bin/python benchmarks/navigator_side_by_side.py --navigator-python /path/to/venv/bin/python

The work, per model: from a PyTorch module in memory, export TorchScript and ONNX, verify
them, profile (eager, TorchScript, ONNX) at batch 1, 8 and 32 on the CPU. kfp-serve:
save_torch_model (torch.export + fp32 references) + export_onnx + export_torchscript (each
verified at two batch sizes from the saved file) + profile_formats. Navigator:
``nav.torch.optimize(target_formats=(TORCHSCRIPT, ONNX), target_device=CPU,
optimization_profile=OptimizationProfile(batch_sizes=[1, 8, 32]))``, which captures, exports,
verifies and profiles. Both are timed around the work only (imports and building the module
excluded), one after the other on the same machine. Navigator runs in its own virtual
environment (it pins numpy<2 and pulls tensorrt, which cannot install here: install
triton-model-navigator==0.14.0 with --no-deps and its other requirements).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from results_io import default_output, write_results

TRANSFORMER = dict(vocab=30000, d_model=512, layers=6, heads=8, ff=2048, num_classes=3)
BATCH_SIZES = [1, 8, 32]

NAVIGATOR_WORKER = textwrap.dedent('''
    import json, sys, time, types
    from pathlib import Path
    import torch
    kind, work, tests = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if kind == "cnn":
        from torch import nn
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                              nn.Linear(64, 10))
        model.load_state_dict(torch.load(work / "cnn_state.pt"))
        data = [torch.rand(2, 1, 8, 8) for _ in range(4)]
    else:
        # the zoo's module, without the suite (not installed in this environment)
        class Anything:
            def __init__(self, *args, **kwargs):
                pass

        stub = types.ModuleType("kfp_serve.components.signature")
        stub.BATCH, stub.ModelSignature, stub.TensorSpec = "batch", Anything, Anything
        for name in ("kfp_serve", "kfp_serve.components"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["kfp_serve.components.signature"] = stub
        sys.path.insert(0, tests)
        from model_zoo import build_text_encoder, text_encoder_inputs
        model = build_text_encoder(**json.loads(sys.argv[4]))
        inputs = text_encoder_inputs(2, 64, vocab=json.loads(sys.argv[4])["vocab"])
        data = [(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]))
                for _ in range(4)]
    import model_navigator as nav
    model.eval()
    began = time.perf_counter()
    try:
        package = nav.torch.optimize(
            model=model, dataloader=data, target_formats=(nav.Format.TORCHSCRIPT, nav.Format.ONNX),
            target_device=nav.DeviceKind.CPU,
            optimization_profile=nav.OptimizationProfile(batch_sizes=json.loads(sys.argv[5])),
            workspace=work / ("nav_" + kind))
        status = "finished"
    except Exception as err:
        status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    print(json.dumps({"seconds": time.perf_counter() - began, "status": status}))
''')


def run_navigator(python: str, kind: str, work: Path, timeout_s: float) -> dict:
    script = work / "navigator_worker.py"
    script.write_text(NAVIGATOR_WORKER)
    tests = str(Path(__file__).resolve().parents[1] / "tests" / "harness")
    began = time.perf_counter()
    try:
        done = subprocess.run([python, str(script), kind, str(work), tests, json.dumps(TRANSFORMER),
                               json.dumps(BATCH_SIZES)],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - began,
                "status": f"did not finish in {timeout_s:.0f} s (stopped)"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"seconds": time.perf_counter() - began,
                "status": f"crashed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"}
    return json.loads(lines[-1])


def run_ours(model, signature, example, work: Path, name: str, torchscript: str | None) -> dict:
    from kfp_serve.components.export.onnx_export import export_onnx
    from kfp_serve.components.export.profile import profile_formats
    from kfp_serve.components.export.torchscript_export import export_torchscript
    from kfp_serve.components.model_artifact import save_torch_model

    steps = {}
    began = time.perf_counter()
    save_torch_model(model, signature, example, work / name, torchscript=torchscript)
    steps["save (torch.export + references)"] = time.perf_counter() - began
    mark = time.perf_counter()
    export_onnx(work / name, work / f"{name}_onnx")
    steps["ONNX export + verify"] = time.perf_counter() - mark
    mark = time.perf_counter()
    export_torchscript(work / name, work / f"{name}_ts", method="auto" if torchscript is None else "saved")
    steps["TorchScript export + verify"] = time.perf_counter() - mark
    mark = time.perf_counter()
    profile = profile_formats({"eager": work / name, "torchscript": work / f"{name}_ts",
                               "onnx": work / f"{name}_onnx"}, BATCH_SIZES)
    steps["profile (3 formats x 3 batch sizes)"] = time.perf_counter() - mark
    return {"seconds": time.perf_counter() - began, "steps": steps, "profile": profile}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    from kfp_serve.components.train.digits import SIGNATURE, build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--navigator-python", required=True,
                        help="python of a venv with triton-model-navigator installed")
    parser.add_argument("--timeout", type=float, default=600.0, help="per Navigator run")
    parser.add_argument("--output", default=default_output("navigator_side_by_side"),
                        help="default: benchmarks/runs/navigator_side_by_side-<date>.md; the"
                        " committed result is benchmarks/results/navigator_side_by_side.md")
    args = parser.parse_args()
    version = subprocess.run([args.navigator_python, "-c", "import importlib.metadata as m;"
                              "print(m.version('triton-model-navigator'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    rows, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        cnn = build_model().eval()
        torch.save(cnn.state_dict(), work / "cnn_state.pt")
        text = build_text_encoder(**TRANSFORMER)
        params = sum(p.numel() for p in text.parameters()) / 1e6
        cases = [
            ("digits CNN", "cnn", cnn, SIGNATURE, {"image": torch.rand(4, 1, 8, 8).numpy()}, None),
            (f"transformer encoder ({params:.1f}M params, seq 64)", "text", text,
             text_encoder_signature(3, TRANSFORMER["d_model"]),
             text_encoder_inputs(4, 64, vocab=TRANSFORMER["vocab"]), "script"),
        ]
        for title, kind, model, signature, example, torchscript in cases:
            print(f"{title}: kfp-serve ...", flush=True)
            ours = run_ours(model, signature, example, work, kind, torchscript)
            print(f"{title}: Navigator {version} ...", flush=True)
            theirs = run_navigator(args.navigator_python, kind, work, args.timeout)
            ratio = theirs["seconds"] / ours["seconds"]
            rows.append(f"| {title} | {ours['seconds']:.1f} s | {theirs['seconds']:.1f} s"
                        f" ({theirs['status']}) | {ratio:.1f}x |")
            details += [f"### {title}", "", "| kfp-serve step | seconds |", "|---|---|",
                        *[f"| {k} | {v:.1f} |" for k, v in ours["steps"].items()], "",
                        f"Recommended: **{ours['profile'].recommended}** — {ours['profile'].reason}",
                        "", ours["profile"].table(), ""]
    lines = [
        "# The same work as Model Navigator's optimize, both sides in one run", "",
        f"Machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))}"
        f" cores, CPU only, Python {platform.python_version()}, torch {torch.__version__};"
        f" triton-model-navigator {version}; {time.strftime('%Y-%m-%d')}.", "",
        "Work: export TorchScript + ONNX, verify, profile eager/TorchScript/ONNX at batch"
        f" {BATCH_SIZES}. Timed around the work only.", "",
        "| model | kfp-serve | Navigator optimize | Navigator / kfp-serve |", "|---|---|---|---|",
        *rows, "", *details,
    ]
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
