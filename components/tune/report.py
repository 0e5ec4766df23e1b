"""The tuner's result for people: the throughput/latency frontier as a chart, every candidate in
a table, the chosen configuration and its cost; and for machines: a Metrics dict."""

from __future__ import annotations

import html as escape
from dataclasses import asdict

from kfp_serve.components.cost import Cost
from kfp_serve.components.report import Table, bullets, page
from kfp_serve.components.tune.tuner import Trial, TuneResult


def table_rows(result: TuneResult) -> list[list[str]]:
    rows = []
    for number, trial in enumerate(result.trials, 1):
        best = trial.best_level(result.slo_ms)
        batch = best.server.mean_batch if best and best.server else None
        note = "chosen" if trial is result.chosen else ("defaults" if number == 1 else "")
        confirmed = trial.confirmed_score(result.slo_ms)
        rows.append([
            str(number), trial.candidate.label, f"{trial.score(result.slo_ms):,.1f}",
            f"{confirmed:,.1f}" if confirmed is not None else "-",
            str(best.concurrency) if best else "-", f"{best.latency_ms:.2f}" if best else "-",
            f"{batch:.2f}" if batch else "-", f"{trial.seconds:.1f}",
            trial.error or note,
        ])
    return rows


HEADER = ["#", "configuration", "samples/s within SLO", "confirmed", "at concurrency", "latency (ms)",
          "batch formed", "seconds", "note"]


def frontier(result: TuneResult) -> list[tuple[float, float]]:
    """(latency, throughput) points no other point beats on both: the best throughput
    reachable at each latency."""
    points = sorted((lv.latency_ms, lv.throughput) for t in result.trials for lv in t.levels
                    if not lv.errors)
    edge, best = [], 0.0
    for latency, throughput in points:
        if throughput > best:
            edge.append((latency, throughput))
            best = throughput
    return edge


def frontier_svg(result: TuneResult, width: int = 640, height: int = 320) -> str:
    """Every measured level as a point (latency at the percentile vs throughput), the frontier
    as a line, the chosen configuration's levels in colour and the SLO as a dashed line."""
    levels = [(t, lv) for t in result.trials for lv in t.levels if not lv.errors]
    if not levels:
        return "<p>No level was measured without errors.</p>"
    x_top = max(max(lv.latency_ms for _, lv in levels), result.slo_ms) * 1.1
    y_top = max(lv.throughput for _, lv in levels) * 1.1
    left, bottom, right, top = 70, height - 45, width - 20, 20

    def x(value: float) -> float:
        return left + (right - left) * value / x_top

    def y(value: float) -> float:
        return bottom - (bottom - top) * value / y_top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
             ' aria-label="throughput against latency for every candidate">',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{top}" stroke="#333"/>',
             f'<text x="{(left + right) / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
             f'p{result.percentile} latency (ms)</text>',
             f'<text x="14" y="{(top + bottom) / 2}" font-size="12" text-anchor="middle"'
             f' transform="rotate(-90 14 {(top + bottom) / 2})">samples/s</text>',
             f'<text x="{right}" y="{bottom + 16}" font-size="11" text-anchor="end">{x_top:.1f}</text>',
             f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{y_top:,.0f}</text>',
             f'<line class="slo" x1="{x(result.slo_ms):.1f}" y1="{top}" x2="{x(result.slo_ms):.1f}"'
             f' y2="{bottom}" stroke="#cf222e" stroke-dasharray="5,4"/>',
             f'<text x="{x(result.slo_ms) + 4:.1f}" y="{top + 12}" font-size="11" fill="#cf222e">'
             f'SLO {result.slo_ms:g} ms</text>']
    edge = frontier(result)
    parts.append('<polyline class="frontier" fill="none" stroke="#4c78a8" stroke-width="2" points="'
                 + " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in edge) + '"/>')
    for trial, level in levels:
        chosen = trial is result.chosen
        parts.append(
            f'<circle class="{"chosen" if chosen else "point"}" cx="{x(level.latency_ms):.1f}"'
            f' cy="{y(level.throughput):.1f}" r="{5 if chosen else 3}"'
            f' fill="{"#f58518" if chosen else "#999"}"><title>{escape.escape(trial.candidate.label)},'
            f' c={level.concurrency}: {level.throughput:,.1f}/s at {level.latency_ms:.2f} ms'
            '</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def summary_lines(result: TuneResult, cost: Cost | None) -> list[str]:
    chosen, default = result.chosen, result.default
    base = default.estimate(result.slo_ms)
    gain = chosen.estimate(result.slo_ms) / base if base else None
    lines = [
        f"Chosen: {chosen.candidate.label} — {chosen.estimate(result.slo_ms):,.1f} samples/s within"
        f" p{result.percentile} <= {result.slo_ms:g} ms",
        f"Defaults: {default.candidate.label} — {base:,.1f} samples/s"
        + (f" ({gain:.2f}x)" if gain else ""),
        f"{len(result.trials)} candidates in {result.seconds:.0f} s on {result.cores} cores,"
        f" {result.model_format}, load over {result.transport}; scores within"
        " 5% count as a tie, won by the simpler configuration",
    ]
    if default.repeats:
        lines.append(f"The search's leader and the defaults were measured again, alternating, in"
                     f" {len(default.repeats)} rounds ('confirmed': their mean); the choice rests"
                     " on those, and a win must exceed how far one configuration's rounds lay apart")
    if cost:
        lines.append(cost.line())
    return lines


def candidates_table(result: TuneResult) -> Table:
    rows = table_rows(result)
    return Table(HEADER, rows, marks=["chosen" if row[-1] == "chosen" else "" for row in rows])


def markdown(result: TuneResult, cost: Cost | None) -> str:
    lines = ["# Serving configuration search", ""] + [f"- {line}" for line in summary_lines(result, cost)]
    return "\n".join([*lines, "", candidates_table(result).markdown()]) + "\n"


def html(result: TuneResult, cost: Cost | None) -> str:
    return page("Serving configuration search", (
        f"<h1>Serving configuration search</h1>{bullets(summary_lines(result, cost))}"
        f"<h2>Throughput against latency</h2>{frontier_svg(result)}"
        "<p>Grey: every concurrency level of every candidate; orange: the chosen configuration;"
        " blue: the frontier (the most throughput seen at each latency).</p>"
        f"<h2>Every candidate</h2>{candidates_table(result).html()}"))


def metrics(result: TuneResult, cost: Cost | None) -> dict[str, float]:
    chosen = result.chosen
    values = {
        "tuned_samples_per_s_at_slo": round(chosen.estimate(result.slo_ms), 1),
        "default_samples_per_s_at_slo": round(result.default.estimate(result.slo_ms), 1),
        "candidates": len(result.trials),
        "tuner_seconds": round(result.seconds, 1),
        "instance_count": chosen.candidate.instance_count,
        "max_batch_size": chosen.candidate.max_batch_size,
        "dynamic_batching": int(chosen.candidate.dynamic_batching),
        "max_queue_delay_us": chosen.candidate.max_queue_delay_microseconds,
    }
    if cost:
        values.update(cost.metrics())
    return values


def trial_dict(trial: Trial) -> dict:
    """A trial as plain data (for the artifact's metadata)."""
    return {"candidate": asdict(trial.candidate),
            "levels": [{"concurrency": lv.concurrency, "throughput": round(lv.throughput, 1),
                        "latency_ms": round(lv.latency_ms, 3), "errors": lv.errors}
                       for lv in trial.levels], "error": trial.error,
            "confirmed": [round(r.score(float("inf")), 1) for r in trial.repeats]}
