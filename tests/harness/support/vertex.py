"""What the Vertex AI tests share besides fixtures: a deploy spec with defaults and a target."""

from kfp_serve.components.validate.vertex import VertexTarget
from kfp_serve.components.vertex import api as vertex_api
from kfp_serve.components.vertex.spec import VertexDeploySpec

IMAGE = "us-central1-docker.pkg.dev/my-project/serving/tritonserver:24.09-py3"


def vertex_spec(uri, **overrides) -> VertexDeploySpec:
    fields = dict(project="my-project", location="us-central1", display_name="digits",
                  artifact_uri=uri, content_kind="TritonRepository", model_name="digits",
                  serving_image=IMAGE, endpoint="digits-endpoint")
    fields.update(overrides)
    return VertexDeploySpec(**fields)


def vertex_target(api, result, signature, model_name="digits"):
    base = vertex_api.rest_url("us-central1", result.endpoint, api.url)
    return VertexTarget(base, result.deployed_model_id, result.protocol, model_name, signature)
