"""Endpoint kinds: dedicated endpoints called on their own host, private ones refused."""

import json
import threading

import pytest
from fakes.vertex_api import number_of
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.validation import validate
from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import api as vertex_api
from kfp_serve.components.vertex import rollout as vertex
from kfp_serve.components.vertex.container import LargeModel


def _validates_only_where_recorded(record, result, digits_onnx, refused_elsewhere: str) -> None:
    """Validation passes at the record's predict address, and the public regional host refuses
    the same calls with ``refused_elsewhere``."""
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    target = VertexTarget(record.predict_base, result.deployed_model_id, result.protocol, "digits",
                          signature, api_base=record.api_base)
    checked = validate(target, golden, max_batch_size=16)
    assert checked.passed, checked.failure_line()
    public = VertexTarget(record.api_base, result.deployed_model_id, result.protocol, "digits", signature)
    with pytest.raises(UserError, match=refused_elsewhere):
        validate(public, golden, max_batch_size=16)


def test_dedicated_endpoints_are_called_on_their_own_host_and_private_ones_refused(
        fake_vertex, published_repository, digits_onnx):
    """A dedicated endpoint refuses predictions on the shared regional host (here 127.0.0.1)
    and takes them on its dedicatedEndpointDns (here localhost); a VPC-peered private endpoint
    cannot split traffic: refused in one line."""
    port = fake_vertex.url.rsplit(":", 1)[1]
    parent = f"projects/{number_of('my-project')}/locations/us-central1"
    fake_vertex.endpoints["555"] = {"name": f"{parent}/endpoints/555", "displayName": "dedicated",
                                    "deployedModels": [], "trafficSplit": {}, "dedicatedEndpointEnabled": True,
                                    "dedicatedEndpointDns": f"localhost:{port}"}
    result = vertex.deploy(vertex_spec(published_repository, endpoint="555"), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert result.dedicated_dns == f"localhost:{port}"
    record = result.endpoint_record(vertex_spec(published_repository), fake_vertex.url, {})
    assert record.predict_base == f"http://localhost:{port}/v1/{parent}/endpoints/555"
    _validates_only_where_recorded(record, result, digits_onnx,
                                   "Dedicated endpoint cannot be accessed through the shared domain")

    fake_vertex.endpoints["777"] = {"name": f"{parent}/endpoints/777", "displayName": "private",
                                    "deployedModels": [], "trafficSplit": {},
                                    "network": "projects/123/global/networks/default"}
    with pytest.raises(UserError, match="is a private endpoint on projects/123/global/networks/default"):
        vertex.deploy(vertex_spec(published_repository, endpoint="777"), fake_vertex.url, timeout_s=60, poll_s=0.2)


def test_a_new_dedicated_endpoint_is_read_again_until_its_dns_name_is_assigned(fake_vertex, published_repository):
    """A dedicated endpoint can report its DNS name empty for a while after it is made: the
    deploy reads it again after deploying, so validation never calls the shared host."""
    port = fake_vertex.url.rsplit(":", 1)[1]
    parent = f"projects/{number_of('my-project')}/locations/us-central1"
    endpoint = {"name": f"{parent}/endpoints/556", "displayName": "fresh", "deployedModels": [],
                "trafficSplit": {}, "dedicatedEndpointEnabled": True, "dedicatedEndpointDns": ""}
    fake_vertex.endpoints["556"] = endpoint
    threading.Timer(1.5, endpoint.update, kwargs={"dedicatedEndpointDns": f"localhost:{port}"}).start()
    result = vertex.deploy(vertex_spec(published_repository, endpoint="556"), fake_vertex.url,
                           timeout_s=120, poll_s=0.2)
    assert result.dedicated_dns == f"localhost:{port}"
    record = result.endpoint_record(vertex_spec(published_repository), fake_vertex.url, {})
    assert record.predict_base.startswith(f"http://localhost:{port}/")


def test_a_dedicated_endpoint_with_spot_replicas_logging_and_request_count_autoscaling(
        fake_vertex, published_repository, digits_onnx):
    """The knobs a production team sets in its first week travel in the API's own fields, the
    endpoint is made dedicated and validated on its own host, and each operation waited for is
    reported as it starts (deploy_vertex's gcp_resources)."""
    operations = []
    spec = vertex_spec(published_repository, endpoint="prod-dedicated", dedicated_endpoint=True,
                       inference_timeout_s=120, request_logging_rate=0.25,
                       request_logging_table="bq://my-project.serving_logs", spot=True,
                       min_replicas=2, max_replicas=4, required_replicas=1,
                       request_count_target=600, access_logging=True, container_logging=False,
                       large_model=LargeModel(deployment_timeout_s=3600, startup_timeout_s=600,
                                              shared_memory_mb=1024))
    result = vertex.deploy(spec, fake_vertex.url, timeout_s=120, poll_s=0.2,
                           on_operation=operations.append)
    [endpoint] = [e for e in fake_vertex.endpoints.values() if e["displayName"] == "prod-dedicated"]
    assert endpoint["dedicatedEndpointEnabled"] and result.dedicated_dns == endpoint["dedicatedEndpointDns"]
    assert endpoint["clientConnectionConfig"] == {"inferenceTimeout": "120s"}
    assert endpoint["predictRequestResponseLoggingConfig"] == {
        "enabled": True, "samplingRate": 0.25,
        "bigqueryDestination": {"outputUri": "bq://my-project.serving_logs"}}
    [deployed] = endpoint["deployedModels"]
    resources = deployed["dedicatedResources"]
    assert resources["spot"] is True and resources["requiredReplicaCount"] == 1
    assert {"metricName": "aiplatform.googleapis.com/prediction/online/request_count",
            "target": 600} in resources["autoscalingMetricSpecs"]
    assert deployed["enableAccessLogging"] is True and deployed["disableContainerLogging"] is True
    [version] = fake_vertex.models[result.model.rsplit("/", 1)[-1]]
    assert version["containerSpec"]["startupProbe"]["failureThreshold"] == 60
    assert [op.rsplit("/", 3)[-3] for op in operations][-1] == endpoint["name"].rsplit("/", 1)[-1]
    assert json.loads(vertex_api.gcp_resources("us-central1", operations[-1:], fake_vertex.url)) == {
        "resources": [{"resourceType": "VertexLro", "resourceUri": f"{fake_vertex.url}/v1/{operations[-1]}"}]}
    record = result.endpoint_record(spec, fake_vertex.url, {})
    target = VertexTarget(record.predict_base, result.deployed_model_id, result.protocol, "digits",
                          ModelSignature.load(digits_onnx), api_base=record.api_base)
    checked = validate(target, GoldenSet.load(digits_onnx), max_batch_size=16)
    assert checked.passed, checked.failure_line()

    # a dedicated endpoint takes bodies up to 10 MB (a shared one 1.5 MB)
    endpoint_id = endpoint["name"].rsplit("/", 1)[-1]
    status, answer = fake_vertex._forward({"id": endpoint_id}, {"pad": "x" * 11_000_000}, raw=True)
    assert status == 400 and "exceeds the limit: 10485760 bytes" in answer["error"]["message"]
    status, answer, _ = fake_vertex._forward({"id": endpoint_id}, {"pad": "x" * 2_000_000}, raw=True)
    assert "exceeds the limit" not in json.dumps(answer)  # past the check: Triton's own answer

    # the same endpoint again: the logging rate changes in place; its kind cannot
    vertex.deploy(vertex_spec(published_repository, endpoint="prod-dedicated", dedicated_endpoint=True,
                              request_logging_rate=0.5), fake_vertex.url, timeout_s=120, poll_s=0.2)
    assert endpoint["predictRequestResponseLoggingConfig"]["samplingRate"] == 0.5
    vertex.deploy(vertex_spec(published_repository, endpoint="shared-one"), fake_vertex.url, 120, 0.2)
    with pytest.raises(UserError, match=r"is a shared endpoint and this deploy needs a dedicated one"
                                        r" \(dedicated_endpoint=True, or an LLM's invoke routes\); an"
                                        r" endpoint's kind is set when it is made"):
        vertex.deploy(vertex_spec(published_repository, endpoint="shared-one", dedicated_endpoint=True),
                      fake_vertex.url, 120, 0.2)


def test_what_vertex_ai_refuses_in_capacity_and_logging_the_fake_refuses(fake_vertex):
    """Rows 26-27 of VERTEX_BEHAVIOUR.md, straight at the fake's HTTP boundary."""
    from fakes.vertex_api import _container_problem, _deployment_problem, _endpoint_problem

    base = {"dedicatedResources": {"machineSpec": {"machineType": "n1-standard-4"},
                                   "minReplicaCount": 1, "maxReplicaCount": 2}}
    def with_(**resources):
        return {"dedicatedResources": {**base["dedicatedResources"], **resources}}

    assert _deployment_problem(base) == ""
    assert "required_replica_count (2) must not exceed" in _deployment_problem(with_(requiredReplicaCount=2))
    metric = {"metricName": "aiplatform.googleapis.com/prediction/online/request_count", "target": 60}
    assert "at most one entry per supported metric" in _deployment_problem(
        with_(autoscalingMetricSpecs=[metric, metric]))
    assert "at most one entry per supported metric" in _deployment_problem(
        with_(autoscalingMetricSpecs=[{"metricName": "qps", "target": 5}]))
    spot_reserved = with_(spot=True, machineSpec={"machineType": "n1-standard-4", "reservationAffinity": {
        "reservationAffinityType": "ANY_RESERVATION"}})
    assert _deployment_problem(spot_reserved) == "Spot VMs cannot consume a reservation"
    assert "needs key and values" in _deployment_problem(with_(machineSpec={
        "machineType": "n1-standard-4", "reservationAffinity": {"reservationAffinityType": "SPECIFIC_RESERVATION"}}))
    assert "the limit for deployment timeout is 2 hours" in _container_problem({"deploymentTimeout": "7201s"})
    assert "exactly one of exec, http_get" in _container_problem({"startupProbe": {"periodSeconds": 10}})
    assert "failureThreshold must be at least 1" in _container_problem(
        {"startupProbe": {"httpGet": {"path": "/", "port": 1}, "failureThreshold": 0}})
    logging = {"enabled": True, "samplingRate": 0, "bigqueryDestination": {"outputUri": "bq://p"}}
    assert "sampling_rate 0.0 is not in (0, 1]" in _endpoint_problem(
        {"predictRequestResponseLoggingConfig": logging})
    assert "is not bq://project" in _endpoint_problem({"predictRequestResponseLoggingConfig": {
        **logging, "samplingRate": 0.5, "bigqueryDestination": {"outputUri": "gs://bucket"}}})


def test_replicas_change_in_place_without_a_redeploy(fake_vertex, published_repository):
    """MutateDeployedModel: same deployed model id, same traffic, new counts; what cannot be
    mutated is refused by the fake as by Vertex AI (row 29)."""
    from kfp_serve.components.vertex.scaling import scale

    first = vertex.deploy(vertex_spec(published_repository, endpoint="scaled"), fake_vertex.url,
                          timeout_s=120, poll_s=0.2)
    endpoint_id = first.endpoint.rsplit("/", 1)[-1]
    before = dict(fake_vertex.endpoints[endpoint_id]["trafficSplit"])
    replicas = scale("my-project", "us-central1", first.endpoint, first.deployed_model_id, 2, 6,
                     fake_vertex.url, timeout_s=60, poll_s=0.2)
    assert replicas == {"min_replicas": 2, "max_replicas": 6}
    [deployed] = fake_vertex.endpoints[endpoint_id]["deployedModels"]
    assert deployed["id"] == first.deployed_model_id and fake_vertex.endpoints[endpoint_id]["trafficSplit"] == before
    with pytest.raises(UserError, match=r"need 1 <= min_replicas \(3\) <= max_replicas \(2\)"):
        scale("my-project", "us-central1", first.endpoint, first.deployed_model_id, 3, 2, fake_vertex.url)
    with pytest.raises(UserError, match="deployed model 42 is not on .*; nothing to scale"):
        scale("my-project", "us-central1", first.endpoint, "42", 1, 2, fake_vertex.url)
    status, answer = fake_vertex._mutateDeployedModel({"id": endpoint_id}, {}, {
        "deployedModel": {"id": first.deployed_model_id, "serviceAccount": "x@y"},
        "updateMask": "serviceAccount"})
    assert status == 400 and "can be mutated" in answer["error"]["message"]


def test_a_version_already_in_the_model_registry_is_deployed_by_its_alias(
        fake_vertex, published_repository, digits_onnx):
    """registry_model: no upload; the version the alias names is deployed, and the served model
    name comes from its container (Triton's --vertex-ai-default-model), so validation calls it."""
    first = vertex.deploy(vertex_spec(published_repository, endpoint="staging",
                                      version_aliases=["champion"]), fake_vertex.url, 120, 0.2)
    model_id = first.model.rsplit("/", 1)[-1]
    spec = vertex_spec("", endpoint="prod-from-registry", model_name="",
                       registry_model=f"{model_id}@champion")
    result = vertex.deploy(spec, fake_vertex.url, 120, 0.2)
    assert result.version_name == first.version_name and result.protocol == "vertex-raw"
    assert len(fake_vertex.models[model_id]) == 1  # nothing was uploaded
    record = result.endpoint_record(spec, fake_vertex.url, {})
    assert record.model_name == "digits"
    target = VertexTarget(record.predict_base, result.deployed_model_id, result.protocol,
                          record.model_name, ModelSignature.load(digits_onnx), api_base=record.api_base)
    checked = validate(target, GoldenSet.load(digits_onnx), max_batch_size=16)
    assert checked.passed, checked.failure_line()
    with pytest.raises(UserError, match=rf"models/{model_id}@nobody is not in the Model Registry"):
        vertex.deploy(vertex_spec("", registry_model=f"{model_id}@nobody"), fake_vertex.url, 60, 0.2)
    with pytest.raises(UserError, match="give either a published model or registry_model, not both"):
        vertex_spec(published_repository, registry_model=f"{model_id}@champion").check()
    with pytest.raises(UserError, match="registry_model 'models/x@Champion!'"):
        vertex_spec("", registry_model="models/x@Champion!").check()



def test_a_private_service_connect_endpoint_is_validated_at_its_forwarding_rule(
        fake_vertex, published_repository, digits_onnx):
    """A PSC endpoint takes predictions only through the forwarding rule in the user's network
    (here localhost on the fake's port): without psc_address the deploy says so in one line."""
    port = fake_vertex.url.rsplit(":", 1)[1]
    parent = f"projects/{number_of('my-project')}/locations/us-central1"
    fake_vertex.endpoints["888"] = {"name": f"{parent}/endpoints/888", "displayName": "psc",
                                    "deployedModels": [], "trafficSplit": {},
                                    "privateServiceConnectConfig": {"enablePrivateServiceConnect": True,
                                                                    "projectAllowlist": ["my-project"]}}
    fake_vertex.psc_addresses["888"] = f"localhost:{port}"
    with pytest.raises(UserError, match="is a Private Service Connect endpoint: predictions reach it"
                                        " only through its forwarding rule in your network; give psc_address"):
        vertex.deploy(vertex_spec(published_repository, endpoint="888"), fake_vertex.url, 60, 0.2)
    spec = vertex_spec(published_repository, endpoint="888", psc_address=f"localhost:{port}")
    result = vertex.deploy(spec, fake_vertex.url, timeout_s=120, poll_s=0.2)
    record = result.endpoint_record(spec, fake_vertex.url, {})
    assert record.predict_base == f"http://localhost:{port}/v1/{parent}/endpoints/888"
    _validates_only_where_recorded(record, result, digits_onnx,
                                   "Private Service Connect endpoint: send predictions through")
    with pytest.raises(UserError, match="psc_address is for Private Service Connect endpoints"):
        vertex.deploy(vertex_spec(published_repository, endpoint="shared-psc-test",
                                  psc_address="10.0.0.5"), fake_vertex.url, 60, 0.2)
