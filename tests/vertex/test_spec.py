"""A Vertex AI deploy checked before any call: regions, machines, accelerators, images, the split."""


import pytest
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.container import LargeModel
from kfp_serve.components.vertex.spec import (
    check_machine,
    check_region,
)


# -- bad input, each a one-line error before any call ------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ({"location": "us-central"}, "location 'us-central' is not a Vertex AI prediction region (did you mean us-central1?)"),
    ({"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
     "machine type 'n1-standard-4' cannot take NVIDIA_L4 on Vertex AI (use g2-standard-<N>)"),
    ({"machine_type": "a2-highgpu-2g", "accelerator_type": "NVIDIA_TESLA_A100", "accelerator_count": 1},
     "a2-highgpu-2g takes 2 x NVIDIA_TESLA_A100, not 1"),
    ({"machine_type": "g2-standard-8"}, "machine type 'g2-standard-8' comes with GPUs"),
    ({"accelerator_count": 2}, "accelerator_count=2 needs an accelerator_type"),
    ({"traffic_percentage": 101}, "traffic_percentage 101 must be between 0 and 100"),
    ({"traffic_percentage": -5}, "traffic_percentage -5 must be between 0 and 100"),
    ({"artifact_uri": "s3://models/digits/v1"}, "artifact URI 's3://models/digits/v1' is not on GCS"),
    ({"artifact_uri": "/tmp/digits/v1"}, "artifact URI '/tmp/digits/v1' is not on GCS"),
    ({"min_replicas": 0}, "Vertex AI endpoints do not scale to zero"),
    ({"serving_image": "nvcr.io/nvidia/tritonserver:24.09-py3"}, "Vertex AI pulls serving images only from"),
    ({"serving_image": ""}, "a Triton repository needs serving_image"),
    ({"project": "My Project"}, "is not a Google Cloud project id"),
    ({"content_kind": "OnnxModel"}, "Vertex AI serves a published TritonRepository, TorchServeArchive or LlmCheckpoint"),
    # the knobs production reaches for (machine_resources.proto, reservation_affinity.proto,
    # endpoint.proto; Compute Engine "Consume reservations": no Spot VMs)
    ({"required_replicas": 3, "min_replicas": 2, "max_replicas": 4},
     "required_replicas=3: a partial deploy needs between 1 and min_replicas (2) ready replicas"),
    ({"reservation": "my-reservation"},
     "reservation 'my-reservation': use 'any', 'none' or the full name projects/PROJECT/zones/ZONE/reservations/NAME"),
    ({"spot": True, "reservation": "any"}, "spot=True cannot consume a reservation"),
    ({"request_count_target": -1}, "request_count_target=-1: requests per minute per replica"),
    ({"request_logging_rate": 1.5}, "request_logging_rate=1.5: a fraction of requests in (0, 1]"),
    ({"request_logging_table": "bq://my-project.logs"}, "request_logging_table needs request_logging_rate > 0"),
    ({"request_logging_rate": 0.1, "request_logging_table": "my-project.logs"},
     "request_logging_table 'my-project.logs': use bq://PROJECT, bq://PROJECT.DATASET or bq://PROJECT.DATASET.TABLE"),
    ({"inference_timeout_s": -5}, "inference_timeout_s=-5: seconds, or 0 for Vertex AI's default"),
    ({"large_model": LargeModel(deployment_timeout_s=9000)},
     "deployment_timeout_s=9000: Vertex AI allows at most 7200 s (2 hours)"),
    ({"large_model": LargeModel(deployment_timeout_s=600, startup_timeout_s=900)},
     "startup_timeout_s=900 outlasts deployment_timeout_s=600: the deploy would give up first"),
    ({"large_model": LargeModel(shared_memory_mb=-1)}, "shared_memory_mb=-1 must be >= 0"),
])
def test_bad_input_is_one_line_before_any_call(overrides, message):
    with pytest.raises(UserError) as info:
        vertex_spec("gs://models-bucket/digits/v1", **overrides).check()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_machine_and_accelerator_combinations_vertex_allows():
    check_machine("n1-standard-8", "NVIDIA_TESLA_T4", 2)
    check_machine("g2-standard-24", "NVIDIA_L4", 2)
    check_machine("a2-highgpu-4g", "NVIDIA_TESLA_A100", 4)
    check_machine("a3-highgpu-8g", "NVIDIA_H100_80GB", 8)
    check_machine("e2-standard-4", "", 0)
    assert check_region("europe-west4") == "europe-west4"
    # regions and GPUs the hand-written lists refused, now from aiplatform's own lists
    for region in ("asia-south2", "europe-west12", "us-east7"):
        assert check_region(region) == region
    for machine, accelerator, count in (("a3-highgpu-1g", "NVIDIA_H100_80GB", 1),
                                        ("a3-highgpu-2g", "NVIDIA_H100_80GB", 2),
                                        ("a3-highgpu-4g", "NVIDIA_H100_80GB", 4),
                                        ("a3-megagpu-8g", "NVIDIA_H100_MEGA_80GB", 8),
                                        ("a3-ultragpu-8g", "NVIDIA_H200_141GB", 8),
                                        ("a4-highgpu-8g", "NVIDIA_B200", 8)):
        check_machine(machine, accelerator, count)


@pytest.mark.parametrize(("machine", "accelerator", "count", "message"), [
    ("n1-standard-16", "NVIDIA_TESLA_V100", 1, "n1-standard-16 takes 2 or 4 or 8 x NVIDIA_TESLA_V100, not 1"),
    ("n1-highmem-96", "NVIDIA_TESLA_P100", 4, "more vCPUs than any count of NVIDIA_TESLA_P100 allows \\(at most 64\\)"),
    ("a3-highgpu-8g", "NVIDIA_H200_141GB", 8, "use a3-ultragpu-8g"),
    ("n1-standard-4", "NVIDIA_TESLA_K80", 1, "is not one Vertex AI serves on"),
])
def test_vcpu_per_gpu_limits_and_families_are_checked_before_any_call(machine, accelerator, count, message):
    with pytest.raises(UserError, match=message):
        check_machine(machine, accelerator, count)


def test_docker_hub_images_are_refused():
    from kfp_serve.components.vertex.container import check_image

    with pytest.raises(UserError, match="only from Artifact Registry .* or Container Registry"):
        check_image("docker.io/pytorch/torchserve:latest")
    assert check_image("us-docker.pkg.dev/p/r/triton:24.05") == "us-docker.pkg.dev/p/r/triton:24.05"


def test_a_large_model_s_container_waits_for_it_and_makes_a_new_version():
    """Startup probe on the server's own health route and port, 10 s apart, enough failures to
    cover the startup timeout; the fields are immutable in a model version, so changing them
    uploads a new version (the key covers the whole container)."""
    plain = vertex_spec("gs://models-bucket/digits/v1")
    large = vertex_spec("gs://models-bucket/digits/v1", large_model=LargeModel(
        deployment_timeout_s=3600, startup_timeout_s=1205, health_period_s=30, shared_memory_mb=2048))
    container = large.check().model_body()["containerSpec"]
    assert container["deploymentTimeout"] == "3600s" and container["sharedMemorySizeMb"] == "2048"
    assert container["startupProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": 8000},
                                         "periodSeconds": 10, "failureThreshold": 121}
    assert container["healthProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": 8000},
                                        "periodSeconds": 30}
    assert "startupProbe" not in plain.model_body()["containerSpec"]
    assert large.key != plain.key
