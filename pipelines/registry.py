"""Every component and pipeline the suite ships, by name (the CLI and compile read this)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from kfp_serve.components import COMPONENT_MODULES
from kfp_serve.components.errors import UserError


@dataclass(frozen=True)
class PipelineEntry:
    """Where a pipeline lives and which task output is its human-readable summary."""

    module: str
    # (task folder, output name) of the Markdown artifacts printed after a local run
    summaries: tuple[tuple[str, str], ...] = ()


PIPELINES: dict[str, PipelineEntry] = {
    "train_to_serve_local": PipelineEntry(
        "kfp_serve.pipelines.definitions.local",
        summaries=(("profile-formats", "report"), ("validate-endpoint", "report")),
    ),
    "train_to_serve_local_tuned": PipelineEntry(
        "kfp_serve.pipelines.definitions.tuned",
        summaries=(("validate-endpoint", "report"),),
    ),
    "train_to_serve_kserve": PipelineEntry(
        "kfp_serve.pipelines.definitions.kserve",
        summaries=(("deploy-kserve", "report"), ("validate-endpoint", "report")),
    ),
    "deploy_existing_model": PipelineEntry(
        "kfp_serve.pipelines.definitions.existing",
        summaries=(("validate-endpoint", "report"),),
    ),
    "train_to_serve_torchserve": PipelineEntry(
        "kfp_serve.pipelines.definitions.torchserve",
        summaries=(("deploy-kserve", "report"), ("validate-endpoint", "report")),
    ),
    "llm_to_serve_local": PipelineEntry(
        "kfp_serve.pipelines.definitions.llm",
        summaries=(("package-llm-checkpoint", "card"), ("validate-llm-endpoint", "report")),
    ),
    "llm_to_serve_kserve": PipelineEntry(
        "kfp_serve.pipelines.definitions.llm",
        summaries=(("deploy-kserve-llm", "report"), ("validate-llm-endpoint", "report")),
    ),
    "llm_to_serve_vertex": PipelineEntry(
        "kfp_serve.pipelines.definitions.llm",
        summaries=(("deploy-vertex-llm", "report"), ("validate-llm-endpoint", "report")),
    ),
    "train_to_serve_vertex": PipelineEntry(
        "kfp_serve.pipelines.definitions.vertex",
        summaries=(("deploy-vertex", "report"), ("validate-endpoint", "report")),
    ),
}


def component_names() -> list[str]:
    return sorted(COMPONENT_MODULES)


def pipeline_names() -> list[str]:
    return sorted(PIPELINES)


def load_component(name: str) -> Any:
    if name not in COMPONENT_MODULES:
        raise UserError(f"unknown component {name!r}; known: {', '.join(component_names())}")
    module = importlib.import_module(f"kfp_serve.components.{COMPONENT_MODULES[name]}")
    return getattr(module, name)


def load_pipeline(name: str) -> Any:
    if name not in PIPELINES:
        raise UserError(
            f"unknown pipeline {name!r}; known: {', '.join(pipeline_names())}"
            " (see `kfp-serve list`)"
        )
    return getattr(importlib.import_module(PIPELINES[name].module), name)


def description(component: Any) -> str:
    """The first line of a component's or pipeline's docstring."""
    doc = (component.component_spec.description or "").strip()
    return doc.splitlines()[0] if doc else ""
