"""Serving metrics scraped where GKE and Prometheus Operator scrape them: a ``PodMonitoring``
(Google Cloud Managed Service for Prometheus, ``monitoring.googleapis.com/v1``) or a
``ServiceMonitor`` (Prometheus Operator, ``monitoring.coreos.com/v1``, with a Service for the
metrics port), owned by the InferenceService so Kubernetes deletes them with it.

The port is the one KServe's runtime annotates (``prometheus.kserve.io/port``: Triton 8002,
TorchServe 8082, config/runtimes in kserve/kserve). TorchServe archives built by this suite keep
their metrics API on 127.0.0.1 (torchserve/archive.py), so no scraper could reach it: refused.
"""

from __future__ import annotations

from typing import Any

from kfp_serve.components.errors import UserError
from kfp_serve.components.validate.server_metrics import DCGM_HINT

MONITOR_KINDS = {"podmonitoring": ("monitoring.googleapis.com", "v1", "podmonitorings", "PodMonitoring"),
                 "servicemonitor": ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")}
POD_LABEL = "serving.kserve.io/inferenceservice"  # KServe's label on predictor pods
PORT_ANNOTATION = "prometheus.kserve.io/port"
PATH_ANNOTATION = "prometheus.kserve.io/path"
#: the runtime's metrics port when it carries no annotation (Triton's --metrics-port default)
TRITON_METRICS_PORT = 8002


def check_kind(kind: str, model_format: str, interval_s: int) -> None:
    if kind not in MONITOR_KINDS:
        raise UserError(f"metrics_monitor {kind!r} is not one of {sorted(MONITOR_KINDS)} (or empty)")
    if model_format == "pytorch":
        raise UserError("metrics_monitor: TorchServe archives built by kfp-serve keep their metrics"
                        " API on 127.0.0.1 (only inference faces the pod network), so no scraper"
                        " reaches it; serve the model with Triton to scrape its metrics")
    if not 5 <= interval_s <= 3600:
        raise UserError(f"metrics_interval_s={interval_s}: scrape every 5 to 3600 seconds")


def metrics_endpoint(runtime: dict | None) -> tuple[int, str]:
    """The chosen runtime's metrics port and path (its Prometheus annotations)."""
    annotations = ((runtime or {}).get("metadata") or {}).get("annotations") or {}
    port = int(annotations.get(PORT_ANNOTATION, TRITON_METRICS_PORT))
    return port, annotations.get(PATH_ANNOTATION, "/metrics")


def monitor_objects(kind: str, name: str, namespace: str, port: int, path: str, interval_s: int,
                    owner: dict[str, Any]) -> list[dict]:
    """The objects that make ``kind`` scrape InferenceService ``name``'s predictor pods;
    ``owner`` is the InferenceService (its uid), so they go when it goes."""
    group, version, _, resource_kind = MONITOR_KINDS[kind]
    metadata = {"name": f"{name}-metrics", "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "kfp-serve", "kfp-serve/metrics-for": name},
                "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                     "name": name, "uid": owner["metadata"]["uid"]}]}
    endpoint = {"path": path, "interval": f"{interval_s}s"}
    if kind == "podmonitoring":
        return [{"apiVersion": f"{group}/{version}", "kind": resource_kind, "metadata": metadata,
                 "spec": {"selector": {"matchLabels": {POD_LABEL: name}},
                          "endpoints": [{**endpoint, "port": port}]}}]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
               "spec": {"selector": {POD_LABEL: name}, "clusterIP": "None",
                        "ports": [{"name": "metrics", "port": port, "targetPort": port}]}}
    monitor = {"apiVersion": f"{group}/{version}", "kind": resource_kind, "metadata": metadata,
               "spec": {"selector": {"matchLabels": {"kfp-serve/metrics-for": name}},
                        "endpoints": [{**endpoint, "port": "metrics"}]}}
    return [service, monitor]


def check_api(cluster: Any, kind: str) -> None:
    """The monitoring API must be installed (discovery), or nothing would scrape."""
    group = MONITOR_KINDS[kind][0]
    if not cluster.has_api_group(group):
        what = ("Google Cloud Managed Service for Prometheus (enable managed collection: gcloud"
                " container clusters update --enable-managed-prometheus)" if kind == "podmonitoring"
                else "the Prometheus Operator")
        raise UserError(f"metrics_monitor {kind!r} needs {what}, whose API {group} this cluster does"
                        " not have; install it, or pick the other metrics_monitor")


def apply_monitor(cluster: Any, name: str, kind: str, interval_s: int, runtime: dict | None) -> str:
    """Create or replace the monitor (and its Service) for the ready InferenceService; returns
    the line the deploy's notes show."""
    isvc = cluster.get(name)
    port, path = metrics_endpoint(runtime)
    plural = MONITOR_KINDS[kind][2]
    for obj in monitor_objects(kind, name, cluster.namespace, port, path, interval_s, isvc):
        cluster.apply_object(obj, plural)
    return (f"{MONITOR_KINDS[kind][3]} {cluster.namespace}/{name}-metrics scrapes port {port}"
            f" {path} every {interval_s}s; {DCGM_HINT}")
