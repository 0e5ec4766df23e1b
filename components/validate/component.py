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
    max_error_rate: Optional[float] = None,
    fail_on_mismatch: bool = True,
    transport: str = "rest",
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
        max_error_rate: SLO gate: failed share of requests at every level (empty: no gate).
        fail_on_mismatch: Fail the step when validation fails; otherwise only return False.
        transport: ``rest``, or ``grpc`` to send the golden set and the load through
            tritonclient's gRPC client (Open Inference Protocol v2 servers).

    Returns:
        metrics: Max errors per output, request latency, load results and the verdict.
        report: The validation summary.
        html_report: The same with a latency chart, for the Kubeflow UI.
        Output: True when everything matched.
    """
    from kfp_serve.components.artifacts import expect
    from kfp_serve.components.errors import VerificationError
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.signature import ModelSignature
    from kfp_serve.components.validate.load import SloGates
    from kfp_serve.components.validate.validation import validate_target

    kind = expect(endpoint, "ServingEndpoint", "KServeInferenceService", "VertexEndpoint")
    expect(model, "OnnxModel", "TorchScriptModel", "TensorRTModel", "TorchModel")
    result = validate_target(
        kind, dict(endpoint.metadata), ModelSignature.load(model.path), GoldenSet.load(model.path),
        atol=atol, rtol=rtol, max_batch_size=max_batch_size, ready_timeout_s=ready_timeout_s,
        load_seconds=load_seconds, concurrency=[int(c) for c in concurrency],
        gates=SloGates(max_p95_latency_ms, min_throughput, max_error_rate), transport=transport,
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
