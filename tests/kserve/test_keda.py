"""Autoscaling on a serving metric users choose: a Prometheus query KServe hands to KEDA, asked
of Prometheus before the apply (rows 44-45 of KSERVE_BEHAVIOUR.md)."""

import pytest
from fakes.http_fake import FakeServer
from fakes.prometheus_api import FakePrometheus
from support.kserve import cluster_for, make_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.keda import PrometheusScaling, check_query
from kfp_serve.components.kserve.manifest import build_inference_service

QUEUE = 'sum(rate(nv_inference_queue_duration_us{model="digits"}[1m]))'
SERIES = [({"__name__": "nv_inference_queue_duration_us", "model": "digits", "pod": "a"}, 1200.0),
          ({"__name__": "nv_inference_queue_duration_us", "model": "digits", "pod": "b"}, 800.0)]


@pytest.fixture
def prometheus():
    fake = FakePrometheus(SERIES)
    with FakeServer(fake) as server:
        yield fake, server.url


def test_a_standard_deploy_scales_on_a_prometheus_query_checked_first(kube, published, prometheus):
    from kfp_serve.components.kserve.rollout import deploy

    fake, url = prometheus
    _, api_url = kube
    scaling = PrometheusScaling(QUEUE, 500, url)
    manifest = build_inference_service(make_spec(storage_uri=published["v1"], deployment_mode="Standard",
                                                 metric_scaling=scaling))
    assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert manifest["spec"]["predictor"]["autoScaling"] == {"metrics": [{"type": "External", "external": {
        "metric": {"backend": "prometheus", "serverAddress": url, "query": QUEUE},
        "target": {"type": "Value", "value": "500"}}}]}
    result = deploy(cluster_for(api_url), manifest, timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert fake.queries == [QUEUE] and result.mode == "Standard"


@pytest.mark.parametrize(("query", "message"), [
    ("sum(rate(nv_inference_queue_duration_us{model=digits}[1m]))", "refused by Prometheus at .*: bad_data:"
                                                                     " invalid parameter \"query\""),
    ('rate(nv_inference_queue_duration_us{model="digits"}[1m])', "returns 2 series .*; KEDA's Prometheus"
                                                                  r" scaler needs one: aggregate it, e.g. sum\(...\)"),
    ('nv_inference_queue_duration_us{model="digits"}[5m]', "returns a range vector; KEDA reads one instant value"),
])
def test_queries_keda_would_fail_on_are_refused_before_the_apply(prometheus, query, message):
    _, url = prometheus
    with pytest.raises(UserError, match=message):
        check_query(PrometheusScaling(query, 5, url))


def test_no_series_yet_or_no_prometheus_in_reach_is_a_note(prometheus):
    _, url = prometheus
    [note] = check_query(PrometheusScaling('sum(nv_inference_pending_request_count{model="x"})', 5, url))
    assert note.startswith("scale_query returns no series now: KEDA reads that as 0")
    [note] = check_query(PrometheusScaling(QUEUE, 5, "http://127.0.0.1:9"), timeout_s=2)
    assert "could not be asked from this step" in note and "KEDA asks it from the cluster" in note


@pytest.mark.parametrize(("fields", "message"), [
    ({"deployment_mode": "Knative"}, "scale_query needs deployment_mode 'Standard'"),
    ({"deployment_mode": "Standard", "autoscaler_class": "hpa"}, "autoscaler_class 'hpa' cannot"),
    ({"deployment_mode": "Standard", "scale_metric": "cpu"}, "scale_query replaces scale_metric"),
])
def test_scaling_on_a_query_outside_what_kserve_allows_is_one_line(published, fields, message):
    with pytest.raises(UserError, match=message):
        build_inference_service(make_spec(storage_uri=published["v1"], **fields,
                                          metric_scaling=PrometheusScaling(QUEUE, 5, "http://prom:9090")))
    with pytest.raises(UserError, match="scale_query_target=0: the value each replica should carry"):
        build_inference_service(make_spec(storage_uri=published["v1"], deployment_mode="Standard",
                                          metric_scaling=PrometheusScaling(QUEUE, 0, "http://prom:9090")))


def test_the_fake_webhook_refuses_what_kserve_refuses_in_autoscaling():
    from fakes.kube_api import _autoscaling_refusal

    external = {"type": "External", "external": {"metric": {"backend": "prometheus", "query": ""},
                                                 "target": {"type": "Value", "value": "5"}}}
    assert _autoscaling_refusal("keda", [external]) == "the query should not be empty"
    external["external"]["metric"]["query"] = "up"
    external["external"]["target"] = {"type": "Value"}
    assert _autoscaling_refusal("keda", [external]) == "the target threshold value should not be empty"
    assert _autoscaling_refusal("hpa", [external]).startswith("invalid HPA metric source type with value [External]")
