"""llm_to_serve_kserve end to end under kfp.local: the demo Llama published to fake-gcs-server,
a fake Kubernetes API whose controller runs KServe's vllmserver container with the local vLLM,
the canary validated through the cluster gateway and promoted."""

import json

import pytest

from kfp_serve.pipelines.run_local import run_local

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_environment")]


def test_llm_canary_is_validated_and_promoted_on_kserve(tmp_path, cluster_dns):
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(), crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    params = {"namespace": "models", "publish_destination": "gs://kserve-llm/models/demo-llm",
              "concurrency": [1, 4], "max_model_len": 512}
    try:
        with FakeServer(api) as server:
            params["api_host"] = server.url
            run = run_local("llm_to_serve_kserve", tmp_path / "runs", params, gcs_emulator=True)
            assert run.succeeded, run.error
            assert (run.run_dir / "promote-kserve").is_dir() and not (run.run_dir / "rollback-kserve").exists()
            model = api.objects[("models", "demo-llm")]["spec"]["predictor"]["model"]
            assert model["storageUri"] == "gs://kserve-llm/models/demo-llm/v1"
            assert model["modelFormat"]["name"] == "vLLM" and "--max-model-len=512" in model["args"]
            report = next(p for p in run.summary_paths if p.parent.name == "validate-llm-endpoint")
            assert "# LLM endpoint validation: PASSED" in report.read_text()
            validate = json.loads((run.run_dir / "validate-llm-endpoint" / "executor_output.json").read_text())
            assert validate["parameterValues"]["Output"] is True
    finally:
        controller.stop()
