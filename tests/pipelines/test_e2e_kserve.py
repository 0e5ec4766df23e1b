"""train_to_serve_kserve end to end under kfp.local: fake-gcs-server for storage, a fake
Kubernetes API whose controller serves with local Triton, both canary outcomes."""

import json

import pytest

from kfp_serve.pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def test_canary_is_promoted_when_valid_and_rolled_back_when_not(tmp_path, cluster_dns):
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(),
                      crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    params = {"namespace": "models", "publish_destination": "gs://kserve-e2e/models/digits"}
    try:
        with FakeServer(api) as server:
            params["api_host"] = server.url
            first = run_local("train_to_serve_kserve", tmp_path / "runs", params, gcs_emulator=True)
            assert first.succeeded, first.error
            assert (first.run_dir / "promote-kserve").is_dir()
            assert not (first.run_dir / "rollback-kserve").exists()
            traffic = api.objects[("models", "digits")]["status"]["components"]["predictor"]["traffic"]
            assert [(t["revisionName"], t["percent"], t["latestRevision"]) for t in traffic] == [
                ("digits-predictor-00001", 100, True)]
            # the repository's ONNX IR reached deploy_kserve through the artifacts' metadata
            assert api.objects[("models", "digits")]["spec"]["predictor"]["model"]["runtimeVersion"] == "24.05-py3"

            impossible = dict(params, endpoint_atol=0.0, endpoint_rtol=0.0)
            second = run_local("train_to_serve_kserve", tmp_path / "runs", impossible, gcs_emulator=True)
            assert second.succeeded, second.error  # a rollback is a handled outcome
            assert (second.run_dir / "rollback-kserve").is_dir()
            assert not (second.run_dir / "promote-kserve").exists()
            predictor = api.objects[("models", "digits")]["status"]["components"]["predictor"]
            assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [
                ("digits-predictor-00002", 0), ("digits-predictor-00001", 100)]
            published = json.loads((second.run_dir / "publish-model" / "executor_output.json").read_text())
            assert published["artifacts"]["published"]["artifacts"][0]["uri"] == "gs://kserve-e2e/models/digits/v2"
            report = next(p for p in second.summary_paths if p.parent.name == "validate-endpoint")
            assert "Endpoint validation: FAILED" in report.read_text()
    finally:
        controller.stop()
