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
) -> bool:
    """Checks a live Open Inference Protocol v2 endpoint against the exported model.

    Waits for server and model readiness, compares the served metadata (names, dtypes, shapes)
    with the signature, sends the whole golden set and compares every output with the eager
    model's reference within atol/rtol.

    Args:
        endpoint: A ServingEndpoint or KServeInferenceService artifact (metadata ``url``,
            ``model_name``).
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
    from kfp_serve.components.validate.endpoint import validate_endpoint as validate

    expect(endpoint, "ServingEndpoint", "KServeInferenceService")
    expect(model, "OnnxModel", "TorchScriptModel", "TensorRTModel", "TorchModel")
    # while a canary takes part of the traffic, check the canary itself, not the traffic mix
    url = endpoint.metadata.get("canary_url") or endpoint.metadata["url"]
    signature, golden = ModelSignature.load(model.path), GoldenSet.load(model.path)
    result = validate(
        url, endpoint.metadata["model_name"], signature, golden,
        atol=atol, rtol=rtol, max_batch_size=max_batch_size, ready_timeout_s=ready_timeout_s,
        tensor_names=endpoint.metadata.get("tensor_names"),
    )
    if load_seconds > 0:
        from kfp_serve.components.validate.load import SloGates, run_load

        result.load = run_load(url, endpoint.metadata["model_name"], signature, golden,
                               [int(c) for c in concurrency],
                               load_seconds, endpoint.metadata.get("tensor_names"))
        result.slo_problems = SloGates(max_p95_latency_ms, min_throughput,
                                       max_error_rate).violations(result.load)
        for level in result.load:
            metrics.log_metric(f"c{level.concurrency}_p95_ms", round(level.p95_ms, 3))
            metrics.log_metric(f"c{level.concurrency}_throughput", round(level.throughput, 1))
            metrics.log_metric(f"c{level.concurrency}_error_rate", round(level.error_rate, 4))
    for c in result.comparisons:
        metrics.log_metric(f"{c.name}_max_abs_error", c.max_abs_error)
        metrics.log_metric(f"{c.name}_max_rel_error", c.max_rel_error)
    if result.request_latencies_ms:
        latencies = sorted(result.request_latencies_ms)
        metrics.log_metric("median_request_latency_ms", round(latencies[len(latencies) // 2], 3))
    metrics.log_metric("passed", 1 if result.passed else 0)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    with open(html_report.path, "w") as handle:
        handle.write(result.html())
    print(result.markdown())
    if fail_on_mismatch and not result.passed:
        raise VerificationError(f"endpoint validation failed: {result.failure_line()}")
    return result.passed
