"""The LLM load phase: a concurrency sweep (or a request rate) of streamed completions, and the
per-level numbers ``vllm bench serve`` reports, defined as it defines them
(``vllm/benchmarks/serve.py`` ``calculate_metrics``): TTFT to the first token event; TPOT =
(latency - TTFT) / (output tokens - 1) for requests with more than one output token; ITL = every
gap between token events; E2EL = latency; output tokens from the stream's ``usage``;
throughputs over the level's wall time; goodput = requests/s meeting every SLO (a request with
one output token counts TPOT 0). Percentiles by ``numpy.percentile`` (linear), as there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfp_serve.components.errors import UserError
from kfp_serve.components.llm.openai_http import StreamResult, add_event, error_message

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Slo:
    """Per-request limits (ms); 0 leaves one out. Goodput counts requests that meet all."""

    ttft_ms: float = 0.0
    tpot_ms: float = 0.0
    e2el_ms: float = 0.0

    def met(self, result: StreamResult) -> bool:
        output = _output_len(result)
        tpot = (result.latency - result.ttft) / (output - 1) if output > 1 else 0.0
        return result.ok and all(limit <= 0 or value * 1000 <= limit for limit, value in (
            (self.ttft_ms, result.ttft), (self.tpot_ms, tpot), (self.e2el_ms, result.latency)))

    def text(self) -> str:
        parts = [f"{name} <= {limit:g} ms" for name, limit in (
            ("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("E2EL", self.e2el_ms)) if limit > 0]
        return ", ".join(parts) or "none"


#: an answer of several tokens whose first and last came closer than this came whole
WHOLE_SPAN_S = 0.001


def came_whole(result: StreamResult) -> bool:
    """Several tokens that arrived at once: coalesced by the server or buffered on the way."""
    return _output_len(result) > 1 and result.latency - result.ttft < WHOLE_SPAN_S


def _output_len(result: StreamResult) -> int:
    """vLLM bench's rule: usage's completion tokens, else the token events seen."""
    return int(result.output_tokens or result.events)


@dataclass
class LlmLevel:
    """One load level's requests and the numbers ``vllm bench serve`` would report for it."""

    concurrency: int  # the most requests in flight (0: unbounded, in request-rate mode)
    request_rate: float  # requests/s offered (0: as fast as the concurrency allows)
    duration_s: float
    results: list[StreamResult]
    slo: Slo = field(default_factory=Slo)

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if not self.request_rate else f"{self.request_rate:g} req/s"

    @property
    def completed(self) -> list[StreamResult]:
        return [r for r in self.results if r.ok]

    @property
    def errors(self) -> int:
        return len(self.results) - len(self.completed)

    @property
    def error_rate(self) -> float:
        return self.errors / len(self.results) if self.results else 1.0

    def first_error(self) -> str:
        return next((r.error or f"HTTP {r.status}" for r in self.results if not r.ok), "")

    @property
    def output_tokens(self) -> int:
        return sum(_output_len(r) for r in self.completed)

    @property
    def input_tokens(self) -> int:
        return sum(int(r.prompt_tokens or 0) for r in self.completed)

    def _per_second(self, count: float) -> float:
        return count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def request_throughput(self) -> float:
        return self._per_second(len(self.completed))

    @property
    def output_throughput(self) -> float:
        return self._per_second(self.output_tokens)

    @property
    def total_token_throughput(self) -> float:
        return self._per_second(self.output_tokens + self.input_tokens)

    @property
    def whole_share(self) -> float:
        """The share of answers of more than one token that came in one event (coalesced by
        the server, or buffered on the way)."""
        multi = [r for r in self.completed if _output_len(r) > 1]
        return sum(1 for r in multi if came_whole(r)) / len(multi) if multi else 0.0

    @property
    def goodput(self) -> float:
        return self._per_second(sum(1 for r in self.results if self.slo.met(r)))

    @property
    def goodput_ratio(self) -> float:
        return sum(1 for r in self.results if self.slo.met(r)) / len(self.results) if self.results else 0.0

    def samples_ms(self, metric: str) -> list[float]:
        done = self.completed
        if metric == "ttft":
            return [r.ttft * 1000 for r in done]
        if metric == "e2el":
            return [r.latency * 1000 for r in done]
        if metric == "tpot":
            return [(r.latency - r.ttft) / (_output_len(r) - 1) * 1000
                    for r in done if _output_len(r) > 1]
        if metric == "itl":
            return [gap * 1000 for r in done for gap in r.itl]
        raise ValueError(metric)

    def percentile_ms(self, metric: str, p: float) -> float:
        values = self.samples_ms(metric)
        return float(np.percentile(values, p)) if values else float("nan")

    def mean_ms(self, metric: str) -> float:
        values = self.samples_ms(metric)
        return float(np.mean(values)) if values else float("nan")

    def metrics(self) -> dict[str, float]:
        prefix = f"c{self.concurrency}" if not self.request_rate else f"r{self.request_rate:g}"
        values = {f"{prefix}_requests_per_s": round(self.request_throughput, 3),
                  f"{prefix}_output_tokens_per_s": round(self.output_throughput, 1),
                  f"{prefix}_error_rate": round(self.error_rate, 4),
                  f"{prefix}_goodput_ratio": round(self.goodput_ratio, 4)}
        for metric in ("ttft", "tpot", "itl", "e2el"):
            value = self.percentile_ms(metric, 95)
            if np.isfinite(value):
                values[f"{prefix}_p95_{metric}_ms"] = round(value, 3)
        return values


