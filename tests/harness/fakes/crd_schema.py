"""Validate objects against a CRD's openAPIV3Schema the way the API server does (tests only)."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

#: KServe's CRD and runtime manifests, kept with the tests (tests/data/kserve/README.md)
KSERVE_DATA = Path(__file__).resolve().parents[2] / "data" / "kserve"
#: the PodMonitoring and ServiceMonitor CRDs (tests/data/monitoring/README.md)
MONITORING_DATA = KSERVE_DATA.parent / "monitoring"


@functools.lru_cache(maxsize=2)
def load_crd_schema(version: str = "v1beta1") -> dict:
    """The CRD's openAPIV3Schema (parsed once: the file is 2 MB of YAML)."""
    text = (KSERVE_DATA / "serving.kserve.io_inferenceservices.yaml").read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


@functools.lru_cache(maxsize=4)
def load_monitoring_schema(group: str, plural: str) -> dict:
    """The openAPIV3Schema of a monitoring CRD kept in tests/data/monitoring."""
    text = (MONITORING_DATA / f"{group}_{plural}.yaml").read_text()
    crd = next(d for d in yaml.safe_load_all(text) if d)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields the structural schema does not declare (strict field validation rejects them)."""
    found = []
    if isinstance(obj, dict) and schema.get("type") == "object" and not schema.get(
            "x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None and not (path == "" and key in ("apiVersion", "kind")):
                found.append(f"{path}.{key}".lstrip("."))
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def prune(obj, schema: dict, top: bool = True):
    """``obj`` without the fields the structural schema does not declare, as the API server
    prunes them when the request does not ask for strict field validation."""
    if isinstance(obj, dict) and schema.get("type") == "object" and not schema.get(
            "x-kubernetes-preserve-unknown-fields"):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        kept = {}
        for key, value in obj.items():
            if properties is not None and key in properties:
                kept[key] = prune(value, properties[key], False)
            elif isinstance(extra, dict):
                kept[key] = prune(value, extra, False)
            elif properties is None or (top and key in ("apiVersion", "kind")):
                kept[key] = value
        return kept
    if isinstance(obj, list) and "items" in schema:
        return [prune(item, schema["items"], False) for item in obj]
    return obj


def without_canary(schema: dict) -> dict:
    """The schema of a KServe before 0.20, whose InferenceService has no spec.canary."""
    import copy

    older = copy.deepcopy(schema)
    older["properties"]["spec"]["properties"].pop("canary", None)
    return older


def schema_errors(obj: dict, schema: dict) -> list[str]:
    """All violations, as the API server lists them in a 422: unknown fields and type errors."""
    import jsonschema

    errors = [f'unknown field "{f}"' for f in unknown_fields(obj, schema)]
    validator = jsonschema.Draft7Validator(_strip_metadata(schema))
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path)
        errors.append(f"{where}: Invalid value: {error.message}")
    return errors


def _strip_metadata(schema: dict) -> dict:
    """metadata is validated by the API server's ObjectMeta rules, not the CRD schema."""
    stripped = dict(schema)
    stripped["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
    return stripped
