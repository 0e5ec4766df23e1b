"""One entry point for every kind of endpoint artifact: golden-set check, load phase, SLO gates."""

from __future__ import annotations

from typing import Any

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.endpoint import ValidationResult
from kfp_serve.components.validate.load import SloGates, run_load, run_requests


def validate_target(kind: str, metadata: dict[str, Any], signature: ModelSignature,
                    golden: GoldenSet, atol: float, rtol: float, max_batch_size: int,
                    ready_timeout_s: float, load_seconds: float, concurrency: list[int],
                    gates: SloGates, transport: str = "rest") -> ValidationResult:
    """Validate the endpoint an artifact of ``kind`` describes (its ``metadata``).

    ``ServingEndpoint`` / ``KServeInferenceService``: an Open Inference Protocol v2 server (a
    KServe canary is called through its tagged URL, so the canary itself is checked); with
    ``transport="grpc"`` (or a ``grpc-v2`` InferenceService) the golden set and the load phase
    go over gRPC.
    ``protocol: v1`` in the metadata: KServe v1 (e.g. KServe's TorchServe runtime).
    ``VertexEndpoint``: the deployed model under test, through rawPredict or predict.
    """
    tensor_names = metadata.get("tensor_names") or None
    if transport not in ("rest", "grpc"):
        raise UserError(f"transport {transport!r} is not rest or grpc")
    grpc = transport == "grpc" or metadata.get("protocol") == "grpc-v2"
    if grpc and (kind == "VertexEndpoint" or metadata.get("protocol") == "v1"):
        raise UserError("gRPC validation needs an Open Inference Protocol v2 server; this endpoint"
                        " is called over REST (transport=rest)")
    if kind == "VertexEndpoint":
        from kfp_serve.components.validate.vertex import VertexTarget, access_token, validate_vertex

        target = VertexTarget(metadata["predict_base"], metadata["deployed_model_id"],
                              metadata["protocol"], metadata["model_name"],
                              access_token(metadata["predict_base"]))
        result = validate_vertex(target, signature, golden, atol, rtol, max_batch_size,
                                 ready_timeout_s, tensor_names)
        if load_seconds > 0:
            result.load = run_requests(target.connection, target.path,
                                       target.bodies(signature, golden, 1, tensor_names),
                                       target.headers(), concurrency, load_seconds)
    elif metadata.get("protocol") == "v1":
        from kfp_serve.components.validate.kserve_v1 import run_load_v1, validate_v1

        url = metadata.get("canary_url") or metadata["url"]
        result = validate_v1(url, metadata["model_name"], signature, golden, atol, rtol,
                             max_batch_size, ready_timeout_s)
        if load_seconds > 0:
            result.load = run_load_v1(url, metadata["model_name"], signature, golden, concurrency,
                                      load_seconds)
    else:
        from kfp_serve.components.validate.endpoint import validate_endpoint

        # while a canary takes part of the traffic, check the canary itself, not the traffic mix
        url = metadata.get("canary_url") or metadata["url"]
        target = (metadata.get("grpc_url") or url) if grpc else url
        result = validate_endpoint(target, metadata["model_name"], signature, golden, atol, rtol,
                                   max_batch_size, ready_timeout_s, tensor_names, grpc=grpc)
        if load_seconds > 0 and grpc:
            from kfp_serve.components.validate.load import run_load_grpc

            result.load = run_load_grpc(target, metadata["model_name"], signature, golden,
                                        concurrency, load_seconds, tensor_names)
        elif load_seconds > 0:
            result.load = run_load(url, metadata["model_name"], signature, golden, concurrency,
                                   load_seconds, tensor_names)
    if result.load:
        result.slo_problems = gates.violations(result.load)
    return result
