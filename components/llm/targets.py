"""Where validate_llm_endpoint calls an LLM endpoint record, and how."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kfp_serve.components import artifacts
from kfp_serve.components.errors import UserError


@dataclass(frozen=True)
class OpenAITarget:
    """An OpenAI-compatible server as the validator reaches it."""

    base_url: str  # ``/v1/...`` is appended
    model: str  # the served model name
    metrics_url: str = ""  # vLLM's Prometheus page ('' where it cannot be reached)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a Google bearer token
    #: GET routes (``/v1/models``) reach the server; Vertex AI's invoke method forwards POST only
    can_get: bool = True
    note: str = ""  # what the report says about reaching it


def openai_target(served: artifacts.ServingEndpoint | artifacts.KServeInferenceService
                  | artifacts.VertexEndpoint) -> OpenAITarget:
    """The OpenAI target of an LLM endpoint record: a local vLLM, a KServe InferenceService
    (its canary's own address while traffic is split), or a deployed model on a Vertex AI
    dedicated endpoint (through its own invoke route, so a canary is measured alone)."""
    if isinstance(served, artifacts.VertexEndpoint):
        from kfp_serve.components.llm.vertex_deploy import invoke_base
        from kfp_serve.components.validate.vertex import access_token

        token = access_token(served.predict_base)
        return OpenAITarget(
            invoke_base(served), served.model_name, "",
            {"Authorization": f"Bearer {token}"} if token else {}, can_get=False,
            note=("Vertex AI's invoke method forwards POST requests only: /v1/models and vLLM's"
                  " /metrics cannot be read; the served name is checked on every answer"))
    if isinstance(served, artifacts.KServeInferenceService):
        base = served.validation_url
        root = base[:-len("/openai")] if base.endswith("/openai") else base
        return OpenAITarget(base, served.model_name, f"{root}/metrics")
    return OpenAITarget(served.url, served.model_name, served.metrics_url)


def parity_reference_target(served: artifacts.ServingEndpoint | artifacts.KServeInferenceService
                            | artifacts.VertexEndpoint, target: OpenAITarget,
                            reference: str) -> OpenAITarget | None:
    """Whose greedy answers parity compares with: ``golden`` (None: the golden set from
    transformers), ``stable`` (on a Vertex AI endpoint: the deployed model that took the largest
    share before this deploy, through its own invoke route), or an OpenAI base URL. ``target``:
    ``openai_target(served)``, whose model name and credentials the reference shares."""
    if reference in ("", "golden"):
        return None
    if reference.startswith(("http://", "https://")):
        return OpenAITarget(reference.rstrip("/"), target.model, headers=target.headers)
    if reference != "stable":
        raise UserError(f"parity_reference {reference!r}: use 'golden', 'stable' or the OpenAI base"
                        " URL of the server to compare with (http[s]://HOST[:PORT])")
    if not isinstance(served, artifacts.VertexEndpoint):
        raise UserError("parity_reference='stable' finds the stable model on Vertex AI endpoints"
                        " (deploy_vertex_llm); elsewhere give the stable server's OpenAI base URL")
    from kfp_serve.components.llm.vertex_deploy import invoke_base

    before = {k: v for k, v in served.previous_traffic.items() if k != served.deployed_model_id}
    if not before:
        raise UserError(f"parity_reference='stable': nothing served on {served.resource_name}"
                        " before this deploy; compare with the golden set (parity_reference='golden')")
    stable = max(sorted(before), key=lambda k: before[k])
    return dataclasses.replace(target, base_url=invoke_base(
        dataclasses.replace(served, deployed_model_id=stable)), note="")


def describe(served: object) -> str:
    """An endpoint record in a few words, for errors."""
    for name in ("url", "validation_url", "resource_name"):
        if getattr(served, name, ""):
            return str(getattr(served, name))
    return type(served).__name__
