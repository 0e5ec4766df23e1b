"""What a validation found, and its rendering: Markdown for the log and report, HTML for the UI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kfp_serve.components.cost import Cost
from kfp_serve.components.validate.load import LoadLevel, latency_svg
from kfp_serve.components.validate.load import markdown_table as load_table
from kfp_serve.components.validate.server_metrics import ServerStats
from kfp_serve.components.verify import OutputComparison, markdown_table


@dataclass
class ValidationResult:
    """Everything the validation found; ``passed`` is the verdict."""

    url: str
    model_name: str
    metadata_problems: list[str]
    comparisons: list[OutputComparison]
    request_latencies_ms: list[float] = field(default_factory=list)
    samples: int = 0
    load: list[LoadLevel] = field(default_factory=list)  # per concurrency level, when measured
    slo_problems: list[str] = field(default_factory=list)
    metadata_note: str = ""  # how the metadata was checked, where not by the metadata API
    server: list[ServerStats] = field(default_factory=list)  # per load level, when read
    transport: str = "rest"
    cost: Cost | None = None  # when a machine type or price was given

    @property
    def passed(self) -> bool:
        return (not self.metadata_problems and not self.slo_problems
                and all(c.passed for c in self.comparisons))

    def failure_line(self) -> str:
        """One line naming every problem ('' when passed)."""
        problems = list(self.metadata_problems)
        problems += [f"{c.name}: {c.problem}" for c in self.comparisons if not c.passed]
        problems += self.slo_problems
        return "; ".join(problems)

    def metrics(self) -> dict[str, float]:
        """The numbers a Metrics artifact shows: per-output errors, request latency, each load
        level's p95/throughput/error rate, and the verdict (1 passed, 0 failed)."""
        values: dict[str, float] = {}
        for level in self.load:
            values[f"c{level.concurrency}_p95_ms"] = round(level.p95_ms, 3)
            values[f"c{level.concurrency}_throughput"] = round(level.throughput, 1)
            values[f"c{level.concurrency}_error_rate"] = round(level.error_rate, 4)
        for level, stats in zip(self.load, self.server):
            for name, value in stats.metrics().items():
                values[f"c{level.concurrency}_{name}"] = value
        for c in self.comparisons:
            values[f"{c.name}_max_abs_error"] = c.max_abs_error
            values[f"{c.name}_max_rel_error"] = c.max_rel_error
        if self.request_latencies_ms:
            latencies = sorted(self.request_latencies_ms)
            values["median_request_latency_ms"] = round(latencies[len(latencies) // 2], 3)
        if self.cost:
            values.update(self.cost.metrics())
        values["passed"] = 1 if self.passed else 0
        return values

    def markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Endpoint validation: {verdict}",
            "",
            f"- endpoint: `{self.url}`, model `{self.model_name}`",
            f"- golden samples: {self.samples} in {len(self.request_latencies_ms)} request(s)",
        ]
        if self.request_latencies_ms:
            lat = np.asarray(self.request_latencies_ms)
            lines.append(
                f"- request latency: median {np.median(lat):.2f} ms, max {lat.max():.2f} ms"
            )
        lines += ["", "## Metadata", ""]
        if self.metadata_problems:
            lines += [f"- {p}" for p in self.metadata_problems]
        else:
            lines.append("- names, dtypes and shapes match the signature")
        if self.metadata_note:
            lines.append(f"- {self.metadata_note}")
        lines += ["", "## Golden outputs", "", markdown_table(self.comparisons), ""]
        if self.load:
            lines += [f"## Load ({self.transport})", "", load_table(self.load, self.server), ""]
            lines += [f"- SLO: {p}" for p in self.slo_problems] or ["- all SLO gates met"]
            if self.server:
                lines += ["", f"What the server saw at concurrency {self.load[-1].concurrency}:",
                          "", self.server[-1].markdown()]
            if self.cost:
                lines += ["", f"- {self.cost.line()}"]
            lines.append("")
        return "\n".join(lines)

    def html(self) -> str:
        """A standalone HTML report: verdict, latency chart, comparison and load tables."""
        import html as escape

        def table(markdown: str) -> str:
            rows = [r.strip("|").split("|") for r in markdown.splitlines() if not r.startswith("|---")]
            head = "".join(f"<th>{escape.escape(c.strip())}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{escape.escape(c.strip().strip('`'))}</td>" for c in r)
                           + "</tr>" for r in rows[1:])
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        verdict = "PASSED" if self.passed else "FAILED"
        problems = "".join(f"<li>{escape.escape(p)}</li>" for p in
                           [*self.metadata_problems, *self.slo_problems]) or "<li>none</li>"
        load = (f"<h2>Latency under load ({escape.escape(self.transport)})</h2>"
                f"{latency_svg(self.load)}{table(load_table(self.load, self.server))}"
                + (f"<p>{escape.escape(self.cost.line())}</p>" if self.cost else "")
                if self.load else "")
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Endpoint validation</title>"
            "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
            "margin:12px 0}td,th{border:1px solid #bbb;padding:4px 8px}"
            ".PASSED{color:#1a7f37}.FAILED{color:#cf222e}</style></head><body>"
            f"<h1>Endpoint validation: <span class='{verdict}'>{verdict}</span></h1>"
            f"<p>{escape.escape(self.url)} — model <code>{escape.escape(self.model_name)}</code>,"
            f" {self.samples} golden samples</p><h2>Problems</h2><ul>{problems}</ul>"
            f"<h2>Golden outputs</h2>{table(markdown_table(self.comparisons))}{load}</body></html>"
        )
