"""kfp-serve components: ``from kfp_serve.components import export_onnx``.

Component functions are loaded on first use, so importing a core module (``signature``,
``triton.config`` ...) never imports kfp and the CLI starts fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# component name -> module that defines it (relative to this package)
COMPONENT_MODULES: dict[str, str] = {
    "train_digits_classifier": "train.component",
    "export_onnx": "export.component",
    "export_torchscript": "export.component",
    "export_tensorrt": "export.component",
    "export_model": "export.component",
    "profile_formats": "export.component",
    "build_triton_repository": "triton.component",
    "pack_triton_repositories": "triton.component",
    "build_torchserve_archive": "torchserve.component",
    "publish_model": "storage.component",
    "deploy_local": "local.component",
    "deploy_kserve": "kserve.component",
    "promote_kserve": "kserve.component",
    "rollback_kserve": "kserve.component",
    "delete_kserve": "kserve.component",
    "undeploy_local": "local.component",
    "deploy_vertex": "vertex.component",
    "promote_vertex": "vertex.component",
    "rollback_vertex": "vertex.component",
    "undeploy_vertex": "vertex.component",
    "scale_vertex": "vertex.component",
    "validate_endpoint": "validate.component",
    "tune_triton_config": "tune.component",
    "package_llm_checkpoint": "llm.component",
    "deploy_local_llm": "llm.component",
    "undeploy_local_llm": "llm.component",
    "validate_llm_endpoint": "llm.component",
    "deploy_kserve_llm": "llm.kserve_component",
    "deploy_vertex_llm": "llm.vertex_component",
}

__all__ = sorted(COMPONENT_MODULES)

if os.environ.get("_KFP_RUNTIME") == "true":  # inside a step: its error ends its log, one line
    from kfp_serve.components.step_failure import install

    install()


def __getattr__(name: str) -> Any:
    if name in COMPONENT_MODULES:
        module = importlib.import_module(f"{__name__}.{COMPONENT_MODULES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *COMPONENT_MODULES])
