"""KServe v1 / Vertex AI predict envelopes: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""

from __future__ import annotations

import numpy as np

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.signature import ModelSignature


def instances(signature: ModelSignature, inputs: dict[str, np.ndarray]) -> list:
    """Vertex AI/KServe v1 instances: one value per row, or a dict per row for several inputs."""
    names = signature.input_names
    rows = len(inputs[names[0]])
    if len(names) == 1:
        return inputs[names[0]].tolist()
    return [{n: inputs[n][i].tolist() for n in names} for i in range(rows)]


def parse_predict(signature: ModelSignature, payload: dict) -> dict[str, np.ndarray]:
    predictions = payload.get("predictions")
    if not isinstance(predictions, list):
        raise InfrastructureError(f"predict answered without a predictions list: {str(payload)[:200]}")
    specs = signature.outputs
    if len(specs) == 1:
        return {specs[0].name: np.asarray(predictions, dtype=specs[0].dtype)}
    return {s.name: np.asarray([row[s.name] for row in predictions], dtype=s.dtype) for s in specs}


def shape_problems(signature: ModelSignature, outputs: dict[str, np.ndarray]) -> set[str]:
    """Outputs whose shape disagrees with the signature (the check a protocol without a
    metadata API allows)."""
    problems = set()
    for spec in signature.outputs:
        if spec.name not in outputs:
            continue
        shape, want = outputs[spec.name].shape, spec.shape_with_unknowns()
        if len(shape) != len(want) or any(w not in (-1, s) for s, w in zip(shape, want)):
            problems.add(f"output {spec.name!r} has shape {list(shape)}, signature says {want}")
    return problems
