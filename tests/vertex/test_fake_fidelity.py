"""The fake Vertex AI is no kinder than Vertex AI: driven with google-cloud-aiplatform's high-level
SDK (a client nobody here wrote), it answers as Vertex AI does and refuses what Vertex AI refuses
(VERTEX_BEHAVIOUR.md)."""

import pytest
from fakes.http_fake import FakeServer
from fakes.vertex_api import FakeVertexApi, number_of
from google.api_core import exceptions as gexc
from support.vertex import IMAGE


@pytest.fixture
def sdk(tmp_path):
    """The SDK, initialised against a control-plane fake (nothing is served)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    api = FakeVertexApi(tmp_path, op_seconds=0.05, serve=False)
    with FakeServer(api) as server:
        api.url = server.url
        aiplatform.init(project="my-project", location="us-central1", api_endpoint=server.url,
                        credentials=AnonymousCredentials(), api_transport="rest")
        yield aiplatform, api


def test_the_high_level_sdk_uploads_deploys_twice_and_undeploys(sdk):
    aiplatform, _ = sdk
    model = aiplatform.Model.upload(display_name="sdk-model", artifact_uri="gs://models/sdk/v1",
                                    serving_container_image_uri=IMAGE)  # sends versionAliases ["default"]
    # names by project number, whatever the caller wrote; ids are Vertex AI's own
    assert model.resource_name.startswith(f"projects/{number_of('my-project')}/locations/us-central1/models/")
    assert model.version_id == "1" and "default" in model.version_aliases
    endpoint = aiplatform.Endpoint.create(display_name="sdk-endpoint")
    endpoint.deploy(model, machine_type="n1-standard-4", traffic_percentage=100)
    endpoint.deploy(model, machine_type="n1-standard-4", traffic_percentage=20)  # the same version again
    first, second = sorted(endpoint.traffic_split, key=lambda k: -endpoint.traffic_split[k])
    assert endpoint.traffic_split == {first: 80, second: 20} and len(endpoint.list_models()) == 2
    # the API itself refuses to undeploy a model that keeps traffic (the SDK sends a split)
    with pytest.raises(gexc.BadRequest, match="has 80% of the endpoint's traffic"):  # FAILED_PRECONDITION
        endpoint.api_client.undeploy_model(endpoint=endpoint.resource_name, deployed_model_id=first).result()
    endpoint.undeploy(first)  # the SDK rescales the others itself
    assert endpoint.traffic_split == {second: 100}
    endpoint.undeploy(second)  # the last one goes with its traffic
    assert endpoint.traffic_split == {} and endpoint.list_models() == []


@pytest.mark.parametrize(("upload", "deploy", "refused"), [
    ({"serving_container_image_uri": "docker.io/nvidia/tritonserver:24.09-py3"}, {},
     "must be in Artifact Registry or Container Registry"),
    ({"version_aliases": ["Not_OK"]}, {}, r"Invalid version aliases \['Not_OK'\]"),
    ({}, {"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
     "Machine type n1-standard-4 does not support accelerator NVIDIA_L4"),
    ({}, {"machine_type": "g2-standard-8"}, "Machine type g2-standard-8 requires an accelerator"),
    ({}, {"machine_type": "n1-standard-4", "min_replica_count": 0, "max_replica_count": 2},
     "min_replica_count must be at least 1"),
])
def test_what_vertex_ai_refuses_the_fake_refuses(sdk, upload, deploy, refused):
    aiplatform, _ = sdk
    with pytest.raises(gexc.BadRequest, match=refused):
        model = aiplatform.Model.upload(display_name="refused", artifact_uri="gs://models/r/v1",
                                        **{"serving_container_image_uri": IMAGE, **upload})
        aiplatform.Endpoint.create(display_name="refused").deploy(model, **deploy)