# -- prompts ------------------------------------------------------------------------------------


def synthetic_prompts(count: int, input_len: int, output_len: int, vocab_size: int,
                      avoid: Sequence[int] = (), seed: int = 0) -> list[dict[str, Any]]:
    """``count`` completion bodies of exactly ``input_len`` random token ids that each ask for
    exactly ``output_len`` tokens (``ignore_eos``, vLLM's extension, as ``vllm bench serve
    --ignore-eos``): fixed lengths make levels comparable."""
    if input_len < 1 or output_len < 1:
        raise UserError(f"input_len {input_len} and output_len {output_len} must be >= 1")
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(avoid), dtype=int))
    return [{"prompt": [int(t) for t in rng.choice(allowed, input_len)], "max_tokens": output_len,
             "ignore_eos": True, "temperature": 0.0} for _ in range(count)]


def file_prompts(path: str | Path, default_output_len: int) -> list[dict[str, Any]]:
    """Completion bodies from a JSONL file: one object per line with ``prompt`` (text or token
    ids) and optionally ``max_tokens``."""
    bodies = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompt = item["prompt"]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path}:{number} is not a JSON object with a 'prompt' ({err}); write"
                            ' one {"prompt": ..., "max_tokens": N} per line') from err
        bodies.append({"prompt": prompt, "max_tokens": int(item.get("max_tokens", default_output_len)),
                       "temperature": 0.0})
    if not bodies:
        raise UserError(f"{path} holds no prompts; write one JSON object per line")
    return bodies


# -- running a level ----------------------------------------------------------------------------


async def _stream(session: Any, url: str, body: dict[str, Any]) -> StreamResult:
    """One streamed request with aiohttp, parsed as vLLM's benchmark client parses it (events
    split on blank lines as chunks arrive; one timestamp per token event)."""
    import aiohttp

    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    result = StreamResult(start=time.perf_counter())
    recent = result.start
    try:
        async with session.post(url, json=body) as response:
            result.status = response.status
            if response.status != 200:
                result.error = f"HTTP {response.status}: {error_message(await response.read())}"
                return result
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    message, buffer = buffer.split(b"\n\n", 1)
                    recent = add_event(result, message.strip(), recent)
                    if result.error:
                        return result
            result.latency = recent - result.start
            if not result.saw_done:
                result.error = "the stream ended without data: [DONE]"
    except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as err:
        result.error = result.error or f"{type(err).__name__}: {err}"
    return result


def run_level(base_url: str, model: str, bodies: list[dict[str, Any]], concurrency: int,
              request_rate: float = 0.0, timeout_s: float = 300.0, slo: Slo | None = None,
              seed: int = 0, headers: dict[str, str] | None = None) -> LlmLevel:
    """Send every body (streamed, to ``/v1/completions``) with at most ``concurrency`` in flight;
    with ``request_rate`` > 0 requests start at Poisson arrival times at that rate, as ``vllm
    bench serve --request-rate`` does (``concurrency`` then caps the requests in flight). One
    asyncio loop and one aiohttp session, as ``vllm bench serve`` runs: client threads on a
    2-core machine measured a fraction of the server's throughput."""
    import asyncio

    import aiohttp

    rng = np.random.default_rng(seed)
    arrivals = (np.cumsum(rng.exponential(1.0 / request_rate, len(bodies)))
                if request_rate > 0 else np.zeros(len(bodies)))
    url = base_url.rstrip("/") + "/v1/completions"

    async def run() -> tuple[list[StreamResult], float]:
        limit = asyncio.Semaphore(max(1, concurrency))
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        connector = aiohttp.TCPConnector(limit=max(1, concurrency), force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                         headers=headers or {}) as session:
            start = time.perf_counter()

            async def one(index: int, body: dict[str, Any]) -> StreamResult:
                delay = start + arrivals[index] - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with limit:
                    return await _stream(session, url, {**body, "model": model})

            results = await asyncio.gather(*(one(k, b) for k, b in enumerate(bodies)))
            return list(results), time.perf_counter() - start

    results, duration = asyncio.run(run())
    return LlmLevel(concurrency=concurrency, request_rate=request_rate, duration_s=duration,
                    results=results, slo=slo or Slo())
