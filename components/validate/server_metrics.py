"""What the server itself saw during the load phase: its Prometheus counters, read before and
after, as queue time vs compute time and the batch size the dynamic batcher actually formed.

- Triton (``nv_inference_*`` on its metrics port, 8002 by default; the local runtime serves it
  on 127.0.0.1): the counters of the model's inference statistics, summed over versions
  (server/docs/user_guide/metrics.md, "Inference Request Metrics").
- TorchServe (``ts_*`` on its metrics API, 8082, with ``metrics_mode=prometheus``):
  ``ts_inference_requests_total``, ``ts_queue_latency_microseconds`` and
  ``ts_inference_latency_microseconds`` (ts/configs/metrics.yaml); TorchServe publishes no
  execution count, so no achieved batch size.

The text format is parsed with ``prometheus_client``'s parser; counter names are compared
without the ``_total`` suffix. Triton's GPU utilization (``nv_gpu_utilization``, a gauge of
0.0-1.0 per GPU, sampled every ``--metrics-interval-ms``, 2 s by default; metrics.md "GPU
Metrics") is read as the level ends, to tell a GPU that idled from one that was saturated.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from kfp_serve.components.errors import InfrastructureError, UserError

TRITON = {
    "success": "nv_inference_request_success",
    "failure": "nv_inference_request_failure",
    "inferences": "nv_inference_count",
    "executions": "nv_inference_exec_count",
    "request_us": "nv_inference_request_duration_us",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
}
GPU_UTILIZATION = "nv_gpu_utilization"
#: where a GPU's busy time is seen over time on GKE: DCGM's exporter (GKE's managed DCGM
#: metrics) and the kubelet's accelerator metrics
DCGM_HINT = ("GPU busy time: DCGM_FI_DEV_GPU_UTIL (GKE's managed DCGM metrics) or"
             " kubernetes.io/container/accelerator/duty_cycle")
#: below: the GPU mostly waited; above: it was the limit
IDLE_GPU, BUSY_GPU = 0.3, 0.9
TORCHSERVE = {
    "success": "ts_inference_requests",
    "queue_us": "ts_queue_latency_microseconds",
    "request_us": "ts_inference_latency_microseconds",
}


def parse_counters(text: str, model_name: str) -> tuple[str, dict[str, float]]:
    """``(server kind, counter -> value)`` for ``model_name`` from a Prometheus text page."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    gpus: list[float] = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == GPU_UTILIZATION:  # per GPU, no model label
                    gpus.append(sample.value)
                    continue
                model = sample.labels.get("model", sample.labels.get("model_name"))
                if model == model_name and not sample.name.endswith("_created"):
                    # the parser names every counter sample <name>_total; the servers do not
                    name = sample.name.removesuffix("_total")
                    values[name] = values.get(name, 0.0) + sample.value
    except ValueError as err:
        raise InfrastructureError(f"the metrics page is not Prometheus text: {err}") from err
    if any(name.startswith("nv_") for name in values):
        counters = {key: values.get(metric, 0.0) for key, metric in TRITON.items()}
        if gpus:  # a gauge: the mean over the server's GPUs, not a count
            counters["gpu_utilization"] = sum(gpus) / len(gpus)
        return "triton", counters
    if any(name.startswith("ts_") for name in values):
        return "torchserve", {key: values.get(metric, 0.0) for key, metric in TORCHSERVE.items()}
    return "", {}  # nothing for this model yet (TorchServe lists a model after its first request)


