"""Validate a live endpoint: the one golden loop, the one load phase, the SLO gates.

Works with every protocol through :class:`~kfp_serve.components.validate.targets.Target`:
readiness, the served metadata (where the protocol has a metadata API; otherwise every response
is checked), the whole golden set compared with the eager model's outputs, then a bounded load
phase per concurrency level.
"""

from __future__ import annotations

import time

import numpy as np

from kfp_serve.components.artifacts import KServeInferenceService, ServingEndpoint, VertexEndpoint
from kfp_serve.components.cost import Cost
from kfp_serve.components.cost import hourly_price as hourly_price_of
from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.load import SloGates
from kfp_serve.components.validate.result import ValidationResult
from kfp_serve.components.validate.server_metrics import ServerGates, difference, read_counters
from kfp_serve.components.validate.targets import Target, json_only, resolve_transport, target_for
from kfp_serve.components.verify import compare_outputs, visible_positions


def validate(target: Target, golden: GoldenSet, atol: float = 1e-4, rtol: float = 1e-3,
             max_batch_size: int = 0, ready_timeout_s: float = 120.0, load_seconds: float = 0.0,
             concurrency: list[int] | None = None, gates: SloGates | None = None,
             metrics_url: str | None = None,
             server_gates: ServerGates | None = None) -> ValidationResult:
    """Wait for readiness, check metadata, send the whole golden set, compare every output, then
    (``load_seconds > 0``) run the load phase and apply the SLO gates. With ``metrics_url``
    the server's own counters are read before and after each load level.

    Args:
        target: The endpoint under test.
        golden: Golden inputs and reference outputs.
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value.
        max_batch_size: Largest batch per request (0: the whole golden set in one request).
        ready_timeout_s: How long to wait for readiness.
        load_seconds: Seconds per concurrency level of the load phase (0 skips it).
        concurrency: Concurrent clients per level of the load phase.
        gates: SLO gates on the load phase.
        metrics_url: The server's Prometheus metrics page (Triton or TorchServe).
        server_gates: SLO gates on what the server saw (the busiest level).
    """
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    signature = target.signature
    step = golden.batch_size if max_batch_size <= 0 else max_batch_size
    collected: dict[str, list[np.ndarray]] = {n: [] for n in signature.output_names}
    latencies: list[float] = []
    seen: set[str] = set()
    try:
        target.wait_ready(ready_timeout_s)
        published = target.metadata_problems()
        for start in range(0, golden.batch_size, step):
            began = time.perf_counter()
            outputs, problems = target.infer(golden.slice(start, start + step).inputs)
            latencies.append((time.perf_counter() - began) * 1000)
            seen.update(problems)
            for name, value in outputs.items():
                collected[name].append(value)
    finally:
        target.close()
    actual = {n: np.concatenate(v) for n, v in collected.items() if v}
    result = ValidationResult(target.description, target.model_name,
                              sorted(set(published or ()) | seen),
                              compare_outputs(golden.outputs, actual, atol, rtol,
                                              visible_positions(target.signature, golden.inputs)),
                              latencies,
                              golden.batch_size)
    if published is None:
        result.metadata_note = target.response_check_note
    else:  # a split endpoint says what it did to the golden requests (Vertex AI)
        result.metadata_note = getattr(target, "split_note", "")
    def counters() -> tuple[str, dict[str, float]] | None:
        """The server's counters: its metrics page, or what the target reads itself (Triton
        on Vertex AI, through its redirect header); None when neither can be read."""
        if metrics_url:
            return read_counters(metrics_url, target.model_name)
        reader = getattr(target, "read_counters", None)
        return reader() if reader else None

    if load_seconds > 0:
        for clients in concurrency or [1]:
            before = counters()
            result.load += target.load(golden, [clients], load_seconds)
            after = counters() if before is not None else None
            if before is not None and after is not None:
                result.server.append(difference(after[0], before[1], after[1], target.model_name))
        result.slo_problems = (gates or SloGates()).violations(result.load)
        busiest = result.server[-1] if result.server else None
        result.slo_problems += (server_gates or ServerGates()).violations(busiest)
    return result


def validate_target(endpoint: ServingEndpoint | KServeInferenceService | VertexEndpoint,
                    signature: ModelSignature,
                    golden: GoldenSet, atol: float, rtol: float, max_batch_size: int,
                    ready_timeout_s: float, load_seconds: float, concurrency: list[int],
                    gates: SloGates, transport: str = "auto", metrics_url: str | None = None,
                    server_gates: ServerGates | None = None, machine_type: str | None = None,
                    hourly_price: float | None = None) -> ValidationResult:
    """Validate the endpoint an artifact's record describes; see
    :func:`~kfp_serve.components.validate.targets.target_for` for the kinds and protocols. The
    server's metrics are read from ``metrics_url``, else from the record's (local Triton).
    With a machine type or an hourly price the result states the cost per million inferences."""
    price = hourly_price_of(machine_type, hourly_price)  # a bad machine type fails first
    transport = resolve_transport(transport, signature, json_only(endpoint))
    target = target_for(endpoint, signature, transport)
    result = validate(target, golden, atol, rtol, max_batch_size, ready_timeout_s, load_seconds,
                      concurrency, gates, metrics_url or getattr(endpoint, "metrics_url", "") or None,
                      server_gates)
    result.transport = transport
    if price and result.load:  # each load request carries one sample
        result.cost = Cost.from_levels(price, [(lv.throughput, lv.p95_ms) for lv in result.load],
                                       gates.max_p95_ms)
    return result
