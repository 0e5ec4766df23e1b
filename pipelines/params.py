"""Parse ``--param NAME=VALUE`` against a pipeline's declared inputs."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from kfp_serve.components.errors import UserError

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _convert(name: str, kind: str, raw: str) -> Any:
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
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
        expected = "a finite float" if kind == "Float" else kind.lower()
        raise UserError(
            f"--param {name}={raw!r}: expected {expected} (e.g. {name}={example})"
        ) from err
    return raw


def parse_params(pairs: list[str], pipeline: Any, here: bool = False) -> dict[str, Any]:
    """``["epochs=3"]`` -> ``{"epochs": 3}``, typed by the pipeline's inputs and checked
    against the rules of the components they reach (``here``: the run is on this machine)."""
    inputs = pipeline.component_spec.inputs or {}
    values: dict[str, Any] = {}
    raws: dict[str, str] = {}
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
        if name in raws:
            raise UserError(f"--param {name} is given twice ({name}={raws[name]!r} and"
                            f" {name}={raw!r}); give it once")
        raws[name] = raw
        values[name] = _convert(name, str(inputs[name].type), raw)
    check_params(pipeline, values, raws, here)
    return values


def check_params(pipeline: Any, values: dict[str, Any], raws: dict[str, str] | None = None,
                 here: bool = False) -> None:
    """Each value against the rules of every component input it feeds (before any step runs)."""
    from kfp_serve.pipelines.rules import broken_rule

    fed = component_inputs(pipeline)
    for name, value in values.items():
        for component, component_input in fed.get(name, []):
            says = broken_rule(component, component_input, value, here)
            if says is not None:
                shown = (raws or {}).get(name, value)
                raise UserError(f"--param {name}={shown}: must be {says}")


def component_inputs(pipeline: Any) -> dict[str, list[tuple[str, str]]]:
    """Pipeline parameter -> the (component, input) pairs it reaches, through nested DAGs
    (exit handlers, conditions, pipelines in pipelines) of the compiled pipeline spec."""
    spec = pipeline.pipeline_spec
    found: dict[str, list[tuple[str, str]]] = {}

    def walk(dag: Any, names: dict[str, str]) -> None:
        for task in dag.tasks.values():
            reference = task.component_ref.name
            component = spec.components[reference]
            inner = {}
            for key, given in task.inputs.parameters.items():
                origin = names.get(given.component_input_parameter)
                if origin is None:
                    continue
                if component.WhichOneof("implementation") == "dag":
                    inner[key] = origin
                else:
                    name = re.sub(r"-\d+$", "", reference.removeprefix("comp-"))  # used twice
                    found.setdefault(origin, []).append((name.replace("-", "_"), key))
            if component.WhichOneof("implementation") == "dag" and inner:
                walk(component.dag, inner)

    walk(spec.root.dag, {name: name for name in spec.root.input_definitions.parameters})
    return found