def read_counters(url: str, model_name: str, timeout_s: float = 10.0) -> tuple[str, dict[str, float]]:
    """Fetch and parse one metrics page."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as err:
        cause = getattr(err, "reason", err)
        if isinstance(cause, ConnectionRefusedError):
            raise InfrastructureError(
                f"the metrics page {url} refuses connections: the server exited or crashed during"
                " validation (see its log), or metrics_url names the wrong port") from err
        raise InfrastructureError(f"cannot read the server's metrics at {url}: {err}") from err
    return parse_counters(text, model_name)


@dataclass(frozen=True)
class ServerStats:
    """The server's view of one interval (counter differences)."""

    server: str
    requests: float
    failures: float
    inferences: float  # samples (batch rows); Triton only
    executions: float  # model executions; Triton only
    request_ms: float  # mean end-to-end time inside the server per request
    queue_ms: float  # mean time waiting in the scheduler per request
    input_ms: float = 0.0  # mean compute time per request: copying inputs in (Triton only),
    infer_ms: float = 0.0  # running the model,
    output_ms: float = 0.0  # copying outputs out
    #: the GPUs' mean utilization (0-1) in Triton's last sample as the level ended; None: no GPU
    gpu_utilization: float | None = None

    @property
    def compute_ms(self) -> float:
        return self.input_ms + self.infer_ms + self.output_ms

    @property
    def mean_batch(self) -> float | None:
        """Rows per model execution: the batch size the dynamic batcher formed (Triton)."""
        return self.inferences / self.executions if self.executions else None

    def metrics(self) -> dict[str, float]:
        values = {"server_requests": self.requests, "server_queue_ms": round(self.queue_ms, 3),
                  "server_request_ms": round(self.request_ms, 3)}
        if self.server == "triton":
            values["server_compute_ms"] = round(self.compute_ms, 3)
            if self.mean_batch is not None:
                values["server_mean_batch"] = round(self.mean_batch, 2)
        if self.gpu_utilization is not None:
            values["server_gpu_utilization"] = round(self.gpu_utilization, 3)
        return values

    def gpu_line(self) -> str:
        """What the GPU's utilization says about the level ('' without a GPU)."""
        if self.gpu_utilization is None:
            return ""
        busy = self.gpu_utilization
        if busy < IDLE_GPU:
            verdict = ("the GPU mostly waited: throughput is limited before it (too few concurrent"
                       " requests, small batches, or CPU-side work such as input copies); raise"
                       " concurrency or max_batch_size before adding GPUs")
        elif busy > BUSY_GPU:
            verdict = ("the GPU was the limit: more throughput needs more GPUs or replicas, or a"
                       " faster format (TensorRT, FP16)")
        else:
            verdict = "the GPU had room left"
        return (f"- GPU utilization as the level ended: {busy:.0%} (Triton's {GPU_UTILIZATION},"
                f" mean over its GPUs): {verdict}. Over time on GKE: {DCGM_HINT}")

    def markdown(self) -> str:
        lines = [f"- server ({self.server}) counted {self.requests:,.0f} successful and"
                 f" {self.failures:,.0f} failed requests",
                 f"- mean time in the server per request: {self.request_ms:.3f} ms, of which"
                 f" queued {self.queue_ms:.3f} ms"
                 + (f", computing {self.compute_ms:.3f} ms" if self.server == "triton" else "")]
        if self.mean_batch is not None:
            lines.append(f"- {self.inferences:,.0f} samples in {self.executions:,.0f} model"
                         f" executions: the dynamic batcher formed batches of {self.mean_batch:.2f}"
                         " on average")
        return "\n".join(filter(None, [*lines, self.gpu_line()]))


def difference(server: str, before: dict[str, float], after: dict[str, float],
               model_name: str = "") -> ServerStats:
    """What happened between two readings of the same server (``server``: the kind the second
    reading found)."""
    if not server:
        raise UserError(
            f"the server's metrics page has no Triton (nv_inference_*) or TorchServe (ts_*)"
            f" counters for model {model_name!r} after the load; check metrics_url and the model"
            " name (TorchServe needs metrics_mode=prometheus)")
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after if key != "gpu_utilization"}
    requests = delta.get("success", 0.0)

    def per_request(key: str) -> float:
        return delta.get(key, 0.0) / requests / 1000 if requests else 0.0

    return ServerStats(server, requests, delta.get("failure", 0.0), delta.get("inferences", 0.0),
                       delta.get("executions", 0.0), per_request("request_us"),
                       per_request("queue_us"), per_request("compute_input_us"),
                       per_request("compute_infer_us"), per_request("compute_output_us"),
                       after.get("gpu_utilization"))


@dataclass(frozen=True)
class ServerGates:
    """SLO gates on the server's view; None skips a gate."""

    max_queue_ms: float | None = None
    min_mean_batch: float | None = None

    def violations(self, stats: ServerStats | None) -> list[str]:
        if stats is None:
            return ["server-side gates were set but the server's metrics were not read"] if (
                self.max_queue_ms is not None or self.min_mean_batch is not None) else []
        problems = []
        if self.max_queue_ms is not None and stats.queue_ms > self.max_queue_ms:
            problems.append(f"mean queue time in the server {stats.queue_ms:.3f} ms exceeds"
                            f" {self.max_queue_ms:g} ms")
        if self.min_mean_batch is not None:
            if stats.mean_batch is None:
                problems.append(f"{stats.server} reports no execution count, so the batch-size"
                                " gate cannot be checked")
            elif stats.mean_batch < self.min_mean_batch:
                problems.append(f"the server formed batches of {stats.mean_batch:.2f} on average,"
                                f" below {self.min_mean_batch:g}")
        return problems
