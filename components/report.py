"""The reports people read: one table that renders to Markdown (logs, Markdown artifacts) and to
HTML (the Kubeflow UI's HTML artifacts), and one page shell for every HTML report."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_STYLE = ("body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;margin:12px 0}"
          "td,th{border:1px solid #bbb;padding:4px 8px}.PASSED{color:#1a7f37}.FAILED{color:#cf222e}"
          "tr.chosen{background:#fff4e5;font-weight:bold}")


@dataclass(frozen=True)
class Table:
    """Rows of text cells under a header. A cell wrapped in backticks is code: Markdown keeps the
    backticks, HTML renders ``<code>``. ``marks`` gives a row a CSS class in HTML (``chosen``)."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    marks: Sequence[str] = field(default_factory=tuple)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in self.header)
        body = []
        for k, row in enumerate(self.rows):
            mark = self.marks[k] if k < len(self.marks) and self.marks[k] else ""
            cells = "".join(f"<td>{_cell(cell)}</td>" for cell in row)
            body.append(f"<tr class='{mark}'>{cells}</tr>" if mark else f"<tr>{cells}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(text: str) -> str:
    if len(text) > 1 and text.startswith("`") and text.endswith("`"):
        return f"<code>{html.escape(text[1:-1])}</code>"
    return html.escape(text)


def page(title: str, body: str) -> str:
    """A standalone HTML page (no external resources: the Kubeflow UI shows it in a sandbox)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def bullets(lines: Sequence[str]) -> str:
    """An HTML list of plain-text lines."""
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
