"""validate_llm_endpoint's core: conformance, parity with the golden set, the load sweep, the
server's view, the gates and the verdict (which fails closed: a check that could not run, a
level that measured nothing, or one failed request under the default gates fails it)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.cost import Cost
from kfp_serve.components.llm.conformance import Check, check_conformance
from kfp_serve.components.llm.golden_set import GoldenSet
from kfp_serve.components.llm.llm_load import LlmLevel, Slo, came_whole, run_level
from kfp_serve.components.llm.openai_http import OpenAIClient
from kfp_serve.components.llm.parity import ParityRow, answered_by, check_parity
from kfp_serve.components.llm.targets import OpenAITarget
from kfp_serve.components.llm.vllm_metrics import MetricsWatch, VllmStats


@dataclass(frozen=True)
class LlmGates:
    """The verdict's limits; 0 leaves a latency or throughput gate out. Latency and goodput
    gates hold at every level; the throughput gate for the best level."""

    max_p95_ttft_ms: float = 0.0
    max_p95_tpot_ms: float = 0.0
    max_p95_itl_ms: float = 0.0
    max_error_rate: float = 0.0  # strict: one failed request fails
    min_goodput_ratio: float = 0.0  # share of requests meeting every SLO
    min_output_tokens_per_s: float = 0.0

    def violations(self, levels: Sequence[LlmLevel]) -> list[str]:
        problems = []
        for level in levels:
            if not level.completed:
                problems.append(f"{level.label}: no request succeeded ({level.first_error()})")
                continue
            if level.error_rate > self.max_error_rate:
                problems.append(f"{level.label}: {level.errors} of {len(level.results)} requests"
                                f" failed (> max_error_rate {self.max_error_rate:g}):"
                                f" {level.first_error()}")
            for metric, limit in (("ttft", self.max_p95_ttft_ms), ("tpot", self.max_p95_tpot_ms),
                                  ("itl", self.max_p95_itl_ms)):
                value = level.percentile_ms(metric, 95)
                if limit > 0 and not value <= limit:
                    problems.append(f"{level.label}: p95 {metric.upper()} {value:.1f} ms >"
                                    f" {limit:g} ms")
            if self.min_goodput_ratio > 0 and level.goodput_ratio < self.min_goodput_ratio:
                problems.append(f"{level.label}: goodput {level.goodput_ratio:.0%} of requests"
                                f" met the SLO (< {self.min_goodput_ratio:.0%})")
        best = max((lv.output_throughput for lv in levels), default=0.0)
        if self.min_output_tokens_per_s > 0 and best < self.min_output_tokens_per_s:
            problems.append(f"best output {best:,.1f} tokens/s <"
                            f" min_output_tokens_per_s {self.min_output_tokens_per_s:g}")
        return problems


@dataclass
class LlmValidationResult:
    url: str
    model: str
    conformance: list[Check] = field(default_factory=list)
    parity: list[ParityRow] = field(default_factory=list)
    levels: list[LlmLevel] = field(default_factory=list)
    server: list[VllmStats | None] = field(default_factory=list)
    gate_problems: list[str] = field(default_factory=list)
    cost: Cost | None = None
    slo: Slo = field(default_factory=Slo)
    reference: str = ""
    note: str = ""  # how the endpoint was reached, where that limits what could be read

    @property
    def passed(self) -> bool:
        return (bool(self.conformance) and all(c.passed for c in self.conformance)
                and bool(self.parity) and all(p.passed for p in self.parity)
                and not self.gate_problems)

    def failure_line(self) -> str:
        problems = [f"{c.name}: {c.detail}" for c in self.conformance if not c.passed]
        problems += [f"parity ({p.kind} {p.prompt!r}): {p.detail}" for p in self.parity
                     if not p.passed]
        if not self.parity:
            problems.append("parity: the golden set has no entries")
        return "; ".join(problems + self.gate_problems)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {
            "conformance_failed": float(sum(not c.passed for c in self.conformance)),
            "parity_failed": float(sum(not p.passed for p in self.parity))}
        for level, stats in zip(self.levels, self.server):
            values.update(level.metrics())
            if stats is not None:
                prefix = f"c{level.concurrency}" if not level.request_rate else f"r{level.request_rate:g}"
                values.update(stats.metrics(prefix))
        if self.cost is not None:
            values.update({k.replace("inferences", "tokens"): v for k, v in self.cost.metrics().items()})
        values["passed"] = 1.0 if self.passed else 0.0
        return {k: v for k, v in values.items() if math.isfinite(v)}


def _streamed_under_load(check: Check, levels: Sequence[LlmLevel]) -> Check:
    """A streaming check that failed only because its answers came whole passes when requests
    of the load phase came token by token: a buffering server or proxy never streams, while
    vLLM coalesces the tokens of a request whose reader lags when it is short of CPU (the load
    table's "whole" column shows how often)."""
    if check.passed or not check.buffered:
        return check
    results = [r for level in levels for r in level.completed if (r.output_tokens or 0) > 1]
    by_token = sum(1 for r in results if not came_whole(r))
    if not by_token:
        return check
    return Check(check.name, True, f"{by_token} of {len(results)} load requests streamed token by"
                                   f" token; the conformance tries came whole ({check.detail}):"
                                   " the server coalesced tokens, short of CPU")


def validate_llm(target: OpenAITarget, golden: GoldenSet, max_model_len: int, vocab_size: int,
                 chat: bool, levels: Sequence[tuple[int, float]], bodies_for: Any,
                 gates: LlmGates, slo: Slo, logprob_atol: float = 0.05,
                 price: tuple[float, str] | None = None,
                 timeout_s: float = 300.0, progress: Any = print,
                 reference: OpenAITarget | None = None) -> LlmValidationResult:
    """Run every check against the endpoint ``target`` names. ``levels``: ``(concurrency,
    request rate)`` pairs; ``bodies_for(concurrency)`` gives each level's request bodies.
    ``reference``: a server whose greedy answers replace the golden set's (the stable model a
    canary may replace)."""
    if reference is not None:
        with contextlib.closing(OpenAIClient(reference.base_url, timeout_s=timeout_s,
                                             headers=reference.headers)) as stable:
            golden = answered_by(stable, reference.model, golden, reference.base_url)
    url, model, metrics_url = target.base_url, target.model, target.metrics_url
    result = LlmValidationResult(url=url, model=model, slo=slo, reference=golden.reference,
                                 note=target.note)
    client = OpenAIClient(url, timeout_s=timeout_s, headers=target.headers)
    try:
        result.conformance = check_conformance(client, model, max_model_len, chat, vocab_size,
                                               listing=target.can_get)
        progress(f"conformance: {sum(c.passed for c in result.conformance)} of"
                 f" {len(result.conformance)} checks passed")
        result.parity = check_parity(client, model, golden, logprob_atol)
        progress(f"parity: {sum(p.passed for p in result.parity)} of {len(result.parity)}"
                 " golden prompts matched")
        client.stream("/v1/completions", {**bodies_for(1)[0], "model": model})  # warm-up
    finally:
        client.close()
    for concurrency, rate in levels:
        watch = MetricsWatch(metrics_url) if metrics_url else None
        started = time.perf_counter()
        with watch or contextlib.nullcontext():
            level = run_level(url, model, bodies_for(concurrency), concurrency, rate,
                              timeout_s=timeout_s, slo=slo, headers=target.headers)
        result.levels.append(level)
        result.server.append(watch.stats() if watch else None)
        progress(f"{level.label}: {len(level.completed)}/{len(level.results)} requests in"
                 f" {time.perf_counter() - started:.1f} s, {level.output_throughput:,.0f} output"
                 f" tokens/s, p95 TTFT {level.percentile_ms('ttft', 95):.1f} ms")
    result.conformance = [_streamed_under_load(check, result.levels) for check in result.conformance]
    result.gate_problems = gates.violations(result.levels)
    if price is not None and result.levels:
        best = max(lv.output_throughput for lv in result.levels)
        within = [lv.output_throughput for lv in result.levels
                  if not gates.violations([lv]) and lv.goodput_ratio >= (gates.min_goodput_ratio or 0)]
        result.cost = Cost(price[0], price[1], best, max(within, default=0.0))
    return result
