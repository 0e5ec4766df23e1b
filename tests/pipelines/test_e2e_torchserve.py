"""train_to_serve_torchserve end to end under kfp.local: fake-gcs-server, the fake Kubernetes
API whose controller runs a real TorchServe behind KServe's v1 routes, both canary outcomes."""

import pytest
from support import requires

from kfp_serve.pipelines.run_local import run_local

pytestmark = [pytest.mark.e2e, requires("java")]


def test_torchserve_canary_is_promoted_when_valid_and_rolled_back_when_not(tmp_path, cluster_dns):
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(),
                      crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    params = {"namespace": "models", "publish_destination": "gs://torchserve-e2e/models/digits",
              "epochs": 8, "service_name": "digits-ts"}
    try:
        with FakeServer(api) as server:
            params["api_host"] = server.url
            first = run_local("train_to_serve_torchserve", tmp_path / "runs", params, gcs_emulator=True)
            assert first.succeeded, first.error
            assert (first.run_dir / "promote-kserve").is_dir()
            isvc = api.objects[("models", "digits-ts")]
            assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "pytorch"
            assert isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v1"
            report = next(p for p in first.summary_paths if p.parent.name == "validate-endpoint")
            assert "Endpoint validation: PASSED" in report.read_text()
            assert "KServe v1 has no metadata API" in report.read_text()

            impossible = dict(params, endpoint_atol=0.0, endpoint_rtol=0.0)
            second = run_local("train_to_serve_torchserve", tmp_path / "runs", impossible, gcs_emulator=True)
            assert second.succeeded, second.error  # a rollback is a handled outcome
            assert (second.run_dir / "rollback-kserve").is_dir()
            predictor = api.objects[("models", "digits-ts")]["status"]["components"]["predictor"]
            assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [
                ("digits-ts-predictor-00002", 0), ("digits-ts-predictor-00001", 100)]
    finally:
        controller.stop()
