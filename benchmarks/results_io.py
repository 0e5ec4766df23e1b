"""Shared by the benchmark scripts: write a result page and show it."""

from __future__ import annotations

import time
from pathlib import Path

#: where a run writes by default: not the committed results (benchmarks/results/), which change
#: only when someone passes --output benchmarks/results/<name>.md on purpose
RUNS = Path(__file__).resolve().parent / "runs"


def default_output(name: str) -> str:
    """``benchmarks/runs/<name>-<date>-<time>.md`` (ignored by git)."""
    return str(RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.md")


def write_results(path: str, lines: list[str]) -> None:
    """Write ``lines`` as a Markdown page at ``path`` (folders created) and print it."""
    text = "\n".join(lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)
