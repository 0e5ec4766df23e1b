"""Serving metrics scraped where GKE (Managed Service for Prometheus) and the Prometheus
Operator scrape: the monitor selects the predictor pods KServe labels, on the port KServe's
runtime annotates, owned by the InferenceService (rows 42-43 of KSERVE_BEHAVIOUR.md)."""

import pytest
from support.kserve import cluster_for, make_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.manifest import build_inference_service


@pytest.fixture
def monitored_kube(kube):
    api, url = kube
    api.monitoring = ("monitoring.googleapis.com", "monitoring.coreos.com")
    return api, url


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_a_pod_monitoring_scrapes_the_predictor_pods_on_the_runtime_s_metrics_port(
        monitored_kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = monitored_kube
    cluster = cluster_for(url)
    result = deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"])),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"],
                    monitor=("podmonitoring", 15))
    monitor = api.owned[("podmonitorings", "models", "digits-metrics")]
    [endpoint] = monitor["spec"]["endpoints"]
    # kserve-tritonserver annotates prometheus.kserve.io/port 8002 and path /metrics
    assert endpoint == {"port": 8002, "path": "/metrics", "interval": "15s"}
    pods = [p for pods in api.pods.values() for p in pods]
    assert pods and all(_selects(monitor["spec"]["selector"]["matchLabels"], p["metadata"]["labels"])
                        for p in pods)
    isvc = cluster.get("digits")
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
    assert any("PodMonitoring models/digits-metrics scrapes port 8002 /metrics every 15s" in n
               and "DCGM_FI_DEV_GPU_UTIL" in n for n in result.notes)
    # deploying again replaces it; deleting the InferenceService takes it along
    deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"])), timeout_s=120,
           poll_s=0.2, onnx_ir_version=published["ir"], monitor=("podmonitoring", 30))
    assert api.owned[("podmonitorings", "models", "digits-metrics")]["spec"]["endpoints"][0]["interval"] == "30s"
    assert cluster.delete("digits") and not api.owned


def test_a_service_monitor_scrapes_through_a_headless_service_of_the_metrics_port(monitored_kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = monitored_kube
    deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])),
           timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"], monitor=("servicemonitor", 30))
    service = api.owned[("services", "models", "digits-metrics")]
    monitor = api.owned[("servicemonitors", "models", "digits-metrics")]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [p["name"] for p in service["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]
    assert service["spec"]["ports"][0]["targetPort"] == 8002
    pods = [p for pods in api.pods.values() for p in pods]
    assert pods and all(_selects(service["spec"]["selector"], p["metadata"]["labels"]) for p in pods)


def test_what_cannot_be_scraped_is_refused_before_anything_changes(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube  # no monitoring API installed
    cluster = cluster_for(url)
    manifest = build_inference_service(make_spec(storage_uri=published["v1"]))
    with pytest.raises(UserError, match=r"metrics_monitor 'podmonitoring' needs Google Cloud Managed"
                                        r" Service for Prometheus .* whose API monitoring.googleapis.com"
                                        r" this cluster does not have"):
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2, monitor=("podmonitoring", 30))
    assert cluster.get("digits") is None
    torchserve = build_inference_service(make_spec(storage_uri=published["v1"], model_format="pytorch"))
    with pytest.raises(UserError, match="TorchServe archives built by kfp-serve keep their metrics"
                                        " API on 127.0.0.1"):
        deploy(cluster, torchserve, timeout_s=60, poll_s=0.2, monitor=("servicemonitor", 30))
    with pytest.raises(UserError, match="metrics_interval_s=1: scrape every 5 to 3600 seconds"):
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2, monitor=("servicemonitor", 1))
    with pytest.raises(UserError, match="metrics_monitor 'prometheus' is not one of"):
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2, monitor=("prometheus", 30))


def test_the_fake_checks_monitors_against_their_crds():
    """The CRDs of prometheus-engine and prometheus-operator (tests/data/monitoring)."""
    from fakes.kube_api import FakeKubeApi

    api = FakeKubeApi(monitoring=("monitoring.googleapis.com",))
    bad = {"apiVersion": "monitoring.googleapis.com/v1", "kind": "PodMonitoring",
           "metadata": {"name": "m"}, "spec": {"selector": {}, "endpoints": [{"port": 0, "interval": "30s"}],
                                               "scrapeEvery": "30s"}}
    status, answer = api("POST", "/apis/monitoring.googleapis.com/v1/namespaces/models/podmonitorings",
                         {}, bad)
    assert status == 422
    assert 'unknown field "spec.scrapeEvery"' in answer["message"] and "Port is required" in answer["message"]
    status, _ = api("POST", "/apis/monitoring.coreos.com/v1/namespaces/models/servicemonitors", {}, bad)
    assert status == 404  # the Prometheus Operator is not installed here
