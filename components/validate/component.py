"""KFP wrapper: validate a live endpoint against the model's signature and golden set."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def validate_endpoint(
    endpoint: Input[Artifact],
    model: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    atol: float = 1e-4,
    rtol: float = 1e-3,
    max_batch_size: int = 8,
    ready_timeout_s: float = 120.0,
    load_seconds: float = 2.0,
    concurrency: List[int] = [1, 4, 16],  # noqa: B006 (KFP reads the default; never mutated)
    max_p95_latency_ms: Optional[float] = None,
    min_throughput: Optional[float] = None,
    max_error_rate: Optional[float] = 0.0,
    fail_on_mismatch: bool = True,
    transport: str = "auto",
    metrics_url: Optional[str] = None,
    max_server_queue_ms: Optional[float] = None,
    min_server_batch: Optional[float] = None,
    machine_type: Optional[str] = None,
    hourly_price: Optional[float] = None,
) -> bool:
    """Checks a live endpoint against the exported model: numbers, metadata, latency under load.

    Open Inference Protocol v2 servers (local Triton, KServe; a KServe canary through its tagged
    URL) and Vertex AI endpoints (rawPredict for Triton, predict for TorchServe; only answers
    from the new deployed model count while traffic is split). Waits for readiness, compares
    the served metadata (names, dtypes, shapes) with the signature, sends the whole golden set
    and compares every output with the eager model's reference within atol/rtol, then runs a
    bounded load phase per concurrency level and applies the SLO gates.

    Args:
        endpoint: A ServingEndpoint, KServeInferenceService or google.VertexEndpoint artifact
            from a deploy step.
        model: The exported model artifact that was deployed (or its TorchModel), carrying
            ``signature.json`` and ``golden.npz``.
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value.
        max_batch_size: Golden samples per request (0 sends them all in one request).
        ready_timeout_s: How long to wait for readiness.
        load_seconds: Seconds per concurrency level of the load phase (0 skips it).
        concurrency: Concurrent clients per level of the load phase.
        max_p95_latency_ms: SLO gate: p95 latency at every level (empty: no gate).
        min_throughput: SLO gate: best requests/s over the levels (empty: no gate).
        max_error_rate: SLO gate: failed share of requests at every level. Default 0: one
            failed request (an error answer, a lost or refused connection) fails the verdict;
            empty: no gate. A level where no request succeeded fails it whatever this says.
        fail_on_mismatch: Fail the step when validation fails; otherwise only return False.
        transport: How tensors travel: ``rest`` (JSON), ``rest-binary`` (REST with binary
            tensor data, as tritonclient sends them), ``grpc`` (tritonclient's gRPC client) or
            ``grpc-stream`` (each client's requests on one bidirectional stream, Triton's
            ModelStreamInfer); on Vertex AI gRPC goes through DirectRawPredict (or
            StreamDirectRawPredict), for a model deployed with grpc=True that takes all of the
            endpoint's traffic. All but ``rest`` need an Open Inference Protocol v2 server.
            ``auto``: ``rest-binary`` where a tensor is float16 (Triton's JSON does not carry
            it), else ``rest``.
        metrics_url: The server's Prometheus metrics page (Triton ``:8002/metrics``,
            TorchServe ``:8082/metrics`` with ``metrics_mode=prometheus``), read before and
            after each load level for queue vs compute time, the batch size the server formed
            and (Triton on a GPU) the GPU's utilization. Empty: the endpoint's own (the local
            runtime records it); none, no reading.
        max_server_queue_ms: SLO gate: mean time a request waited in the server's queue at the
            highest concurrency (empty: no gate).
        min_server_batch: SLO gate: mean batch size Triton's dynamic batcher formed at the
            highest concurrency (empty: no gate).
        machine_type: Prices the result: cost per million inferences at the measured
            throughput and at the latency SLO, for a machine in the suite's price table
            (``gke:g2-standard-4``, ``vertex:n1-standard-4``, ...; see components/cost.py).
        hourly_price: USD per hour of the serving node; overrides machine_type's list price.

    Returns:
        metrics: Max errors per output, request latency, load results (with the server's queue
            and compute time and formed batch size where read, and the cost per million
            inferences where priced) and the verdict.
        report: The validation summary.
        html_report: The same with a latency chart, for the Kubeflow UI.
        Output: True when everything matched.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.errors import VerificationError
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.server_metrics import ServerGates
    from kfp_serve.components.validate.validation import validate_target

    served = artifacts.read(endpoint, *artifacts.ENDPOINTS)
    artifacts.read(model, *artifacts.EXPORTED, artifacts.TorchModel)
    result = validate_target(
        served, ModelSignature.load(model.path), GoldenSet.load(model.path),
        atol=atol, rtol=rtol, max_batch_size=max_batch_size, ready_timeout_s=ready_timeout_s,
        load_seconds=load_seconds, concurrency=[int(c) for c in concurrency],
        gates=SloGates(max_p95_latency_ms, min_throughput, max_error_rate), transport=transport,
        metrics_url=metrics_url, server_gates=ServerGates(max_server_queue_ms, min_server_batch),
        machine_type=machine_type, hourly_price=hourly_price,
    )
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    with open(html_report.path, "w") as handle:
        handle.write(result.html())
    print(result.markdown())
    if fail_on_mismatch and not result.passed:
        raise VerificationError(f"endpoint validation failed: {result.failure_line()}")
    return result.passed
