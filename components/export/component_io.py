"""What every export component writes besides the model: metrics, report, signature metadata."""

from __future__ import annotations

from typing import Any

from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.signature import ModelSignature


def write_export_outputs(result: ExportResult, model: Any, metrics: Any, report: Any) -> None:
    """Fill the KFP Metrics and Markdown outputs and the model's metadata from an export."""
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    model.metadata["signature"] = ModelSignature.load(model.path).to_dict()
    model.metadata.update({f"export_{k.replace(' ', '_')}": v for k, v in result.details.items()})
    print(result.markdown())
