"""LLM pipelines: package a Hugging Face checkpoint, serve it with vLLM, validate, clean up."""

from typing import List

from kfp import dsl

from kfp_serve.components import (
    deploy_kserve_llm,
    deploy_local_llm,
    deploy_vertex_llm,
    package_llm_checkpoint,
    promote_kserve,
    promote_vertex,
    rollback_kserve,
    rollback_vertex,
    undeploy_local_llm,
    validate_llm_endpoint,
)


def _validate_then_promote_or_roll_back(validation: dict, promote, roll_back) -> None:
    """validate_llm_endpoint with ``validation``'s arguments; its verdict promotes or rolls back
    (a failed validation is a handled outcome, not a failed run)."""
    validate = validate_llm_endpoint(**validation, fail_on_mismatch=False).set_caching_options(False)
    with dsl.If(validate.outputs["Output"] == True):  # noqa: E712 (a KFP condition)
        promote().set_caching_options(False)
    with dsl.Else():
        roll_back().set_caching_options(False)


@dsl.pipeline(name="llm-to-serve-local")
def llm_to_serve_local(
    checkpoint_uri: str = "demo",
    model_name: str = "demo-llm",
    publish_destination: str = "gs://kfp-serve-local/models/demo-llm",
    max_model_len: int = 0,
    kv_cache_gib: int = 1,
    concurrency: List[int] = [1, 4, 16],  # noqa: B006 (KFP reads the default; never mutated)
    input_len: int = 128,
    output_len: int = 64,
    slo_ttft_ms: float = 0.0,
    slo_tpot_ms: float = 0.0,
    max_p95_ttft_ms: float = 0.0,
    max_p95_tpot_ms: float = 0.0,
    min_goodput_ratio: float = 0.0,
    logprob_atol: float = 0.05,
):
    """Packages an LLM checkpoint, publishes it, serves it with a local vLLM and validates it.

    Everything runs on one machine; vLLM (its CPU build, in its own environment: ``make
    llm-env``) listens on 127.0.0.1 and is stopped at the end of the run, also when validation
    fails.

    Args:
        checkpoint_uri: A Hugging Face model folder, a gs:// folder, or ``demo`` (a tiny Llama
            with random weights, made on the spot: nothing is downloaded).
        model_name: Name the model is served under.
        publish_destination: Where the checked checkpoint is published as a new version;
            vLLM serves the published copy. Locally, ``kfp-serve run --gcs-emulator`` serves
            gs:// from fake-gcs-server.
        max_model_len: vLLM's max model length; 0: the model's maximum context.
        kv_cache_gib: KV-cache space of vLLM's CPU backend.
        concurrency: Requests in flight per load level.
        input_len: Tokens per synthetic prompt.
        output_len: Tokens per answer.
        slo_ttft_ms: Per-request TTFT limit counted as goodput (0: none).
        slo_tpot_ms: Per-request TPOT limit counted as goodput (0: none).
        max_p95_ttft_ms: Gate: p95 TTFT at every level (0: none).
        max_p95_tpot_ms: Gate: p95 TPOT at every level (0: none).
        min_goodput_ratio: Gate: share of requests within the SLO at every level (0: none).
        logprob_atol: Log-probability tolerance of the parity check.
    """
    undeploy = undeploy_local_llm(deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    with dsl.ExitHandler(undeploy):
        package = package_llm_checkpoint(
            checkpoint_uri=checkpoint_uri, model_name=model_name, destination=publish_destination,
        ).set_caching_options(False)  # each run publishes a version of its own
        deploy = deploy_local_llm(
            model=package.outputs["published"], deployment=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
        ).set_caching_options(False)  # a cached deploy would start no server
        validate_llm_endpoint(
            endpoint=deploy.outputs["endpoint"], model=package.outputs["packaged"],
            concurrency=concurrency, input_len=input_len, output_len=output_len,
            slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, max_p95_ttft_ms=max_p95_ttft_ms,
            max_p95_tpot_ms=max_p95_tpot_ms, min_goodput_ratio=min_goodput_ratio,
            logprob_atol=logprob_atol,
        ).set_caching_options(False)


@dsl.pipeline(name="llm-to-serve-kserve")
def llm_to_serve_kserve(
    checkpoint_uri: str = "demo",
    publish_destination: str = "gs://my-bucket/models/demo-llm",
    namespace: str = "kubeflow-user-example-com",
    service_name: str = "demo-llm",
    runtime: str = "vllm",
    accelerator: str = "",
    gpus: int = 0,
    max_model_len: int = 0,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int = 0,
    deployment_mode: str = "Standard",
    canary_traffic_percent: int = 10,
    concurrency: List[int] = [1, 4, 16],  # noqa: B006
    slo_ttft_ms: float = 0.0,
    slo_tpot_ms: float = 0.0,
    max_p95_ttft_ms: float = 0.0,
    max_p95_tpot_ms: float = 0.0,
    min_goodput_ratio: float = 0.0,
    logprob_atol: float = 0.05,
    ready_timeout_s: float = 1800.0,
    api_host: str = "",
):
    """Packages an LLM checkpoint, serves a vLLM canary on KServe, validates it, promotes or rolls back.

    Args:
        checkpoint_uri: A Hugging Face model folder, a gs:// folder, or ``demo``.
        publish_destination: gs://BUCKET/PATH where each run publishes a new version.
        namespace: Namespace of the InferenceService (rbac/kfp-serve-kserve.yaml there).
        service_name: InferenceService name, also the model name clients send.
        runtime: ``vllm`` (kserve-vllmserver) or ``huggingface`` (with ``--backend=vllm``).
        accelerator: GKE GPU (T4, L4, A100, A100-80GB, H100); empty: CPU.
        gpus: GPUs per replica (0 with an accelerator: 1).
        max_model_len: vLLM's max model length; 0: the model's context.
        gpu_memory_utilization: Share of GPU memory vLLM takes.
        max_num_seqs: Sequences vLLM batches; 0: its default.
        deployment_mode: Standard (recommended for streams) or Knative.
        canary_traffic_percent: Share of the new model until validation decides.
        concurrency: Requests in flight per load level.
        slo_ttft_ms: Per-request TTFT limit counted as goodput (0: none).
        slo_tpot_ms: Per-request TPOT limit counted as goodput (0: none).
        max_p95_ttft_ms: Gate: p95 TTFT at every level (0: none).
        max_p95_tpot_ms: Gate: p95 TPOT at every level (0: none).
        min_goodput_ratio: Gate: share of requests within the SLO at every level (0: none).
        logprob_atol: Log-probability tolerance of the parity check.
        ready_timeout_s: How long to wait until the model answers.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.
    """
    package = package_llm_checkpoint(
        checkpoint_uri=checkpoint_uri, model_name=service_name, destination=publish_destination,
    ).set_caching_options(False)
    deploy = deploy_kserve_llm(
        model=package.outputs["published"], name=service_name, namespace=namespace,
        runtime=runtime, accelerator=accelerator, gpus=gpus, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
        deployment_mode=deployment_mode, canary_traffic_percent=canary_traffic_percent,
        ready_timeout_s=ready_timeout_s, api_host=api_host,
    ).set_caching_options(False)
    service = deploy.outputs["inference_service"]
    _validate_then_promote_or_roll_back(
        dict(endpoint=service, model=package.outputs["packaged"], concurrency=concurrency,
             slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, max_p95_ttft_ms=max_p95_ttft_ms,
             max_p95_tpot_ms=max_p95_tpot_ms, min_goodput_ratio=min_goodput_ratio,
             logprob_atol=logprob_atol),
        promote=lambda: promote_kserve(inference_service=service, api_host=api_host),
        roll_back=lambda: rollback_kserve(inference_service=service, api_host=api_host))


@dsl.pipeline(name="llm-to-serve-vertex")
def llm_to_serve_vertex(
    checkpoint_uri: str = "demo",
    publish_destination: str = "gs://my-bucket/models/demo-llm",
    project: str = "my-project",
    location: str = "us-central1",
    display_name: str = "demo-llm",
    endpoint: str = "demo-llm",
    serving_image: str = "",
    machine_type: str = "g2-standard-12",
    accelerator_type: str = "NVIDIA_L4",
    accelerator_count: int = 1,
    max_model_len: int = 0,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int = 0,
    traffic_percentage: int = 10,
    concurrency: List[int] = [1, 4, 16],  # noqa: B006
    slo_ttft_ms: float = 0.0,
    slo_tpot_ms: float = 0.0,
    max_p95_ttft_ms: float = 0.0,
    max_p95_tpot_ms: float = 0.0,
    min_goodput_ratio: float = 0.0,
    logprob_atol: float = 0.05,
    parity_reference: str = "golden",
    operation_timeout_s: float = 3600.0,
    api_endpoint: str = "",
):
    """Packages an LLM checkpoint, serves a vLLM canary on Vertex AI, validates, promotes or rolls back.

    Args:
        checkpoint_uri: A Hugging Face model folder, a gs:// folder, or ``demo``.
        publish_destination: gs://BUCKET/PATH where each run publishes a new version.
        project: Google Cloud project id.
        location: Vertex AI region (the bucket should be in it too).
        display_name: Model display name; each run adds a version; also the served model name.
        endpoint: Dedicated endpoint's display name (created on the first run), id or resource name.
        serving_image: vLLM image in Artifact Registry; empty: Vertex AI's vLLM image (GPU).
        machine_type: Machine type per replica.
        accelerator_type: e.g. NVIDIA_L4 or NVIDIA_H100_80GB; empty: CPU (needs serving_image).
        accelerator_count: GPUs per replica.
        max_model_len: vLLM's max model length; 0: the model's context.
        gpu_memory_utilization: Share of GPU memory vLLM takes.
        max_num_seqs: Sequences vLLM batches; 0: its default.
        traffic_percentage: Share of the new deployed model until validation decides (the first
            model on an endpoint takes 100 %).
        concurrency: Requests in flight per load level.
        slo_ttft_ms: Per-request TTFT limit counted as goodput (0: none).
        slo_tpot_ms: Per-request TPOT limit counted as goodput (0: none).
        max_p95_ttft_ms: Gate: p95 TTFT at every level (0: none).
        max_p95_tpot_ms: Gate: p95 TPOT at every level (0: none).
        min_goodput_ratio: Gate: share of requests within the SLO at every level (0: none).
        logprob_atol: Log-probability tolerance of the parity check.
        parity_reference: ``golden`` (transformers' answers, packaged with the checkpoint) or
            ``stable`` (the deployed model the canary may replace: for models too large for a
            CPU reference).
        operation_timeout_s: How long to wait for each Vertex AI operation.
        api_endpoint: Vertex AI API host; empty: {location}-aiplatform.googleapis.com.
    """
    package = package_llm_checkpoint(
        checkpoint_uri=checkpoint_uri, model_name=display_name, destination=publish_destination,
    ).set_caching_options(False)
    deploy = deploy_vertex_llm(
        model=package.outputs["published"], project=project, location=location,
        display_name=display_name, endpoint=endpoint, serving_image=serving_image,
        machine_type=machine_type, accelerator_type=accelerator_type,
        accelerator_count=accelerator_count, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
        traffic_percentage=traffic_percentage, operation_timeout_s=operation_timeout_s,
        api_endpoint=api_endpoint,
    ).set_caching_options(False)
    endpoint_artifact = deploy.outputs["vertex_endpoint"]
    _validate_then_promote_or_roll_back(
        dict(endpoint=endpoint_artifact, model=package.outputs["packaged"], concurrency=concurrency,
             slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, max_p95_ttft_ms=max_p95_ttft_ms,
             max_p95_tpot_ms=max_p95_tpot_ms, min_goodput_ratio=min_goodput_ratio,
             logprob_atol=logprob_atol, parity_reference=parity_reference),
        promote=lambda: promote_vertex(vertex_endpoint=endpoint_artifact,
                                       operation_timeout_s=operation_timeout_s),
        roll_back=lambda: rollback_vertex(vertex_endpoint=endpoint_artifact,
                                          operation_timeout_s=operation_timeout_s))

