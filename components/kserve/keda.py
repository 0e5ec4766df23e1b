"""Standard-mode autoscaling on a Prometheus metric users choose (queue time, requests in
flight, GPU duty cycle): KServe's ``spec.predictor.autoScaling`` with an ``External`` metric,
which KServe turns into a KEDA ScaledObject (KServe 0.15+, ``autoscalerClass: keda``), with the
query asked of Prometheus before anything is applied.

Upstream: kserve/kserve pkg/apis/serving/v1beta1/inference_service_validation.go
(validateScalingKedaCompExtension: External needs a query and a target value; no scaleMetric);
kedacore/keda pkg/scalers/prometheus_scaler.go (ExecutePromQuery: GET /api/v1/query, more than
one series is an error, none is 0 or an error as ignoreNullValues says, NaN/Inf likewise).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from kfp_serve.components.errors import UserError, first_line


@dataclass(frozen=True)
class PrometheusScaling:
    """Scale the predictor so that ``query`` stays at ``target`` (KEDA's Value target)."""

    query: str
    target: float
    server: str  # Prometheus' HTTP API, as KEDA in the cluster reaches it

    def check(self, mode: str, autoscaler_class: str | None, scale_metric: str | None) -> None:
        if mode != "Standard":
            raise UserError("scale_query needs deployment_mode 'Standard': KServe scales on a"
                            " Prometheus metric through KEDA there (Knative mode scales on"
                            " concurrency or rps)")
        if autoscaler_class not in (None, "keda"):
            raise UserError(f"scale_query scales through KEDA; autoscaler_class {autoscaler_class!r}"
                            " cannot (leave it empty or set 'keda')")
        if scale_metric is not None:
            raise UserError("scale_query replaces scale_metric (KServe's webhook refuses scaleMetric"
                            " with KEDA); drop scale_metric")
        if not self.query.strip():
            raise UserError("scale_query is empty; give the PromQL query KEDA scales on")
        if not self.target > 0:
            raise UserError(f"scale_query_target={self.target}: the value each replica should carry,"
                            " above 0")
        if not self.server.startswith(("http://", "https://")):
            raise UserError(f"prometheus_url {self.server!r}: the HTTP address of the Prometheus API"
                            " KEDA queries, e.g. http://prometheus-operated.monitoring.svc:9090, or"
                            " GKE's Managed Service for Prometheus frontend")

    def to_autoscaling(self) -> dict:
        """``spec.predictor.autoScaling`` as the InferenceService CRD spells it."""
        value = f"{self.target:.3f}".rstrip("0").rstrip(".")  # a Kubernetes quantity
        return {"metrics": [{"type": "External", "external": {
            "metric": {"backend": "prometheus", "serverAddress": self.server, "query": self.query},
            "target": {"type": "Value", "value": value}}}]}


def check_query(scaling: PrometheusScaling, timeout_s: float = 10.0) -> list[str]:
    """Ask Prometheus the query as KEDA will: a PromQL error or more than one series is refused
    in one line; no series now, or Prometheus out of this step's reach, is a note."""
    url = f"{scaling.server.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": scaling.query})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            answer = json.loads(err.read())
        except ValueError:
            return [f"Prometheus at {scaling.server} answered HTTP {err.code} to scale_query: it was"
                    " not checked"]
    except (OSError, ValueError) as err:
        return [f"Prometheus at {scaling.server} could not be asked from this step"
                f" ({first_line(err)}): scale_query was not checked; KEDA asks it from the cluster"]
    if answer.get("status") != "success":
        raise UserError(f"scale_query is refused by Prometheus at {scaling.server}:"
                        f" {answer.get('errorType', 'error')}: {answer.get('error', answer)}")
    data = answer.get("data") or {}
    if data.get("resultType") == "matrix":
        raise UserError("scale_query returns a range vector; KEDA reads one instant value: wrap it"
                        " in rate() or an *_over_time() function")
    result = data.get("result") or []
    if data.get("resultType") == "vector" and len(result) > 1:
        labels = [{k: v for k, v in r.get("metric", {}).items()} for r in result[:2]]
        raise UserError(f"scale_query returns {len(result)} series (e.g. {labels}); KEDA's"
                        " Prometheus scaler needs one: aggregate it, e.g. sum(...)")
    if data.get("resultType") == "vector" and not result:
        return [f"scale_query returns no series now: KEDA reads that as 0 (or fails, as its"
                f" ignoreNullValues says); check the metric name and labels: {scaling.query}"]
    return []


def check_manifest_queries(manifest: dict) -> list[str]:
    """:func:`check_query` for each Prometheus metric the InferenceService scales on."""
    notes: list[str] = []
    for metric in ((manifest["spec"]["predictor"].get("autoScaling") or {}).get("metrics") or []):
        source = (metric.get("external") or {}).get("metric") or {}
        if metric.get("type") == "External" and source.get("backend") == "prometheus":
            target = float(metric["external"]["target"]["value"])
            notes += check_query(PrometheusScaling(source["query"], target, source["serverAddress"]))
    return notes
