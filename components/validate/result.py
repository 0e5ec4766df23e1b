"""What a validation found, and its rendering: Markdown for the log and report, HTML for the UI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kfp_serve.components.cost import Cost
from kfp_serve.components.report import Table, bullets, page
from kfp_serve.components.validate.load import LoadLevel
from kfp_serve.components.validate.server_metrics import ServerStats
from kfp_serve.components.verify import OutputComparison, comparison_table


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
        lines += ["", "## Golden outputs", "", comparison_table(self.comparisons).markdown(), ""]
        if self.load:
            lines += [f"## Load ({self.transport})", "", load_table(self.load, self.server).markdown(), ""]
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

        verdict = "PASSED" if self.passed else "FAILED"
        problems = [*self.metadata_problems, *self.slo_problems] or ["none"]
        load = (f"<h2>Latency under load ({escape.escape(self.transport)})</h2>"
                f"{latency_svg(self.load)}{load_table(self.load, self.server).html()}"
                + (f"<p>{escape.escape(self.cost.line())}</p>" if self.cost else "")
                if self.load else "")
        return page("Endpoint validation", (
            f"<h1>Endpoint validation: <span class='{verdict}'>{verdict}</span></h1>"
            f"<p>{escape.escape(self.url)} — model <code>{escape.escape(self.model_name)}</code>,"
            f" {self.samples} golden samples</p><h2>Problems</h2>{bullets(problems)}"
            f"<h2>Golden outputs</h2>{comparison_table(self.comparisons).html()}{load}"))


def load_table(levels: list[LoadLevel], server: list[ServerStats] | None = None) -> Table:
    """One row per load level; with the server's view per level, its queue and compute time and
    the batch size it formed."""
    extra = bool(server) and len(server) == len(levels)
    others = any(lv.excluded for lv in levels)
    header = ["concurrency", "requests", "errors", "throughput (req/s)", "p50 (ms)", "p95 (ms)",
              "p99 (ms)"] + (["answered by other models (not counted)"] if others else [])
    gpu = extra and any(stats.gpu_utilization is not None for stats in server)
    if extra:
        header += ["server queue (ms)", "server compute (ms)", "batch formed"] + (["GPU busy"] if gpu else [])
    rows = []
    for k, lv in enumerate(levels):
        row = [str(lv.concurrency), str(lv.requests), str(lv.errors), f"{lv.throughput:,.1f}",
               f"{lv.p50_ms:.2f}", f"{lv.p95_ms:.2f}", f"{lv.p99_ms:.2f}"]
        if others:
            row.append(str(lv.excluded))
        if extra:
            stats = server[k]
            row += [f"{stats.queue_ms:.3f}",
                    f"{stats.compute_ms:.3f}" if stats.server == "triton" else "n/a",
                    f"{stats.mean_batch:.2f}" if stats.mean_batch is not None else "n/a"]
            if gpu:
                row.append(f"{stats.gpu_utilization:.0%}" if stats.gpu_utilization is not None else "n/a")
        rows.append(row)
    return Table(header, rows)


def latency_svg(levels: list[LoadLevel], width: int = 560, height: int = 260) -> str:
    """A grouped bar chart of p50/p95/p99 per concurrency level (inline SVG, no dependencies)."""
    top = max([lv.p99_ms for lv in levels if np.isfinite(lv.p99_ms)] or [1.0]) * 1.15
    left, bottom, plot_h = 60, height - 40, height - 70
    group = (width - left - 20) / max(len(levels), 1)
    bar = group / 4
    colors = {"p50": "#4c78a8", "p95": "#f58518", "p99": "#e45756"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             ' role="img" aria-label="latency percentiles per concurrency">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="20" stroke="#333"/>',
             '<text x="10" y="30" font-size="12">ms</text>',
             f'<text x="{left - 8}" y="24" font-size="11" text-anchor="end">{top:.1f}</text>']
    for g, level in enumerate(levels):
        x0 = left + g * group + bar / 2
        for k, (name, value) in enumerate((("p50", level.p50_ms), ("p95", level.p95_ms),
                                           ("p99", level.p99_ms))):
            h = 0 if not np.isfinite(value) else plot_h * value / top
            parts.append(f'<rect class="bar" x="{x0 + k * bar:.1f}" y="{bottom - h:.1f}"'
                         f' width="{bar * 0.9:.1f}" height="{h:.1f}" fill="{colors[name]}">'
                         f'<title>{name} {value:.2f} ms</title></rect>')
        parts.append(f'<text x="{x0 + 1.5 * bar:.1f}" y="{bottom + 16}" font-size="12"'
                     f' text-anchor="middle">c={level.concurrency}</text>')
    for k, (name, color) in enumerate(colors.items()):
        parts.append(f'<rect x="{width - 180 + k * 55}" y="8" width="10" height="10" fill="{color}"/>'
                     f'<text x="{width - 166 + k * 55}" y="17" font-size="11">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)
