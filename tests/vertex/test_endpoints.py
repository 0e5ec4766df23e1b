"""Endpoint kinds: dedicated endpoints called on their own host, private ones refused."""

import threading

import pytest
from fakes.vertex_api import number_of
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.validation import validate
from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import rollout as vertex


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
    signature = ModelSignature.load(digits_onnx)
    target = VertexTarget(record.predict_base, result.deployed_model_id, result.protocol, "digits",
                          signature, api_base=record.api_base)
    checked = validate(target, GoldenSet.load(digits_onnx), max_batch_size=16)
    assert checked.passed, checked.failure_line()
    shared = VertexTarget(record.api_base, result.deployed_model_id, result.protocol, "digits", signature)
    with pytest.raises(UserError, match="Dedicated endpoint cannot be accessed through the shared domain"):
        validate(shared, GoldenSet.load(digits_onnx), max_batch_size=16)

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
