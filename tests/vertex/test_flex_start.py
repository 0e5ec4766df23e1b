"""Flex-start VMs (Dynamic Workload Scheduler): a deployed model Vertex AI undeploys when its
time runs out. Deployed through the v1beta1 API (v1's DedicatedResources has no flexStart), and
never promoted: production on it would vanish with it (VERTEX_BEHAVIOUR.md row 35)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from fakes.http_fake import FakeServer
from fakes.vertex_api import FakeVertexApi
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex import rollout

URI = "gs://models-bucket/digits/v1"


@pytest.fixture
def control_plane(tmp_path):
    """The fake Vertex AI without serving (the deployed models are records only)."""
    api = FakeVertexApi(tmp_path, op_seconds=0.05, serve=False)
    with FakeServer(api) as served:
        api.url = served.url
        yield api


def test_the_flex_start_duration_is_checked_and_sent_as_a_duration():
    body = vertex_spec(URI, flex_start_s=7200).check().deployed_model_body("m@1")
    assert body["dedicatedResources"]["flexStart"] == {"maxRuntimeDuration": "7200s"}
    assert "flexStart" not in vertex_spec(URI).deployed_model_body("m@1")["dedicatedResources"]
    with pytest.raises(UserError, match=r"^flex_start_max_runtime_s=700000: flex-start VMs run for"
                                         r" at most 604800 s \(7 days\)"):
        vertex_spec(URI, flex_start_s=700_000).check()


def test_v1_has_no_flex_start_and_the_fake_says_so_as_vertex_does(control_plane):
    spec = vertex_spec(URI, flex_start_s=3600)
    first = rollout.deploy(vertex_spec(URI), control_plane.url, timeout_s=30, poll_s=0.05)
    request = urllib.request.Request(
        f"{control_plane.url}/v1/{first.endpoint}:deployModel", method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"deployedModel": spec.deployed_model_body(first.version_name),
                         "trafficSplit": {"0": 100}}).encode())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert 'Unknown name "flexStart"' in json.loads(caught.value.read())["error"]["message"]


def test_a_flex_start_canary_is_deployed_through_v1beta1_refused_promotion_and_expires(control_plane):
    control_plane.flex_time_scale = 1 / 3600  # an hour passes in a second
    stable = rollout.deploy(vertex_spec(URI), control_plane.url, timeout_s=30, poll_s=0.05)
    canary = rollout.deploy(vertex_spec("gs://models-bucket/digits/v2", flex_start_s=3600,
                                        traffic_percentage=20), control_plane.url, 30, 0.05)
    endpoint = control_plane.endpoints[canary.endpoint.rsplit("/", 1)[-1]]
    deployed = {d["id"]: d for d in endpoint["deployedModels"]}
    assert deployed[canary.deployed_model_id]["dedicatedResources"]["flexStart"] == {
        "maxRuntimeDuration": "3600s"}
    assert endpoint["trafficSplit"] == {stable.deployed_model_id: 80, canary.deployed_model_id: 20}
    record = canary.endpoint_record(vertex_spec(URI, flex_start_s=3600), control_plane.url, {})
    assert record.flex_start_s == 3600
    with pytest.raises(UserError, match="runs on flex-start VMs, which Vertex AI undeploys 3600 s"):
        rollout.promote(record, True, 30, 0.05)
    assert endpoint["trafficSplit"] == {stable.deployed_model_id: 80, canary.deployed_model_id: 20}
    deadline = time.monotonic() + 10
    while len(endpoint["deployedModels"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    # its time ran out: the stable model serves alone, and a rollback has nothing left to do
    assert [d["id"] for d in endpoint["deployedModels"]] == [stable.deployed_model_id]
    assert endpoint["trafficSplit"] == {stable.deployed_model_id: 100}
    assert rollout.rollback(record, True, 30, 0.05) == {stable.deployed_model_id: 100}


def test_the_next_deploy_reads_the_endpoint_s_operations_after_a_flex_start_one(control_plane):
    """v1 renders what v1beta1 made without the fields it lacks: the next deploy's listing of
    the endpoint's operations parses."""
    rollout.deploy(vertex_spec(URI, flex_start_s=600), control_plane.url, 30, 0.05)
    after = rollout.deploy(vertex_spec("gs://models-bucket/digits/v2", traffic_percentage=10),
                           control_plane.url, 30, 0.05)
    assert sorted(after.traffic.values()) == [10, 90]


def test_a_flex_start_model_may_not_take_all_the_traffic_from_models_that_serve(control_plane):
    stable = rollout.deploy(vertex_spec(URI), control_plane.url, 30, 0.05)
    with pytest.raises(UserError, match="when Vertex AI undeploys it the endpoint would serve nothing"):
        rollout.deploy(vertex_spec("gs://models-bucket/digits/v2", flex_start_s=600),
                       control_plane.url, 30, 0.05)
    endpoint = control_plane.endpoints[stable.endpoint.rsplit("/", 1)[-1]]
    assert endpoint["trafficSplit"] == {stable.deployed_model_id: 100}
