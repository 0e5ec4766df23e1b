"""The server's view of a load level: vLLM's own ``vllm:*`` Prometheus metrics, read before and
after the level (names as ``vllm/v1/metrics/loggers.py`` registers them; the parser reads
counters without ``_total``), and the KV-cache use sampled while it runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kfp_serve.components.llm.openai_http import OpenAIClient

COUNTERS = {
    "requests": "vllm:request_success",
    "queue_s": "vllm:request_queue_time_seconds_sum",
    "prefill_s": "vllm:request_prefill_time_seconds_sum",
    "decode_s": "vllm:request_decode_time_seconds_sum",
    "preemptions": "vllm:num_preemptions",
    "prefix_hits": "vllm:prefix_cache_hits",
    "prefix_queries": "vllm:prefix_cache_queries",
}
KV_CACHE_GAUGE = "vllm:kv_cache_usage_perc"


def parse(text: str) -> dict[str, float]:
    """Every ``vllm:*`` sample summed over its labels (``_total`` dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vllm:") and not sample.name.endswith("_created"):
                name = sample.name.removesuffix("_total")
                values[name] = values.get(name, 0.0) + sample.value
    return values


@dataclass(frozen=True)
class VllmStats:
    """What vLLM counted during one level."""

    requests: float
    queue_ms: float  # mean per request
    prefill_ms: float
    decode_ms: float
    preemptions: float
    prefix_hit_rate: float | None
    kv_cache_peak: float | None  # the highest KV-cache use sampled, 0..1

    def metrics(self, prefix: str) -> dict[str, float]:
        values = {f"{prefix}_server_queue_ms": round(self.queue_ms, 3),
                  f"{prefix}_server_preemptions": self.preemptions}
        if self.kv_cache_peak is not None:
            values[f"{prefix}_server_kv_cache_peak"] = round(self.kv_cache_peak, 4)
        return values

    def cells(self) -> list[str]:
        hit = "—" if self.prefix_hit_rate is None else f"{self.prefix_hit_rate:.0%}"
        kv = "—" if self.kv_cache_peak is None else f"{self.kv_cache_peak:.1%}"
        return [f"{self.queue_ms:.1f}", f"{self.prefill_ms:.1f}", f"{self.decode_ms:.1f}",
                f"{self.preemptions:g}", kv, hit]


HEADER = ("server queue ms", "prefill ms", "decode ms", "preemptions", "KV cache peak",
          "prefix hits")


def difference(before: dict[str, float], after: dict[str, float], kv_peak: float | None) -> VllmStats:
    delta = {key: after.get(name, 0.0) - before.get(name, 0.0) for key, name in COUNTERS.items()}
    requests = max(delta["requests"], 1.0)
    hits, queries = delta["prefix_hits"], delta["prefix_queries"]
    return VllmStats(requests=delta["requests"], queue_ms=delta["queue_s"] * 1000 / requests,
                     prefill_ms=delta["prefill_s"] * 1000 / requests,
                     decode_ms=delta["decode_s"] * 1000 / requests,
                     preemptions=delta["preemptions"],
                     prefix_hit_rate=hits / queries if queries > 0 else None,
                     kv_cache_peak=kv_peak)


class MetricsWatch:
    """Reads the metrics page before a level, samples the KV-cache gauge during it, and gives
    the difference after; every read that fails leaves the view out (the verdict does not
    depend on it)."""

    def __init__(self, url: str, interval_s: float = 0.25):
        self.url, self.interval_s = url, interval_s
        self._stop = threading.Event()
        self._peak: float | None = None
        self._before: dict[str, float] | None = None
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, float] | None:
        client = OpenAIClient(self.url.rsplit("/metrics", 1)[0], timeout_s=5)
        try:
            status, text = client.get_text("/metrics")
            return parse(text) if status == 200 else None
        except ValueError:
            return None
        finally:
            client.close()

    def __enter__(self) -> MetricsWatch:
        self._before = self._read()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="vllm-metrics")
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            values = self._read()
            if values and KV_CACHE_GAUGE in values:
                self._peak = max(self._peak or 0.0, values[KV_CACHE_GAUGE])

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def stats(self) -> VllmStats | None:
        after = self._read()
        if self._before is None or after is None or not any(n.startswith("vllm:") for n in after):
            return None
        return difference(self._before, after, self._peak)
