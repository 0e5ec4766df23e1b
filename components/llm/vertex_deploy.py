"""deploy_vertex_llm's work: a published LLM checkpoint served by vLLM on a Vertex AI dedicated
endpoint, through deploy_vertex's upload, endpoint, traffic split and resume logic.

The model is uploaded with ``invokeRoutePrefix: "/*"`` (Vertex AI's "arbitrary custom routes",
model.proto ``ModelContainerSpec.invoke_route_prefix``): every route of vLLM's OpenAI server is
reachable as ``.../endpoints/E/invoke/<route>`` (by the traffic split) or
``.../endpoints/E/deployedModels/D/invoke/<route>`` (that deployed model alone), streams
included. Such a model deploys to dedicated endpoints only, and ``:predict``/``:rawPredict`` are
off for it: rawPredict reaches one route of a server (completions, say), not chat, not the
stream of another route, which is why the suite does not use it for LLMs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kfp_serve.components import artifacts
from kfp_serve.components.kserve.llm_runtime import VllmSettings, fit
from kfp_serve.components.vertex.container import LargeModel
from kfp_serve.components.vertex.spec import VertexDeploySpec

#: GPU memory (GiB) of the accelerators Vertex AI serves on, by its AcceleratorType names
#: (Compute Engine "GPU machine types"; A4: 1,440 GB over 8 B200)
VERTEX_GPU_MEMORY_GIB: dict[str, float] = {
    "NVIDIA_TESLA_P4": 8, "NVIDIA_TESLA_T4": 16, "NVIDIA_TESLA_P100": 16, "NVIDIA_TESLA_V100": 16,
    "NVIDIA_L4": 24, "NVIDIA_TESLA_A100": 40, "NVIDIA_A100_80GB": 80, "NVIDIA_H100_80GB": 80,
    "NVIDIA_H100_MEGA_80GB": 80, "NVIDIA_RTX_PRO_6000": 96, "NVIDIA_H200_141GB": 141,
    "NVIDIA_B200": 180}
#: /dev/shm given to a container that shards the model over several GPUs (NCCL's buffers live
#: there; a container's default is far too small for tensor parallelism)
TENSOR_PARALLEL_SHM_MB = 16384


def llm_spec(published: artifacts.PublishedVersion, settings: VllmSettings,
             **fields: Any) -> tuple[VertexDeploySpec, list[str]]:
    """The checked deploy spec for ``published`` (an LlmCheckpoint) and the notes for the
    summary. ``fields``: VertexDeploySpec's own (project, location, machine, ...). One-line
    UserErrors, before any call: the max length beyond the model's context, heads the GPUs
    cannot split, a model that does not fit memory x utilisation x GPUs, and everything
    deploy_vertex checks."""
    checkpoint: artifacts.LlmCheckpoint = published.content  # type: ignore[assignment]
    gpus = int(fields.get("accelerator_count") or 0)
    accelerator = fields.get("accelerator_type") or None
    length, budget = fit(checkpoint.card, settings, accelerator, gpus, VERTEX_GPU_MEMORY_GIB,
                         cpu_note="no GPU: serving_image runs vLLM on the CPU")
    notes = [f"memory: {budget}"]
    large: LargeModel = fields.pop("large_model", LargeModel())
    if (settings.tensor_parallel_size or gpus) > 1 and not large.shared_memory_mb:
        large = dataclasses.replace(large, shared_memory_mb=TENSOR_PARALLEL_SHM_MB)
        notes.append(f"shared memory: {TENSOR_PARALLEL_SHM_MB} MB for tensor parallelism over"
                     f" {settings.tensor_parallel_size or gpus} GPUs")
    spec = VertexDeploySpec(
        artifact_uri=published.uri, content_kind=published.content_kind,
        model_name=checkpoint.model_name, dedicated_endpoint=True, large_model=large,
        server_args=tuple(settings.args(length, gpus)), **fields).check()
    return spec, notes


def invoke_base(endpoint: artifacts.VertexEndpoint, deployed_model_only: bool = True) -> str:
    """The OpenAI base URL of an LLM on a Vertex AI endpoint: its deployed model alone (what
    validation calls, a canary included), or the endpoint by its traffic split."""
    if deployed_model_only:
        return f"{endpoint.predict_base}/deployedModels/{endpoint.deployed_model_id}/invoke"
    return f"{endpoint.predict_base}/invoke"


def deploy_llm(spec: VertexDeploySpec, notes: list[str], api_endpoint: str, timeout_s: float,
               deploy_id: str, on_operation: Any = None
               ) -> tuple[Any, artifacts.VertexEndpoint, str]:
    """Upload, deploy and wait (deploy_vertex's rollout.deploy); the deployment, the endpoint
    record validation and promote/rollback read, and the summary."""
    from kfp_serve.components.vertex.rollout import deploy

    result = deploy(spec, api_endpoint, timeout_s, deploy_id=deploy_id, on_operation=on_operation)
    record = result.endpoint_record(spec, api_endpoint, {})
    lines = [*notes, f"OpenAI base URL (the endpoint's traffic split): `{invoke_base(record, False)}`",
             f"this deployed model alone: `{invoke_base(record)}`"]
    summary = result.summary(spec) + "".join(f"- {line}\n" for line in lines)
    return result, record, summary
