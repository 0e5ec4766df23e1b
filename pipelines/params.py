"""Parse ``--param NAME=VALUE`` against a pipeline's declared inputs."""

from __future__ import annotations

import json
from typing import Any

from kfp_serve.components.errors import UserError

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _convert(name: str, kind: str, raw: str) -> Any:
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            return _BOOLEANS[raw.lower()]
        if kind in ("List", "Dict"):
            value = json.loads(raw)
            if not isinstance(value, list if kind == "List" else dict):
                raise ValueError(kind)
            return value
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        example = {"Integer": "8", "Float": "0.5", "Boolean": "true", "List": "[1, 2]",
                   "Dict": '{"a": 1}'}[kind]
        raise UserError(
            f"--param {name}={raw!r}: expected {kind.lower()} (e.g. {name}={example})"
        ) from err
    return raw


def parse_params(pairs: list[str], pipeline: Any) -> dict[str, Any]:
    """``["epochs=3"]`` -> ``{"epochs": 3}``, typed by the pipeline's inputs."""
    inputs = pipeline.component_spec.inputs or {}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--param {pair!r} is malformed; write NAME=VALUE (e.g. epochs=3)")
        if name not in inputs:
            raise UserError(
                f"--param {name}: {pipeline.name} has no such parameter; it has"
                f" {', '.join(sorted(inputs)) or 'none'}"
            )
        values[name] = _convert(name, str(inputs[name].type), raw)
    return values
