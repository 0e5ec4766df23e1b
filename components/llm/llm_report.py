"""An LLM validation as people read it: Markdown (the log and the Markdown artifact) and an HTML
page with the TTFT and ITL distributions and the throughput/latency frontier (inline SVG)."""

from __future__ import annotations

import numpy as np

from kfp_serve.components.cost import Cost
from kfp_serve.components.llm.llm_load import PERCENTILES, LlmLevel
from kfp_serve.components.llm.llm_validation import LlmValidationResult
from kfp_serve.components.llm.vllm_metrics import HEADER as SERVER_HEADER
from kfp_serve.components.report import Table, bullets, page

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def _ms(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "—"


def conformance_table(result: LlmValidationResult) -> Table:
    return Table(("check", "result", "detail"),
                 [[c.name, "PASSED" if c.passed else "FAILED", c.detail] for c in result.conformance])


def parity_table(result: LlmValidationResult) -> Table:
    rows = [[p.kind, f"`{p.prompt}`", "PASSED" if p.passed else "FAILED", f"{p.matched}/{p.expected}",
             "—" if p.max_logprob_diff is None else f"{p.max_logprob_diff:.2e}", p.detail]
            for p in result.parity]
    return Table(("kind", "prompt", "result", "tokens equal", "max log-prob diff", "detail"), rows)


def latency_table(levels: list[LlmLevel]) -> Table:
    header = ["level", "requests", "errors", "req/s", "output tok/s", "total tok/s", "goodput",
              "whole"]
    for metric in ("TTFT", "TPOT", "ITL", "E2EL"):
        header += [f"{metric} p{p} ms" for p in PERCENTILES]
    rows = []
    for level in levels:
        row = [level.label, str(len(level.results)), str(level.errors),
               f"{level.request_throughput:.2f}", f"{level.output_throughput:,.1f}",
               f"{level.total_token_throughput:,.1f}", f"{level.goodput_ratio:.0%}",
               f"{level.whole_share:.0%}"]
        for metric in ("ttft", "tpot", "itl", "e2el"):
            row += [_ms(level.percentile_ms(metric, p)) for p in PERCENTILES]
        rows.append(row)
    return Table(header, rows)


def server_table(result: LlmValidationResult) -> Table | None:
    rows = [[level.label, *stats.cells()] for level, stats in zip(result.levels, result.server)
            if stats is not None]
    return Table(("level", *SERVER_HEADER), rows) if rows else None


def cost_line(cost: Cost) -> str:
    best = Cost.per_million(cost.price_per_hour, cost.best_throughput)
    text = (f"cost per million output tokens: ${best:.4f} at the best measured"
            f" {cost.best_throughput:,.1f} tokens/s" if best else "cost: nothing was measured")
    at_slo = Cost.per_million(cost.price_per_hour, cost.slo_throughput or 0.0)
    text += (f", ${at_slo:.4f} at the best level within the gates"
             f" ({cost.slo_throughput:,.1f} tokens/s)" if at_slo else ", none: no level met the gates")
    return f"{text}; {cost.source}"


def markdown(result: LlmValidationResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    parts = [f"# LLM endpoint validation: {verdict}", "",
             f"`{result.model}` at {result.url}; parity reference: {result.reference};"
             f" SLO for goodput: {result.slo.text()}", ""]
    if result.note:
        parts += [f"Note: {result.note}.", ""]
    if not result.passed:
        parts += [f"**Why it failed:** {result.failure_line()}", ""]
    parts += ["## Conformance", "", conformance_table(result).markdown(), "",
              "## Parity with the golden set", "", parity_table(result).markdown(), ""]
    if result.levels:
        parts += ["## Load (metrics as `vllm bench serve` defines them)", "",
                  latency_table(result.levels).markdown(), ""]
        server = server_table(result)
        if server:
            parts += ["## The server's view (vllm:* metrics, mean per request)", "",
                      server.markdown(), ""]
    if result.cost is not None:
        parts += [cost_line(result.cost), ""]
    return "\n".join(parts)


def histogram_svg(levels: list[LlmLevel], metric: str, width: int = 560, height: int = 220) -> str:
    """Overlaid histograms of one latency (``ttft`` or ``itl``) per level, log-spaced bins."""
    samples = {lv.label: lv.samples_ms(metric) for lv in levels}
    values = [v for vs in samples.values() for v in vs if v > 0]
    if not values:
        return ""
    edges = np.geomspace(min(values) * 0.9, max(values) * 1.1, 25)
    left, bottom, plot_w, plot_h = 50, height - 35, width - 70, height - 65
    counts = {label: np.histogram([v for v in vs if v > 0], edges)[0] / max(len(vs), 1)
              for label, vs in samples.items()}
    top = max(float(c.max()) for c in counts.values()) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             f' role="img" aria-label="{metric} distribution per level">',
             f'<text x="{left}" y="14" font-size="12">{metric.upper()} (ms, log scale), share of'
             ' requests per bin</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#333"/>']
    step = plot_w / (len(edges) - 1)
    for k, (label, share) in enumerate(counts.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = " ".join(f"{left + (b + 0.5) * step:.1f},{bottom - plot_h * s / top:.1f}"
                          for b, s in enumerate(share))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
                     f'<title>{label}</title></polyline>')
        parts.append(f'<text x="{width - 90}" y="{30 + 14 * k}" font-size="11" fill="{colour}">'
                     f'{label}</text>')
    for b in (0, len(edges) // 2, len(edges) - 1):
        parts.append(f'<text x="{left + b * step:.1f}" y="{bottom + 14}" font-size="10"'
                     f' text-anchor="middle">{edges[b]:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def frontier_svg(levels: list[LlmLevel], width: int = 560, height: int = 240) -> str:
    """Output tokens/s against p95 TPOT per level: the throughput/latency frontier."""
    points = [(lv.percentile_ms("tpot", 95), lv.output_throughput, lv.label) for lv in levels]
    points = [p for p in points if np.isfinite(p[0])]
    if not points:
        return ""
    left, bottom, plot_w, plot_h = 60, height - 35, width - 90, height - 65
    max_x = max(p[0] for p in points) * 1.1 or 1.0
    max_y = max(p[1] for p in points) * 1.1 or 1.0
    xy = [(left + plot_w * x / max_x, bottom - plot_h * y / max_y, label) for x, y, label in points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             ' role="img" aria-label="throughput against latency">',
             f'<text x="{left}" y="14" font-size="12">output tokens/s (up) against p95 TPOT ms'
             f' (right, up to {max_x:.1f})</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="20" stroke="#333"/>',
             '<polyline fill="none" stroke="#4c78a8" stroke-width="2" points="'
             + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy) + '"/>']
    for x, y, label in xy:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#f58518"/>'
                     f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" font-size="11">{label}</text>')
    parts.append(f'<text x="{left - 6}" y="24" font-size="10" text-anchor="end">{max_y:,.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html(result: LlmValidationResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    body = [f"<h1>LLM endpoint validation: <span class='{verdict}'>{verdict}</span></h1>",
            bullets([f"{result.model} at {result.url}", f"parity reference: {result.reference}",
                     f"SLO for goodput: {result.slo.text()}"]
                    + ([result.note] if result.note else [])
                    + ([f"why it failed: {result.failure_line()}"] if not result.passed else [])),
            "<h2>Conformance</h2>", conformance_table(result).html(),
            "<h2>Parity with the golden set</h2>", parity_table(result).html()]
    if result.levels:
        body += ["<h2>Load</h2>", latency_table(result.levels).html(),
                 histogram_svg(result.levels, "ttft"), histogram_svg(result.levels, "itl"),
                 frontier_svg(result.levels)]
        server = server_table(result)
        if server:
            body += ["<h2>The server's view</h2>", server.html()]
    if result.cost is not None:
        body.append(bullets([cost_line(result.cost)]))
    return page(f"LLM validation {verdict}", "".join(body))
