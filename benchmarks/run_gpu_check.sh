#!/usr/bin/env bash
# Runs on a GPU machine with CUDA torch, onnx, onnxruntime, onnxscript and scikit-learn: the GPU
# check plus the core tests under that machine's torch. No pip install: core modules need no
# kfp, so a symlinked package tree on PYTHONPATH is enough. Results go to $OUT (default ./gpu-out).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
mkdir -p /tmp/pkg/kfp_serve
ln -sfn "$PWD/components" /tmp/pkg/kfp_serve/components
ln -sfn "$PWD/pipelines" /tmp/pkg/kfp_serve/pipelines
export PYTHONPATH=/tmp/pkg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, onnx, onnxruntime, onnxscript, sklearn, numpy; print('torch', torch.__version__, 'onnx', onnx.__version__, 'ort', onnxruntime.__version__, 'onnxscript', onnxscript.__version__, 'numpy', numpy.__version__)"
timeout 300 python3 benchmarks/gpu_check.py --output "$OUT/gpu_check.md" 2>&1 | tee "$OUT/gpu_check.log" | tail -30
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/export tests/train \
  tests/ground/test_verify.py tests/ground/test_signature.py -rs 2>&1 | tee "$OUT/pytest.log" | tail -25
