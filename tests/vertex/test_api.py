"""The Vertex AI boundary: operations waited for, cancelled and resumed; every error as one line."""

import os
import signal
import threading

import pytest
from support.vertex import vertex_spec

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.vertex import api as vertex_api
from kfp_serve.components.vertex import rollout as vertex


def test_an_operation_that_ends_with_a_quota_error_fails_with_it(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "quota"
    with pytest.raises(UserError) as info:
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    message = str(info.value)
    assert "deploying the model failed" in message and "resource exhausted" in message
    assert "custom_model_serving_cpus" in message and "request more (IAM & Admin > Quotas)" in message


def test_permission_denied_names_the_role(fake_vertex, published_repository):
    fake_vertex.faults["upload"] = "permission"
    with pytest.raises(UserError) as info:
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    assert "uploading the model: Vertex AI answered 403 Permission 'aiplatform.upload' denied" in str(info.value)
    assert "roles/aiplatform.user" in str(info.value)


def test_an_operation_that_never_finishes_times_out_with_its_status(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "hang"
    with pytest.raises(InfrastructureError) as info:
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=1.5, poll_s=0.2)
    assert "deploying the model: operation projects/812345678901/locations/us-central1/endpoints/" in str(info.value)
    assert "not done after 2s: still running; created" in str(info.value)


def test_sigterm_cancels_the_running_operation(fake_vertex, published_repository):
    fake_vertex.faults["deployModel"] = "hang"
    stop = threading.Event()

    def sigterm_once_waiting() -> None:
        """SIGTERM only once the deploy operation exists and the step's handler is installed:
        a timer could fire before, on a busy machine, and kill the whole test run."""
        while not stop.wait(0.05):
            waiting = any("DeployModel" in op["metadata"]["@type"] for op in list(fake_vertex.operations.values()))
            if waiting and callable(signal.getsignal(signal.SIGTERM)):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    killer = threading.Thread(target=sigterm_once_waiting, daemon=True)
    killer.start()
    try:
        with pytest.raises(InfrastructureError, match="cancelled \\(SIGTERM\\)"):
            vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    finally:
        stop.set()
        killer.join(timeout=5)
    deploys = [op for name, op in fake_vertex.operations.items() if "DeployModel" in op["metadata"]["@type"]]
    assert deploys and all(op["error"]["code"] == 1 for op in deploys)  # CANCELLED
    assert fake_vertex.calls.count("cancel_operation") == 1


def test_a_transient_unavailable_answer_is_retried_where_repeating_is_harmless(fake_vertex, published_repository):
    """503 on reads (and on the reads that poll an operation) is retried: asking again cannot
    do anything twice."""
    fake_vertex.faults["list_endpoints"] = "unavailable"
    fake_vertex.faults["get_operation"] = "unavailable"
    result = vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert result.deployed_model_id and fake_vertex.faults == {}
    assert fake_vertex.calls.count("list_endpoints") == 2 and fake_vertex.calls.count("deployModel") == 1


def test_pending_operations_are_found_on_every_page(fake_vertex):
    """A retry resumes an operation an earlier attempt left running, wherever it is listed."""
    resource = "projects/my-project/locations/us-central1/models/digits"
    metadata = {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelOperationMetadata"}
    fake_vertex.extra_operations[resource] = [
        *({"name": f"{resource}/operations/{i}", "done": True, "metadata": metadata} for i in range(3)),
        {"name": f"{resource}/operations/late", "done": False, "metadata": metadata}]
    client = vertex_api.VertexClient("my-project", "us-central1", fake_vertex.url)
    assert client.pending_operations(client.models, resource) == [f"{resource}/operations/late"]


def test_an_operation_of_a_type_this_client_lacks_is_one_line(fake_vertex):
    resource = "projects/my-project/locations/us-central1/models/digits"
    fake_vertex.extra_operations[resource] = [{"name": f"{resource}/operations/1", "done": False, "metadata": {
        "@type": "type.googleapis.com/google.cloud.aiplatform.v1.SomethingNewerOperationMetadata"}}]
    client = vertex_api.VertexClient("my-project", "us-central1", fake_vertex.url)
    with pytest.raises(InfrastructureError) as info:
        client.pending_operations(client.models, resource)
    message = str(info.value)
    assert message.startswith(f"listing operations of {resource}: Vertex AI answered with something")
    assert "upgrade it" in message and "\n" not in message


def test_rate_limits_and_failed_servers_are_told_apart_from_quota():
    from google.api_core import exceptions as gexc

    limited = vertex_api.translate(gexc.TooManyRequests("Quota exceeded for quota metric 'Online prediction"
                                                    " requests' per minute"), "reading the endpoint")
    assert isinstance(limited, InfrastructureError) and "per-minute request limit" in str(limited)
    failed = vertex_api.operation_error("op/1", 9, "Model server never became ready", "deploying the model")
    assert isinstance(failed, UserError) and "Cloud Logging" in str(failed)
    denied = vertex_api.translate(gexc.Forbidden("Permission denied on bucket"), "uploading the model")
    assert "Vertex AI Service Agent" in str(denied)


@pytest.mark.parametrize(("fault", "kind", "says"), [
    ("quota", UserError, "serving quota for that resource is used up in this region: request more"),
    ("stockout", InfrastructureError, "a stockout, not your quota): retry later, pick another region"),
])
def test_a_serving_quota_and_a_stockout_are_told_apart(fake_vertex, published_repository, fault, kind, says):
    """RESOURCE_EXHAUSTED is three different failures with three fixes: the project's serving
    quota, no capacity of the machine in the region, and a per-minute request limit."""
    fake_vertex.faults["deployModel"] = fault
    with pytest.raises(kind) as info:
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    assert "ended with resource exhausted" in str(info.value) and says in str(info.value)


def test_a_call_that_changes_something_is_not_repeated_on_503(fake_vertex, published_repository):
    """503 on deployModel: the request may have been carried out, so it is not sent again (a
    duplicate deploy); the step fails, and a retry of the step resumes (test_rollout)."""
    fake_vertex.faults["deployModel"] = "unavailable"
    with pytest.raises(InfrastructureError, match="deploying the model: Vertex AI answered 503"):
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=60, poll_s=0.2)
    assert fake_vertex.calls.count("deployModel") == 1
