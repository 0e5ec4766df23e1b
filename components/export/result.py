"""What every export returns: the file, how it was made, and how it compares with eager."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.verify import OutputComparison, comparison_table


@dataclass(frozen=True)
class ExportResult:
    """An exported, verified model file."""

    model_format: str
    path: Path
    signature: ModelSignature
    comparisons: dict[str, list[OutputComparison]]  # "batch 16", "batch 1", "resized"
    details: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    resized_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # of the "resized" case

    def metrics(self) -> dict[str, float]:
        """Max absolute and relative error per output and verified case (for a KFP Metrics
        artifact): ``logits_max_abs_error_batch16``, ``..._resized``."""
        values: dict[str, float] = {}
        for case, comparisons in self.comparisons.items():
            for c in comparisons:
                values[f"{c.name}_max_abs_error_{case.replace(' ', '')}"] = c.max_abs_error
                values[f"{c.name}_max_rel_error_{case.replace(' ', '')}"] = c.max_rel_error
        values["export_seconds"] = round(self.seconds, 3)
        return values

    def markdown(self) -> str:
        """The verification report: one table per verified case (batch sizes, resized dims)."""
        size = sum(p.stat().st_size for p in self.path.parent.iterdir() if p.is_file())
        lines = [
            f"# {self.model_format} export verification: PASSED",
            "",
            f"- file: `{self.path.name}` ({size / 1e6:.2f} MB with its siblings),"
            f" exported and verified in {self.seconds:.1f} s",
        ]
        lines += [f"- {key}: {value}" for key, value in self.details.items()]
        lines += ["- reference: the eager PyTorch model in fp32 (no autocast) on the golden set", ""]
        resized = ", ".join(f"`{k}` {list(v)}" for k, v in self.resized_shapes.items())
        for case, comparisons in self.comparisons.items():
            title = f"Other dynamic dims resized: {resized}" if case == "resized" else case.capitalize()
            lines += [f"## {title}", "", comparison_table(comparisons).markdown(), ""]
        return "\n".join(lines)
