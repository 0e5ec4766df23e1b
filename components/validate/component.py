"""KFP wrapper: validate a live endpoint against the model's signature and golden set."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def validate_endpoint(
    endpoint: Input[Artifact],
    model: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    atol: float = 1e-4,
    rtol: float = 1e-3,
    max_batch_size: int = 8,
    ready_timeout_s: float = 120.0,
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
        fail_on_mismatch: Fail the step when validation fails; otherwise only return False.

    Returns:
        metrics: Max errors per output, request latency and the verdict (1 passed, 0 failed).
        report: The validation summary.
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
    result = validate(
        url, endpoint.metadata["model_name"],
        ModelSignature.load(model.path), GoldenSet.load(model.path),
        atol=atol, rtol=rtol, max_batch_size=max_batch_size, ready_timeout_s=ready_timeout_s,
        tensor_names=endpoint.metadata.get("tensor_names"),
    )
    for c in result.comparisons:
        metrics.log_metric(f"{c.name}_max_abs_error", c.max_abs_error)
        metrics.log_metric(f"{c.name}_max_rel_error", c.max_rel_error)
    if result.request_latencies_ms:
        latencies = sorted(result.request_latencies_ms)
        metrics.log_metric("median_request_latency_ms", round(latencies[len(latencies) // 2], 3))
    metrics.log_metric("passed", 1 if result.passed else 0)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    print(result.markdown())
    if fail_on_mismatch and not result.passed:
        raise VerificationError(f"endpoint validation failed: {result.failure_line()}")
    return result.passed
