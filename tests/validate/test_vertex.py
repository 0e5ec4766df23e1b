"""Validation through Vertex AI's predict and rawPredict, against the fake Vertex AI that serves
for real: request size limits and Triton's Vertex AI mode."""


import pytest
from fakes.http_fake import FakeServer
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import rollout as vertex


def test_requests_over_the_vertex_size_limit_are_split_and_a_single_one_is_refused():
    import json

    import numpy as np
    from fakes.vertex_api import REQUEST_LIMIT_BYTES

    from kfp_serve.components.signature import TensorSpec
    from kfp_serve.components.validate.vertex import MAX_REQUEST_BYTES

    sizes = []

    def predict(method, path, query, body):  # Vertex AI's predict with its request size limit
        sizes.append(len(json.dumps(body)))
        if sizes[-1] > REQUEST_LIMIT_BYTES:
            return 400, {"error": {"code": 400, "message": "Request payload size exceeds the limit"}}
        return 200, {"predictions": [[sum(row)] for row in body["instances"]], "deployedModelId": "7"}

    signature = ModelSignature(inputs=[TensorSpec("x", "float32", ("batch", 20000))],
                               outputs=[TensorSpec("y", "float32", ("batch", 1))])
    with FakeServer(predict) as server:
        target = VertexTarget(f"{server.url}/v1/projects/p/locations/us-central1/endpoints/e", "7",
                              "vertex-predict", "m", signature)
        x = np.random.default_rng(0).random((16, 20000), dtype=np.float32)
        outputs, problems = target.infer({"x": x})
        assert problems == [] and np.allclose(outputs["y"][:, 0], x.sum(axis=1), rtol=1e-4)
        assert len(sizes) > 1 and max(sizes) <= MAX_REQUEST_BYTES
        with pytest.raises(UserError, match="over Vertex AI's 1.5 MB limit on prediction requests"):
            target.infer({"x": np.random.default_rng(1).random((1, 200000), dtype=np.float32)})
        # a dedicated endpoint (predictions on its own host) takes up to 10 MB: one request
        sizes.clear()
        dedicated = VertexTarget(f"{server.url.replace('127.0.0.1', 'localhost')}/v1/projects/p/"
                                 "locations/us-central1/endpoints/e", "7", "vertex-predict", "m",
                                 signature, api_base=f"{server.url}/v1/projects/p/locations/"
                                 "us-central1/endpoints/e")
        assert dedicated.max_request_bytes == 10_000_000
        with pytest.raises(UserError, match="over Vertex AI's 10.0 MB limit"):
            dedicated.infer({"x": np.random.default_rng(1).random((1, 2_000_000), dtype=np.float32)})


def test_triton_runs_in_its_vertex_mode_and_refuses_a_default_model_it_lacks(fake_vertex, published_repository):
    """The fake runs tritonserver's Vertex AI mode from the container spec Vertex AI receives
    (AIP_* variables, $(AIP_STORAGE_URI) expanded, routes, default model): a default model the
    repository lacks fails the deploy as Triton does, and points to the container's log."""
    with pytest.raises(UserError) as info:
        vertex.deploy(vertex_spec(published_repository, model_name="missing"), fake_vertex.url, timeout_s=60, poll_s=0.2)
    message = str(info.value)
    assert "Expect the default model 'missing' is loaded" in message and "Cloud Logging" in message
