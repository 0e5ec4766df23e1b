"""vLLM on KServe: the runtime's arguments from typed settings, and the checks that a model
fits before anything is applied.

Runtimes (kserve/kserve at aaac4e29, config/runtimes/): ``kserve-vllmserver`` (model format
``vLLM``; ``python -m vllm.entrypoints.openai.api_server --port=8080
--served-model-name={{.Name}} --model=/mnt/models``, the OpenAI routes at the root, metrics on
8080 ``/metrics``, readiness and startup probes on ``/v1/models``) and
``kserve-huggingfaceserver`` (format ``huggingface``; ``--backend=vllm`` selects vLLM; its
OpenAI routes live under ``/openai``, ``KSERVE_OPENAI_ROUTE_PREFIX`` in
python/kserve/kserve/protocol/rest/openai/endpoints.py). The InferenceService's ``args`` are
appended to the runtime's (``MergeServingRuntimeAndInferenceServiceSpecs``,
pkg/controller/v1beta1/inferenceservice/utils/utils.go), so the served model name is always the
InferenceService's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.errors import UserError

#: runtime kind -> (model format, OpenAI route prefix, arguments it needs)
RUNTIMES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "vllm": ("vLLM", "", ()),
    "huggingface": ("huggingface", "/openai", ("--backend=vllm",)),
}
#: GPU memory of GKE's accelerators (GiB), as the GKE presets name them
ACCELERATOR_MEMORY_GIB = {"T4": 16, "L4": 24, "A100": 40, "A100-80GB": 80, "H100": 80}
QUANTIZATIONS = ("awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors", "gguf")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
#: Knative's default max-revision-timeout-seconds: no request, token stream included, lasts longer
KNATIVE_TIMEOUT_CAP_S = 600


@dataclass(frozen=True)
class VllmSettings:
    """The vLLM settings users tune, as typed parameters (0 / empty: vLLM's default)."""

    max_model_len: int = 0
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 0  # 0: the number of GPUs
    max_num_seqs: int = 0
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool = False
    dtype: str = "auto"
    quantization: str = ""
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UserError(f"gpu_memory_utilization {self.gpu_memory_utilization} must be in"
                            " (0, 1]: the share of each GPU's memory vLLM may take")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.quantization and self.quantization not in QUANTIZATIONS:
            raise UserError(f"quantization {self.quantization!r} is not one of"
                            f" {', '.join(QUANTIZATIONS)} (empty: the checkpoint's own)")
        for arg in self.extra_args:
            if arg.split("=")[0] in ("--port", "--model", "--served-model-name", "--host"):
                raise UserError(f"extra_args {arg!r} would change what the serving container sets"
                                " itself (its port, the model folder, the served name); leave it out")

    def args(self, max_model_len: int, gpus: int) -> list[str]:
        args = [f"--max-model-len={max_model_len}", f"--dtype={self.dtype}"]
        if gpus:
            args += [f"--gpu-memory-utilization={self.gpu_memory_utilization:g}",
                     f"--tensor-parallel-size={self.tensor_parallel_size or gpus}"]
        if self.max_num_seqs:
            args.append(f"--max-num-seqs={self.max_num_seqs}")
        if self.enable_prefix_caching:
            args.append("--enable-prefix-caching")
        if self.enable_chunked_prefill:
            args.append("--enable-chunked-prefill")
        if self.quantization:
            args.append(f"--quantization={self.quantization}")
        return args + list(self.extra_args)


def fit(card: dict[str, Any], settings: VllmSettings, accelerator: str | None, gpus: int,
        memory_gib: dict[str, float] | None = None,
        cpu_note: str = ("no GPU: KServe runs the runtime's CPU image (vllm-openai becomes"
                         " vllm-openai-cpu)")) -> tuple[int, str]:
    """``(max model length, a line on the memory budget)``; UserError in one line where the
    model would not load: a max length beyond its context, heads the GPUs cannot split, weights
    plus one full-length sequence's KV cache beyond memory x utilisation x GPUs (vLLM's own
    start-up check), or fewer full-length sequences than ``max_num_seqs``. ``memory_gib``: GPU
    memory by accelerator name (default: GKE's names)."""
    memory_gib = memory_gib or ACCELERATOR_MEMORY_GIB
    context = int(card["max_context"])
    length = settings.max_model_len or context
    if length > context:
        raise UserError(f"max_model_len {length} is beyond the model's maximum context of"
                        f" {context} tokens; lower it to {context} or less")
    tp = settings.tensor_parallel_size or max(gpus, 1)
    if gpus and settings.tensor_parallel_size and settings.tensor_parallel_size > gpus:
        raise UserError(f"tensor_parallel_size {settings.tensor_parallel_size} needs as many GPUs;"
                        f" the predictor asks for {gpus}")
    heads = int(card.get("attention_heads") or 0)
    if tp > 1 and heads and heads % tp:  # vLLM: heads must be divisible by the TP size
        raise UserError(f"the model's {heads} attention heads do not split over"
                        f" tensor_parallel_size {tp}; use a divisor of {heads}")
    if not accelerator or not gpus:
        return length, cpu_note
    if accelerator not in memory_gib:
        raise UserError(f"accelerator {accelerator!r} is not one of {list(memory_gib)}")
    budget = memory_gib[accelerator] * 2**30 * settings.gpu_memory_utilization * gpus
    bytes_per_param = 1 if settings.quantization else {"float32": 4, "float": 4}.get(
        settings.dtype if settings.dtype != "auto" else str(card.get("dtype")), 2)
    weights = int(card["parameters"]) * bytes_per_param
    per_sequence = int(card["kv_cache_bytes_per_token"]) * length
    gib = 2**30
    if weights + per_sequence > budget:
        raise UserError(
            f"the model does not fit {gpus} x {accelerator}: weights {weights / gib:.1f} GiB +"
            f" KV cache for one {length}-token sequence {per_sequence / gib:.2f} GiB > "
            f"{budget / gib:.1f} GiB ({settings.gpu_memory_utilization:g} of"
            f" {memory_gib[accelerator]:g} GiB x {gpus}); use more or larger GPUs, a"
            " quantized checkpoint, or a lower max_model_len")
    sequences = int((budget - weights) // per_sequence)
    if settings.max_num_seqs and sequences < settings.max_num_seqs:
        raise UserError(
            f"the KV cache left after the weights holds {sequences} sequences of {length} tokens,"
            f" fewer than max_num_seqs {settings.max_num_seqs}: lower max_model_len or"
            " max_num_seqs, or add GPUs")
    return length, (f"{gpus} x {accelerator}: weights {weights / gib:.1f} GiB, KV cache room for"
                    f" {sequences} sequences of {length} tokens at utilisation"
                    f" {settings.gpu_memory_utilization:g}")


def predictor_override(runtime_kind: str, settings: VllmSettings, max_model_len: int,
                       gpus: int) -> tuple[str, str, dict[str, Any]]:
    """``(model format, OpenAI route prefix, the override that adds the vLLM arguments)``."""
    if runtime_kind not in RUNTIMES:
        raise UserError(f"runtime {runtime_kind!r} is not one of {list(RUNTIMES)}")
    model_format, prefix, needed = RUNTIMES[runtime_kind]
    args = [*needed, *settings.args(max_model_len, gpus)]
    # kubelet then copies the log's tail into the termination message, which KServe reports as
    # modelStatus.lastFailureInfo.message: vLLM's reason reaches the deploy's error line
    model = {"args": args, "terminationMessagePolicy": "FallbackToLogsOnError"}
    return model_format, prefix, {"spec": {"predictor": {"model": model}}}


def knative_note(mode: str, timeout_s: int) -> str:
    """Knative cuts every request, a token stream included, at the revision's timeout."""
    if mode not in ("Knative", "Serverless"):
        return ""
    return (f"Knative mode ends every request after {timeout_s or 300} s (at most"
            f" {KNATIVE_TIMEOUT_CAP_S} s unless the cluster raises max-revision-timeout-seconds),"
            " long token streams included; Standard mode has no such cap")
