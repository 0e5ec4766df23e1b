"""The rules components' parameters obey, checked before a pipeline's first step starts.

Each component checks its inputs again when it runs (a run started from the Kubeflow UI meets
those checks); these rules let ``kfp-serve run`` and ``kfp-serve submit`` refuse a bad value at
once, in the words of the pipeline parameter the user set, instead of 20 s into the run, naming
a component input the user never saw. Choices come from the modules that use them
(``validate.targets.TRANSPORTS``, ``kserve.manifest``, ``triton.config.InstanceKind``), so the
two checks cannot drift apart; ranges are the ones the components' docstrings state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``holds(value)``, said as ``says`` ("at least 1")."""

    holds: Callable[[Any], bool]
    says: str


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"at least {low:g}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"more than {low:g}")


def between(low: float, high: float, note: str = "") -> Rule:
    return Rule(lambda v: low <= v <= high, f"between {low:g} and {high:g}{note}")


def one_of(values: tuple[str, ...], empty: bool = False) -> Rule:
    allowed = (*values, "") if empty else values
    words = ", ".join(values) + (" (or empty)" if empty else "")
    return Rule(lambda v: v in allowed, f"one of {words}")


def _free_port() -> Rule:
    from kfp_serve.components.local.ports import port_is_free

    return Rule(lambda v: v == 0 or (1 <= v <= 65535 and port_is_free(v)),
                "0 (any free port) or a free TCP port of 127.0.0.1 (1-65535)")


#: rules about the machine the steps run on: checked where that is this one (``kfp-serve run``)
_HERE = {"http_port": _free_port, "grpc_port": _free_port}


def _rules() -> dict[str, Rule]:
    from kfp_serve.components.export.onnx_export import EXPORTERS
    from kfp_serve.components.export.serving import SERVING_FORMATS
    from kfp_serve.components.kserve.manifest import (
        DEPLOYMENT_MODES,
        MODEL_FORMATS,
        ROLLOUT_STRATEGIES,
    )
    from kfp_serve.components.triton.config import InstanceKind
    from kfp_serve.components.validate.targets import TRANSPORTS

    percent = between(0, 100)
    return {
        # numerics and verification
        "atol": at_least(0), "rtol": at_least(0), "opset": between(18, 20),
        "max_error_rate": between(0, 1),
        # time
        "ready_timeout_s": above(0), "operation_timeout_s": above(0),
        "unschedulable_grace_s": at_least(0), "load_seconds": at_least(0),
        "seconds_per_batch": above(0), "seconds_per_level": above(0), "budget_s": above(0),
        "model_load_timeout_s": at_least(0), "timeout_s": at_least(0),
        "response_timeout_s": at_least(1), "max_batch_delay_ms": at_least(0),
        "max_queue_delay_microseconds": at_least(0),
        # sizes and counts
        "epochs": at_least(1), "golden_size": between(2, 360), "learning_rate": above(0),
        "max_batch_size": at_least(0), "batch_size": at_least(1), "instance_count": at_least(1),
        "workers": at_least(1), "version": at_least(0), "threads": at_least(0),
        "min_batch": at_least(1), "opt_batch": at_least(1), "max_batch": at_least(1),
        "workspace_mib": at_least(1), "max_candidates": at_least(1), "max_concurrency": at_least(1),
        "min_replicas": at_least(0), "max_replicas": at_least(0), "gpus": at_least(0),
        "accelerator_count": at_least(0), "container_concurrency": at_least(0),
        "scale_target": at_least(0), "max_shared_clients_per_gpu": Rule(
            lambda v: v == 0 or 2 <= v <= 48, "0 (no time-sharing) or between 2 and 48"),
        # gates and prices
        "max_p95_latency_ms": above(0), "max_latency_ms": above(0), "max_server_queue_ms": at_least(0),
        "min_throughput": at_least(0), "min_server_batch": at_least(0), "hourly_price": at_least(0),
        "latency_percentile": Rule(lambda v: v in (95, 99), "95 or 99"),
        # shares
        "canary_traffic_percent": percent, "traffic_percentage": percent,
        "cpu_utilization_target": percent, "accelerator_utilization_target": percent,
        # choices
        "transport": one_of(TRANSPORTS), "deployment_mode": one_of(tuple(DEPLOYMENT_MODES)),
        "serving_format": one_of(SERVING_FORMATS), "exporter": one_of(EXPORTERS),
        "model_format": one_of(MODEL_FORMATS, empty=True),
        "rollout_strategy": one_of(ROLLOUT_STRATEGIES, empty=True),
        "instance_kind": one_of(tuple(kind.value for kind in InstanceKind), empty=True),
        "http_port": between(0, 65535, " (0: any free port)"),
        "grpc_port": between(0, 65535, " (0: any free port)"),
    }


#: where one component reads a name differently from the others
_BY_COMPONENT: dict[tuple[str, str], Rule] = {
    ("deploy_vertex", "min_replicas"): Rule(lambda v: v >= 1,
                                            "at least 1 (Vertex AI does not scale to zero)"),
    ("deploy_vertex", "max_replicas"): at_least(1),
    ("build_triton_repository", "instance_kind"): Rule(
        lambda v: v in ("KIND_CPU", "KIND_GPU", "KIND_AUTO"), "one of KIND_CPU, KIND_GPU, KIND_AUTO"),
}


def broken_rule(component: str, name: str, value: Any, here: bool = False) -> str | None:
    """What ``value`` of ``component``'s input ``name`` must be, when it is not that (else None).

    ``here``: the steps run on this machine (a port must be free here too). A float must be
    finite wherever it goes; a value of the wrong type is left to the parser.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    rule = ((_HERE[name]() if here and name in _HERE else None)
            or _BY_COMPONENT.get((component, name)) or _rules().get(name))
    if rule is None or value is None:
        return None
    try:
        return None if rule.holds(value) else rule.says
    except TypeError:
        return None
