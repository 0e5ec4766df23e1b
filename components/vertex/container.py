"""The serving container Vertex AI runs for a published artifact (``ModelContainerSpec``):
Triton for a repository, Vertex AI's prebuilt PyTorch container (TorchServe) for an archive,
vLLM's OpenAI server for an LLM checkpoint, and what a large model needs of it (deployment
timeout, probes, shared memory)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfp_serve.components.errors import UserError

#: prebuilt Vertex AI serving images for TorchServe archives (model.mar at the artifact URI)
PYTORCH_CPU_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/pytorch-cpu.2-4:latest"
PYTORCH_GPU_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/pytorch-gpu.2-4:latest"
_REGISTRY = re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)/")

#: ModelContainerSpec.deployment_timeout's limit (model.proto: "Limit ... is 2 hours")
MAX_DEPLOYMENT_TIMEOUT_S = 7200
#: Vertex AI's own vLLM serving image (Model Garden's): it reads ``--model=gs://...`` itself
VLLM_GPU_IMAGE = ("us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/"
                  "pytorch-vllm-serve:20250601_0916_RC01")
#: vLLM's OpenAI server as the container runs it (``$(AIP_STORAGE_URI)``: Vertex AI's copy of
#: the artifact, expanded from the variables it sets)
VLLM_PORT = 8080
VLLM_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server", "--host=0.0.0.0",
                f"--port={VLLM_PORT}", "--model=$(AIP_STORAGE_URI)")
#: ModelContainerSpec.invoke_route_prefix: "/*" is the only value Vertex AI takes (model.proto)
INVOKE_ALL = "/*"
STARTUP_PERIOD_S = 10
#: where tritonserver serves gRPC (its default, command_line_parser.cc); in Vertex AI mode only
#: with ``--allow-grpc=true``, and Vertex AI sends gRPC requests and health checks to the first
#: of ``grpcPorts`` (model.proto)
TRITON_GRPC_PORT = 8001


def check_image(image: str) -> str:
    if not _REGISTRY.match(image):
        raise UserError(f"serving image {image!r}: Vertex AI pulls serving images only from"
                        " Artifact Registry (REGION-docker.pkg.dev) or Container Registry (gcr.io);"
                        " copy it there and pass that name")
    return image


@dataclass(frozen=True)
class ContainerSpec:
    """``Model.containerSpec``: how Vertex AI runs and calls the serving container."""

    image_uri: str
    args: list[str]
    env: dict[str, str]
    port: int
    predict_route: str
    health_route: str
    large_model: LargeModel | None = None
    #: "/*": every route of the server through the invoke method, and no predict route (an
    #: invoke-enabled model deploys to dedicated endpoints only)
    invoke_route_prefix: str = ""
    #: the container's gRPC port (``grpcPorts``; 0: gRPC requests to it are disabled)
    grpc_port: int = 0

    def to_api(self) -> dict:
        body = {"imageUri": self.image_uri, "args": list(self.args),
                "env": [{"name": k, "value": v} for k, v in sorted(self.env.items())],
                "ports": [{"containerPort": self.port}], "healthRoute": self.health_route}
        if self.grpc_port:
            body["grpcPorts"] = [{"containerPort": self.grpc_port}]
        if self.invoke_route_prefix:
            body["invokeRoutePrefix"] = self.invoke_route_prefix
        else:
            body["predictRoute"] = self.predict_route
        return {**body, **(self.large_model.to_api(self) if self.large_model else {})}


@dataclass(frozen=True)
class LargeModel:
    """What a model that loads for minutes needs from ``ModelContainerSpec`` (model.proto):
    a longer deployment timeout (at most 2 hours), a startup probe that gives the server that
    long before the health probe counts, a health probe period, and shared memory (Triton's
    Python backend and PyTorch's workers use /dev/shm). 0 leaves Vertex AI's default."""

    deployment_timeout_s: int = 0
    startup_timeout_s: int = 0
    health_period_s: int = 0
    shared_memory_mb: int = 0

    def check(self) -> LargeModel:
        if not 0 <= self.deployment_timeout_s <= MAX_DEPLOYMENT_TIMEOUT_S:
            raise UserError(f"deployment_timeout_s={self.deployment_timeout_s}: Vertex AI allows at"
                            f" most {MAX_DEPLOYMENT_TIMEOUT_S} s (2 hours); 0 for its default")
        for name in ("startup_timeout_s", "health_period_s", "shared_memory_mb"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}={getattr(self, name)} must be >= 0 (0: Vertex AI's default)")
        if self.deployment_timeout_s and self.startup_timeout_s > self.deployment_timeout_s:
            raise UserError(f"startup_timeout_s={self.startup_timeout_s} outlasts"
                            f" deployment_timeout_s={self.deployment_timeout_s}: the deploy would"
                            " give up first; raise deployment_timeout_s")
        return self

    def to_api(self, container: ContainerSpec) -> dict:
        probe = {"httpGet": {"path": container.health_route, "port": container.port}}
        body: dict = {}
        if self.deployment_timeout_s:
            body["deploymentTimeout"] = f"{self.deployment_timeout_s}s"
        if self.shared_memory_mb:
            body["sharedMemorySizeMb"] = str(self.shared_memory_mb)
        if self.startup_timeout_s:  # ready within the timeout: 10 s apart, that many failures
            body["startupProbe"] = {**probe, "periodSeconds": STARTUP_PERIOD_S,
                                    "failureThreshold": -(-self.startup_timeout_s // STARTUP_PERIOD_S)}
        if self.health_period_s:
            body["healthProbe"] = {**probe, "periodSeconds": self.health_period_s}
        return body


def container_for(content_kind: str, model_name: str, image: str, gpu: bool,
                  env: dict[str, str] | None = None, large_model: LargeModel | None = None,
                  server_args: tuple[str, ...] = (), grpc: bool = False) -> tuple[ContainerSpec, str]:
    """The serving container for a published artifact, and the protocol that reaches it:
    ``vertex-raw`` (Open Inference Protocol bodies through rawPredict, for Triton; with
    ``grpc`` Triton's gRPC server on too, reached through DirectRawPredict),
    ``vertex-predict`` (``{"instances": [...]}`` through predict, for TorchServe) or ``openai``
    (vLLM's OpenAI routes through invoke, for an LLM checkpoint; ``server_args``: vLLM's
    settings)."""
    env = dict(env or {})
    if grpc and content_kind != "TritonRepository":
        raise UserError("grpc=True serves Triton's gRPC protocol; this model is a"
                        f" {content_kind or 'registry model'}, whose server Vertex AI reaches over"
                        " HTTP only: drop grpc, or publish a Triton repository")
    if content_kind == "LlmCheckpoint":
        if not image and not gpu:
            raise UserError("Vertex AI's vLLM image needs a GPU: set accelerator_type and"
                            " accelerator_count, or pass serving_image with a CPU build of vLLM"
                            " that reads gs:// model folders")
        args = [*VLLM_COMMAND, f"--served-model-name={model_name}", *server_args]
        return ContainerSpec(check_image(image or VLLM_GPU_IMAGE), args, env, VLLM_PORT, "", "/health",
                             large_model, INVOKE_ALL), "openai"
    if content_kind == "TritonRepository":
        if not image:
            raise UserError("a Triton repository needs serving_image: a tritonserver image in"
                            " Artifact Registry (copy nvcr.io/nvidia/tritonserver:<tag>-py3 there)")
        args = ["tritonserver", "--model-repository=$(AIP_STORAGE_URI)",
                f"--vertex-ai-default-model={model_name}", "--exit-timeout-secs=30"]
        if grpc:
            args += ["--allow-grpc=true", f"--grpc-port={TRITON_GRPC_PORT}"]
        return ContainerSpec(check_image(image), args, env, 8000, f"/v2/models/{model_name}/infer",
                             "/v2/health/ready", large_model,
                             grpc_port=TRITON_GRPC_PORT if grpc else 0), "vertex-raw"
    if content_kind == "TorchServeArchive":
        default = PYTORCH_GPU_IMAGE if gpu else PYTORCH_CPU_IMAGE
        return ContainerSpec(check_image(image or default), [], env, 7080,
                             "/predictions/model", "/ping", large_model), "vertex-predict"
    raise UserError(f"Vertex AI serves a published TritonRepository, TorchServeArchive or"
                    f" LlmCheckpoint, not {content_kind or 'an unknown artifact'}; publish one"
                    " with publish_model or package_llm_checkpoint")
