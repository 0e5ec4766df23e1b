"""What every export component writes besides the model: its metrics and report."""

from __future__ import annotations

from typing import Any

from kfp_serve.components.export.result import ExportResult


def write_export_outputs(result: ExportResult, metrics: Any, report: Any) -> None:
    """Fill the KFP Metrics and Markdown outputs from an export, and print the report."""
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    print(result.markdown())
