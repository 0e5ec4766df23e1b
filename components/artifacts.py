"""The suite's artifact kinds and what lies at each artifact's path.

KFP 2.17 accepts only ``system.*`` and ``google.*`` schema titles, so the suite's artifacts are
``system.Model`` (models) and ``system.Artifact`` (everything else), told apart by
``metadata["kfp_serve_kind"]``. Components check the kind of what they are given, so wiring the
wrong artifact into a step fails at once with a one-line error instead of deep inside a library.
"""

from __future__ import annotations

from typing import Any

from kfp_serve.components.errors import UserError

KIND_KEY = "kfp_serve_kind"

#: kind -> what the artifact's path holds
KINDS: dict[str, str] = {
    "TorchModel": "a folder: model.pt2 (torch.export), signature.json, golden.npz",
    "OnnxModel": "a folder: model.onnx (+ model.onnx.data when > 2 GiB), signature.json, golden.npz",
    "TorchScriptModel": "a folder: model.pt (TorchScript), signature.json, golden.npz",
    "TensorRTModel": "a folder: model.plan, timing.cache, signature.json, golden.npz",
    "TritonRepository": "a Triton model repository: <model>/config.pbtxt, <model>/<version>/",
    "TorchServeArchive": "config/config.properties + model-store/<name>.mar (KServe) and"
                         " model.mar (Vertex AI)",
    "PublishedVersion": "a committed, immutable version in storage; the artifact URI is"
                        " gs://.../v<N> (or a local folder), metadata.content_kind says what it holds",
    "KServeInferenceService": "metadata name, namespace, mode, url, internal_url,"
                              " validation_url, latest_ready_revision, traffic; the artifact"
                              " URI is the URL",
    "VertexModel": "google.VertexModel: metadata resourceName (projects/.../models/ID@VERSION);"
                   " the artifact URI is its REST URL",
    "VertexEndpoint": "google.VertexEndpoint: metadata resourceName, deployed_model_id, traffic,"
                      " previous_traffic, protocol, predict_base",
    "ServingEndpoint": "a JSON file; metadata url, model_name, protocol (and pid for local)",
    "TritonModelOptions": "a JSON file: the serving options tune_triton_config chose (metadata"
                          " options, and every trial)",
}


def mark(artifact: Any, kind: str, **metadata: Any) -> None:
    """Record the kind (and extra metadata) on an output artifact."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    artifact.metadata[KIND_KEY] = kind
    artifact.metadata.update(metadata)


def expect(artifact: Any, *kinds: str) -> str:
    """Raise UserError unless the input artifact is of one of ``kinds``; returns its kind."""
    kind = artifact.metadata.get(KIND_KEY)
    if kind not in kinds:
        wanted = " or ".join(kinds)
        got = f"a {kind}" if kind else "an artifact without a kfp_serve kind"
        raise UserError(
            f"input artifact {getattr(artifact, 'name', '')!r} is {got}; this step needs a"
            f" {wanted} ({KINDS[kinds[0]]})"
        )
    return kind


def expect_published(artifact: Any, *content_kinds: str) -> str:
    """Raise UserError unless the input is a PublishedVersion holding one of ``content_kinds``
    (e.g. ``TritonRepository``); returns the content kind."""
    expect(artifact, "PublishedVersion")
    content = artifact.metadata.get("content_kind", "")
    if content not in content_kinds:
        wanted = " or ".join(content_kinds)
        raise UserError(
            f"{artifact.metadata.get('uri') or getattr(artifact, 'uri', '')} holds"
            f" {'a ' + content if content else 'nothing this step knows'}; this step needs a"
            f" published {wanted}: publish one with publish_model"
        )
    return content
