"""Shared by the benchmark scripts: write a result page and show it."""

from __future__ import annotations

from pathlib import Path


def write_results(path: str, lines: list[str]) -> None:
    """Write ``lines`` as a Markdown page at ``path`` (folders created) and print it."""
    text = "\n".join(lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)
