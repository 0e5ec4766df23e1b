"""KFP wrapper: serve a published LLM checkpoint with vLLM on KServe."""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_kserve_llm(
    model: Input[Artifact],
    inference_service: Output[Artifact],
    report: Output[Markdown],
    name: str,
    namespace: str,
    runtime: str = "vllm",
    max_model_len: int = 0,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel_size: int = 0,
    max_num_seqs: int = 0,
    enable_prefix_caching: bool = False,
    enable_chunked_prefill: bool = False,
    dtype: str = "auto",
    quantization: str = "",
    extra_args: List[str] = [],  # noqa: B006 (KFP reads the default; never mutated)
    accelerator: Optional[str] = None,
    gpus: int = 0,
    cpu: str = "4",
    memory: str = "16Gi",
    deployment_mode: str = "Standard",
    canary_traffic_percent: int = 100,
    service_account: Optional[str] = None,
    spot: bool = False,
    model_load_timeout_s: int = 1800,
    min_replicas: int = 1,
    max_replicas: int = 0,
    timeout_s: int = 0,
    metrics_monitor: Optional[str] = None,
    ready_timeout_s: float = 1800.0,
    keep_failed: bool = False,
    kserve_namespace: str = "kserve",
    api_host: Optional[str] = None,
) -> NamedTuple("Outputs", [("url", str)]):
    """Serves a published LLM checkpoint with vLLM on KServe and waits until it answers.

    ``kserve-vllmserver`` (KServe 0.20+, model format ``vLLM``) by default, or the Hugging
    Face runtime with ``--backend=vllm``; the checkpoint's published version is the
    ``storageUri`` (copied to ``/mnt/models``) and the served model name is the
    InferenceService's. Before anything is applied, each a one-line error: the max length
    within the model's context, the model fitting the accelerator (weights plus the KV cache of
    one max-length sequence within memory x utilisation x GPUs, and max_num_seqs such
    sequences where given), attention heads divisible by the tensor-parallel size, then the
    checks deploy_kserve makes (RBAC, the runtime in this KServe, a server-side dry run).
    Canary, promote, rollback and diagnostics are deploy_kserve's; vLLM's own start-up failures
    (no memory for the cache blocks, a max length beyond the model, CUDA out of memory) are
    named in the diagnostics with what to change.

    Args:
        model: A PublishedVersion of an LlmCheckpoint (package_llm_checkpoint).
        name: InferenceService name; also the model name clients send.
        namespace: Kubernetes namespace.
        runtime: ``vllm`` (kserve-vllmserver) or ``huggingface`` (kserve-huggingfaceserver with
            ``--backend=vllm``; its OpenAI routes are under ``/openai``).
        max_model_len: vLLM's ``--max-model-len``; 0: the model's maximum context.
        gpu_memory_utilization: Share of each GPU's memory vLLM takes (weights + KV cache).
        tensor_parallel_size: GPUs one replica shards the model over; 0: all of ``gpus``.
        max_num_seqs: Sequences vLLM batches at once; 0: vLLM's default.
        enable_prefix_caching: vLLM's ``--enable-prefix-caching``.
        enable_chunked_prefill: vLLM's ``--enable-chunked-prefill``.
        dtype: ``auto`` (the checkpoint's), ``bfloat16``, ``float16`` or ``float32``.
        quantization: ``awq``, ``gptq``, ``fp8``, ... (empty: the checkpoint's own).
        extra_args: More vLLM arguments, as on its command line.
        accelerator: GKE GPU: ``T4``, ``L4``, ``A100``, ``A100-80GB`` or ``H100``.
        gpus: GPUs per replica (0 with an accelerator: 1).
        cpu: CPU request and limit.
        memory: Memory request and limit.
        deployment_mode: ``Standard`` (recommended: no request timeout cap on long streams) or
            ``Knative`` (requests end after the revision's timeout, at most 600 s by default).
        canary_traffic_percent: Below 100: a canary beside the model that serves.
        service_account: Service account of the predictor (storage credentials).
        spot: Run on GKE Spot VMs.
        model_load_timeout_s: Startup probe budget (loading weights takes minutes).
        min_replicas: Minimum replicas.
        max_replicas: Maximum replicas (0: KServe's default).
        timeout_s: Request timeout (0: KServe's default).
        metrics_monitor: ``podmonitoring`` or ``servicemonitor`` for vLLM's ``vllm:*`` metrics.
        ready_timeout_s: How long to wait until the model answers.
        keep_failed: Keep an InferenceService this step created when it fails.
        kserve_namespace: Where KServe is installed.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.

    Returns:
        inference_service: A KServeInferenceService artifact (protocol ``openai``): what
            validate_llm_endpoint calls, and promote_kserve / rollback_kserve act on.
        report: The deployment summary with the memory budget.
        url: The URL clients call.
    """
    from collections import namedtuple

    from kfp_serve.components import artifacts
    from kfp_serve.components.kserve.llm_runtime import VllmSettings
    from kfp_serve.components.llm.kserve_deploy import deploy_llm

    published = artifacts.read_published(model, artifacts.LlmCheckpoint)
    settings = VllmSettings(
        max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs,
        enable_prefix_caching=enable_prefix_caching, enable_chunked_prefill=enable_chunked_prefill,
        dtype=dtype, quantization=quantization, extra_args=tuple(extra_args))
    record, summary = deploy_llm(
        published, name=name, namespace=namespace, runtime_kind=runtime, settings=settings,
        accelerator=accelerator or None, gpus=gpus, cpu=cpu, memory=memory,
        deployment_mode=deployment_mode, canary_traffic_percent=canary_traffic_percent,
        service_account=service_account or None, spot=spot,
        model_load_timeout_s=model_load_timeout_s, min_replicas=min_replicas,
        max_replicas=max_replicas, timeout_s=timeout_s, metrics_monitor=metrics_monitor or None,
        ready_timeout_s=ready_timeout_s, keep_failed=keep_failed,
        kserve_namespace=kserve_namespace, api_host=api_host)
    with open(report.path, "w") as handle:
        handle.write(summary)
    artifacts.mark(inference_service, record)
    inference_service.uri = record.url or inference_service.uri
    print(summary)
    return namedtuple("Outputs", ["url"])(record.url)
