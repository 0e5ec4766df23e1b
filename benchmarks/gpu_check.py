"""GPU check, run on a GPU machine (benchmarks/run_gpu_check.sh), not in CI.

    python3 benchmarks/gpu_check.py --output $OUT/gpu_check.md

What it checks: models trained on CUDA go through the suite's export path (the artifact is
saved from a CPU fp32 copy, so it loads anywhere and its references are not TF32-rounded);
ONNX and TorchScript exports of them verify; how far a CUDA eager run with TF32 on and off is
from the CPU fp32 reference (why references are computed on the CPU); GPU eager throughput of
the transformer for scale. Core modules only: no kfp needed on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.export.torchscript_export import export_torchscript
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.train.digits import train_digits

TRANSFORMER = dict(vocab=10000, d_model=512, layers=6, heads=8, ff=2048, num_classes=3)


def _max_err(results) -> float:
    return max(c.max_abs_error for cs in results.comparisons.values() for c in cs)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "harness"))
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA GPU"
    facts: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        result = train_digits(work / "digits", epochs=15, device="cuda")
        facts["digits_cuda_train_s"] = round(time.perf_counter() - began, 2)
        facts["digits_cuda_accuracy"] = result.test_accuracy
        facts["digits_onnx_max_abs_err"] = _max_err(export_onnx(work / "digits", work / "d_onnx"))
        facts["digits_ts_max_abs_err"] = _max_err(export_torchscript(work / "digits", work / "d_ts"))

        model = build_text_encoder(**TRANSFORMER).cuda()
        inputs = text_encoder_inputs(8, 64, vocab=TRANSFORMER["vocab"])
        began = time.perf_counter()
        save_torch_model(model, text_encoder_signature(3, 512), inputs, work / "text",
                         torchscript="script")
        facts["transformer_save_from_cuda_s"] = round(time.perf_counter() - began, 2)
        facts["transformer_still_on_cuda"] = next(model.parameters()).is_cuda
        facts["transformer_onnx_max_abs_err"] = _max_err(export_onnx(work / "text", work / "t_onnx"))
        facts["transformer_ts_max_abs_err"] = _max_err(
            export_torchscript(work / "text", work / "t_ts", method="script"))

        reference = GoldenSet.load(work / "text").outputs["logits"]
        args_cuda = (torch.from_numpy(inputs["input_ids"]).cuda(),
                     torch.from_numpy(inputs["attention_mask"]).cuda())
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            with torch.no_grad():
                out = model(*args_cuda)[0].cpu().numpy()
            facts[f"cuda_eager_vs_cpu_ref_tf32_{tf32}"] = float(np.abs(out - reference).max())
        with torch.no_grad():
            for _ in range(5):
                model(*args_cuda)
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(50):
                model(*args_cuda)
            torch.cuda.synchronize()
        facts["transformer_cuda_eager_samples_per_s_b8_seq64"] = round(
            50 * 8 / (time.perf_counter() - began), 1)
    text = "# GPU check\n\n" + "\n".join(f"- {k}: {v}" for k, v in facts.items()) + "\n"
    Path(args.output).write_text(text)
    Path(args.output).with_suffix(".json").write_text(json.dumps(facts, indent=2))
    print(text)


if __name__ == "__main__":
    main()
