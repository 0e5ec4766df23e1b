"""GKE presets: accelerators, GPU sharing, Spot, Workload Identity and probes as checked scheduling."""


import pytest
from support.kserve import make_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.manifest import (
    build_inference_service,
)


def _gke(**presets):
    from kfp_serve.components.kserve.gke import GkePresets

    return make_spec(gke=GkePresets(**presets))


@pytest.mark.parametrize(("presets", "selector"), [
    ({"accelerator": "L4"}, {"cloud.google.com/gke-accelerator": "nvidia-l4"}),
    ({"accelerator": "T4", "gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 4},
     {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "cloud.google.com/gke-gpu-sharing-strategy": "time-sharing",
      "cloud.google.com/gke-max-shared-clients-per-gpu": "4"}),
    ({"accelerator": "H100", "gpu_sharing": "mig", "gpu_partition_size": "1g.10gb"},
     {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "cloud.google.com/gke-gpu-partition-size": "1g.10gb"}),
    ({"spot": True}, {"cloud.google.com/gke-spot": "true"}),
    ({"gcp_service_account": "serving@proj.iam.gserviceaccount.com"}, {"iam.gke.io/gke-metadata-server-enabled": "true"}),
])
def test_gke_presets_become_checked_scheduling(presets, selector):
    from fakes.crd_schema import load_crd_schema, schema_errors

    spec = _gke(**presets)
    if "gcp_service_account" in presets:
        spec = make_spec(gke=spec.gke, service_account="serving")
    manifest = build_inference_service(spec)
    predictor = manifest["spec"]["predictor"]
    assert predictor["nodeSelector"] == selector
    if "accelerator" in presets:
        assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    if presets.get("spot"):
        assert predictor["tolerations"] == [{"key": "cloud.google.com/gke-spot", "operator": "Equal",
                                             "value": "true", "effect": "NoSchedule"}]
    assert schema_errors(manifest, load_crd_schema()) == []


def test_large_model_probe_and_knative_progress_deadline():
    manifest = build_inference_service(_gke(model_load_timeout_s=1200))
    probe = manifest["spec"]["predictor"]["model"]["startupProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 1200
    assert manifest["metadata"]["annotations"]["serving.knative.dev/progress-deadline"] == "1260s"
    standard = build_inference_service(make_spec(deployment_mode="Standard", gke=_gke(model_load_timeout_s=1200).gke))
    assert "serving.knative.dev/progress-deadline" not in standard["metadata"]["annotations"]


@pytest.mark.parametrize(("presets", "message"), [
    ({"accelerator": "T4", "gpu_sharing": "mig", "gpu_partition_size": "1g.5gb"}, "T4 GPUs have no multi-instance"),
    ({"accelerator": "A100", "gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 2,
      "gpu_partition_size": "1g.5gb"}, "gpu_partition_size is for gpu_sharing='mig'"),
    ({"accelerator": "A100", "gpu_sharing": "mig", "gpu_partition_size": "1g.10gb"},
     r"'1g.10gb' is not a A100 MIG partition: one of \['1g.5gb'"),
    ({"accelerator": "L4", "gpu_sharing": "time-sharing"}, "max_shared_clients_per_gpu between 2 and 48"),
    ({"gpu_sharing": "time-sharing", "max_shared_clients_per_gpu": 2}, "gpu_sharing needs an accelerator"),
    ({"accelerator": "V100"}, "accelerator 'V100' is not one of"),
    ({"gcp_service_account": "serving@proj.iam.gserviceaccount.com"}, "needs service_account"),
])
def test_gke_preset_combinations_that_cannot_work(presets, message):
    with pytest.raises(UserError, match=message):
        build_inference_service(_gke(**presets))
    with pytest.raises(UserError, match="one shared GPU; gpus is 2"):
        build_inference_service(make_spec(gpus=2, gke=_gke(accelerator="L4", gpu_sharing="time-sharing",
                                                           max_shared_clients_per_gpu=2).gke))
