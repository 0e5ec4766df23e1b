"""KFP wrapper: pick a Triton serving configuration by measurement."""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def tune_triton_config(
    model: Input[Model],
    tuned_options: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    max_latency_ms: float = 50.0,
    latency_percentile: int = 95,
    budget_s: float = 180.0,
    seconds_per_level: float = 1.5,
    max_concurrency: int = 32,
    max_candidates: int = 40,
    transport: str = "rest-binary",
    machine_type: Optional[str] = None,
    hourly_price: Optional[float] = None,
):
    """Picks the Triton serving configuration with the most throughput within a latency SLO, by measurement.

    Serves candidate configurations of the model on a real Triton server on this step's machine
    (the local runtime; CPU instances) and drives each with the validator's load generator over
    a rising concurrency sweep. The search space: max_batch_size, dynamic batching on/off, its
    queue delay and preferred batch sizes, instance count and intra-op threads per instance; a
    coordinate search from the defaults visits a few dozen candidates at most and stops at the
    budget with the best so far; the leader is then measured again against the defaults,
    alternating, in two rounds, and kept only if it still wins by more than 5% and more than the
    rounds of one configuration lay apart (otherwise the defaults stay). In the search, results
    within 5% are a tie, won by the simpler configuration.
    Measured on this step's CPU: run it on the machine type you serve on for numbers that
    carry over.

    Args:
        model: An OnnxModel or TorchScriptModel artifact (with its signature and golden set).
        max_latency_ms: The latency SLO (ms) at ``latency_percentile``.
        latency_percentile: 95 or 99.
        budget_s: Time for the whole search (the defaults are always measured).
        seconds_per_level: Measuring time per concurrency level.
        max_concurrency: Highest number of concurrent clients in a sweep.
        max_candidates: Most candidates to measure (the budget may stop the search earlier).
        transport: How the load reaches the server: ``rest-binary`` (binary tensors, as
            tritonclient sends them), ``rest`` (JSON) or ``grpc``.
        machine_type: Prices the chosen configuration (cost per million inferences), e.g.
            ``gke:n2-standard-8``; see components/cost.py for the table.
        hourly_price: USD per hour of the serving node; overrides machine_type's list price.

    Returns:
        tuned_options: A TritonModelOptions artifact: pass it to build_triton_repository's
            ``tuned_options``. Metadata holds the options and every trial.
        metrics: Throughput within the SLO (tuned and defaults), the chosen settings, the
            tuner's run time and, when priced, the cost per million inferences.
        report: The throughput/latency frontier as a chart and every candidate in a table.
    """
    import json

    from kfp_serve.components import artifacts
    from kfp_serve.components.cost import Cost
    from kfp_serve.components.cost import hourly_price as price_of
    from kfp_serve.components.formats import format_of_kind
    from kfp_serve.components.tune import report as render
    from kfp_serve.components.tune.tuner import require_slo_met, tune

    model_format = format_of_kind(artifacts.read(model, artifacts.OnnxModel,
                                                 artifacts.TorchScriptModel).kind()).name
    price = price_of(machine_type, hourly_price)
    result = tune(model.path, model_format, max_latency_ms, latency_percentile, budget_s,
                  seconds_per_level, max_concurrency, transport, max_candidates=max_candidates)
    cost = Cost.from_levels(price, [(lv.throughput, lv.latency_ms) for lv in result.chosen.levels],
                            max_latency_ms, result.chosen.estimate(max_latency_ms)) \
        if price and result.chosen.levels else None
    with open(report.path, "w") as handle:
        handle.write(render.html(result, cost))
    for name, value in render.metrics(result, cost).items():
        metrics.log_metric(name, value)
    print(render.markdown(result, cost))
    require_slo_met(result)
    chosen = result.chosen.candidate.options(model_format).to_dict()
    artifacts.mark(tuned_options, artifacts.TritonModelOptions(
        options=chosen, model_format=model_format, slo_ms=max_latency_ms,
        percentile=latency_percentile,
        samples_per_s_at_slo=round(result.chosen.estimate(max_latency_ms), 1),
        trials=[render.trial_dict(t) for t in result.trials]))
    with open(tuned_options.path, "w") as handle:
        json.dump(chosen, handle, indent=2)
