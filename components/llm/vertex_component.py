"""KFP wrapper: serve a published LLM checkpoint with vLLM on a Vertex AI dedicated endpoint."""

from typing import Dict, List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from kfp_serve.components import images
from kfp_serve.components.vertex.kfp_types import VertexEndpoint, VertexModel


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_vertex_llm(
    model: Input[Artifact],
    vertex_model: Output[VertexModel],
    vertex_endpoint: Output[VertexEndpoint],
    report: Output[Markdown],
    gcp_resources: dsl.OutputPath(str),
    project: str,
    location: str,
    display_name: str,
    endpoint: Optional[str] = None,
    serving_image: Optional[str] = None,
    machine_type: str = "g2-standard-12",
    accelerator_type: Optional[str] = "NVIDIA_L4",
    accelerator_count: int = 1,
    max_model_len: int = 0,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel_size: int = 0,
    max_num_seqs: int = 0,
    enable_prefix_caching: bool = False,
    enable_chunked_prefill: bool = False,
    dtype: str = "auto",
    quantization: str = "",
    extra_args: List[str] = [],  # noqa: B006 (KFP reads the default; never mutated)
    min_replicas: int = 1,
    max_replicas: int = 1,
    traffic_percentage: int = 100,
    labels: Optional[Dict[str, str]] = None,
    env: Optional[Dict[str, str]] = None,
    version_aliases: Optional[List[str]] = None,
    service_account: Optional[str] = None,
    spot: bool = False,
    reservation: Optional[str] = None,
    inference_timeout_s: int = 0,
    deployment_timeout_s: int = 3600,
    startup_timeout_s: int = 1800,
    shared_memory_mb: int = 0,
    operation_timeout_s: float = 3600.0,
    api_endpoint: Optional[str] = None,
) -> NamedTuple("Outputs", [("deployed_model_id", str), ("endpoint_resource_name", str)]):
    """Serves a published LLM checkpoint with vLLM on a Vertex AI dedicated endpoint.

    The version is uploaded as a new Vertex AI model version running vLLM's OpenAI server
    (Vertex AI's own vLLM image by default, which reads the weights from the published gs://
    version) with ``invokeRoutePrefix: "/*"``: every OpenAI route, streams included, is
    reachable at ``https://DEDICATED_DNS/v1/projects/.../endpoints/E/invoke/v1/...`` (by the
    traffic split) and ``.../deployedModels/D/invoke/v1/...`` (one deployed model). Such models
    deploy to dedicated endpoints only: the endpoint is created dedicated, and a shared one is
    refused. Before any call, each a one-line error: the max length within the model's context,
    the model fitting the GPUs (weights plus the KV cache of one max-length sequence within
    memory x utilisation x GPUs, and max_num_seqs such sequences where given), attention heads
    divisible by the tensor-parallel size, and every check deploy_vertex makes. Versions,
    traffic split, resume on retry, promote_vertex and rollback_vertex are deploy_vertex's.

    Args:
        model: A PublishedVersion of an LlmCheckpoint on gs:// (package_llm_checkpoint).
        project: Google Cloud project id.
        location: Vertex AI region, e.g. ``us-central1``.
        display_name: Model display name (versions accumulate under it).
        endpoint: Endpoint display name, numeric id or resource name; empty: display_name.
        serving_image: vLLM serving image in Artifact Registry; empty: Vertex AI's vLLM image
            (GPU). Another image must run ``python3 -m vllm.entrypoints.openai.api_server`` and
            read ``--model=gs://...``.
        machine_type: Machine type of each replica, e.g. ``g2-standard-12``, ``a3-highgpu-1g``.
        accelerator_type: e.g. ``NVIDIA_L4``, ``NVIDIA_H100_80GB``; empty: CPU (needs
            serving_image).
        accelerator_count: GPUs per replica (must suit the machine type).
        max_model_len: vLLM's ``--max-model-len``; 0: the model's maximum context.
        gpu_memory_utilization: Share of each GPU's memory vLLM takes (weights + KV cache).
        tensor_parallel_size: GPUs one replica shards the model over; 0: all of them.
        max_num_seqs: Sequences vLLM batches at once; 0: vLLM's default.
        enable_prefix_caching: vLLM's ``--enable-prefix-caching``.
        enable_chunked_prefill: vLLM's ``--enable-chunked-prefill``.
        dtype: ``auto`` (the checkpoint's), ``bfloat16``, ``float16`` or ``float32``.
        quantization: ``awq``, ``gptq``, ``fp8``, ... (empty: the checkpoint's own).
        extra_args: More vLLM arguments, as on its command line.
        min_replicas: Minimum replicas.
        max_replicas: Maximum replicas.
        traffic_percentage: Share of the endpoint's traffic for the new model (below 100: a
            canary beside the versions that serve).
        labels: Labels on the model and a created endpoint.
        env: Environment variables of the serving container.
        version_aliases: Aliases for the new version.
        service_account: Service account the deployed model runs as (it reads the weights).
        spot: Run the replicas on Spot VMs.
        reservation: ``any``, ``none`` or ``projects/P/zones/Z/reservations/NAME``.
        inference_timeout_s: The endpoint's request timeout in seconds, long streams included
            (0: Vertex AI's default).
        deployment_timeout_s: How long Vertex AI lets the deploy take (at most 7200): pulling
            the image and loading the weights take minutes.
        startup_timeout_s: How long vLLM may take to answer ``/health`` before its health
            checks count.
        shared_memory_mb: /dev/shm in MB; 0: 16384 when the model is sharded over GPUs.
        operation_timeout_s: How long to wait for each long-running operation.
        api_endpoint: Vertex AI API host; empty: ``{location}-aiplatform.googleapis.com``.

    Returns:
        vertex_model: google.VertexModel (metadata.resourceName ``.../models/ID@VERSION``).
        vertex_endpoint: google.VertexEndpoint with protocol ``openai``: what
            validate_llm_endpoint calls (this deployed model alone), and promote_vertex /
            rollback_vertex act on.
        report: The deployment summary with the memory budget and the OpenAI base URLs.
        gcp_resources: The running long-running operation (``VertexLro``), so Vertex AI
            Pipelines shows and cancels it.
        deployed_model_id: Id of the new deployed model on the endpoint.
        endpoint_resource_name: ``projects/.../locations/.../endpoints/ID``.
    """
    from collections import namedtuple

    from kfp_serve.components import artifacts
    from kfp_serve.components.kserve.llm_runtime import VllmSettings
    from kfp_serve.components.llm.vertex_deploy import deploy_llm, llm_spec
    from kfp_serve.components.vertex import api as vertex_api
    from kfp_serve.components.vertex.container import LargeModel

    published = artifacts.read_published(model, artifacts.LlmCheckpoint)
    settings = VllmSettings(
        max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs,
        enable_prefix_caching=enable_prefix_caching, enable_chunked_prefill=enable_chunked_prefill,
        dtype=dtype, quantization=quantization, extra_args=tuple(extra_args))
    spec, notes = llm_spec(
        published, settings, project=project, location=location, display_name=display_name,
        serving_image=serving_image or "", endpoint=endpoint or "", machine_type=machine_type,
        accelerator_type=accelerator_type or "", accelerator_count=accelerator_count,
        min_replicas=min_replicas, max_replicas=max_replicas,
        traffic_percentage=traffic_percentage, labels=labels or {}, env=env or {},
        version_aliases=version_aliases or [], service_account=service_account or "",
        spot=spot, reservation=reservation or "", inference_timeout_s=inference_timeout_s,
        large_model=LargeModel(deployment_timeout_s, startup_timeout_s, 0, shared_memory_mb))

    # the operation running now, for the pipeline's UI
    record = vertex_api.gcp_resources_writer(gcp_resources, location, api_endpoint or "")
    result, endpoint_record, summary = deploy_llm(
        spec, notes, api_endpoint or "", operation_timeout_s, deploy_id=vertex_endpoint.uri,
        on_operation=record)
    result.write_outputs(spec, endpoint_record, summary, api_endpoint or "", vertex_model,
                         vertex_endpoint, report.path)
    return namedtuple("Outputs", ["deployed_model_id", "endpoint_resource_name"])(
        result.deployed_model_id, result.endpoint)
