"""The Kubernetes API boundary: retries, timeouts, dry runs and every API error as one line."""


import pytest
from support.kserve import cluster_for, make_spec

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.kserve.manifest import (
    build_inference_service,
)


def test_the_mode_of_an_existing_service_cannot_change(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    cluster = cluster_for(url)
    deploy(cluster, build_inference_service(make_spec(storage_uri=published["v1"])), timeout_s=120,
           poll_s=0.2, onnx_ir_version=published["ir"])
    with pytest.raises(UserError, match="runs in Knative mode and KServe cannot change the mode of an existing one to Standard"):
        deploy(cluster, build_inference_service(make_spec(storage_uri=published["v2"], deployment_mode="Standard")),
               timeout_s=10, poll_s=0.2)


def test_webhook_denials_are_not_reported_as_rbac(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    manifest = build_inference_service(make_spec(
        storage_uri=published["v1"], deployment_mode="Standard", autoscaler_class="hpa",
        override={"spec": {"predictor": {"scaleMetric": "rps"}}}))
    with pytest.raises(UserError) as err:
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2)
    assert "RBAC" not in str(err.value)
    assert str(err.value).endswith("denied the request: [rps] is not a supported metric")


def test_unknown_field_is_refused_by_the_schema(kube, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"],
                                                 override={"spec": {"predictor": {"modell": {}}}}))
    with pytest.raises(UserError, match='strict decoding error: unknown field "spec.predictor.modell"'):
        deploy(cluster_for(url), manifest, timeout_s=10, poll_s=0.2, onnx_ir_version=published["ir"])
    assert api.objects == {}  # the dry run refused it: nothing was created


def test_transient_api_errors_are_retried_and_every_call_has_a_timeout(kube, published):
    """An API server that answers 429/503 for a moment (overloaded, restarting) does not fail
    the deploy: each call is retried with backoff."""
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    api.faults = [503, 429, 500, 503]
    result = deploy(cluster_for(url), build_inference_service(make_spec(storage_uri=published["v1"])),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    assert result.created and api.faults == []


def test_an_api_server_that_cannot_be_reached_is_one_line_naming_it():
    import socket

    from kfp_serve.components.kserve.api import KServeCluster, api_client
    from kfp_serve.components.kserve.rollout import deploy

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens here once the socket closes
    cluster = KServeCluster(api_client(host=f"http://127.0.0.1:{port}"), "models", retry_budget_s=2)
    with pytest.raises(InfrastructureError) as err:
        deploy(cluster, build_inference_service(make_spec()), timeout_s=10)
    message = str(err.value)
    assert message.startswith(f"cannot reach the Kubernetes API at http://127.0.0.1:{port}"
                              " (create_self_subject_access_review, ")
    assert "\n" not in message
