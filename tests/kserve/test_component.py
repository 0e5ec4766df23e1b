"""The KServe components as a task calls them: deploy, validate, roll back; a failure's diagnostics."""


import pytest
from support.kserve import artifact, published_artifact

from kfp_serve.components import artifacts
from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature


def test_components_deploy_validate_and_roll_back(kube, published, digits_onnx, tmp_path):
    """The KFP wrappers themselves, called as a task would call them."""
    from kfp import dsl

    from kfp_serve.components import delete_kserve, deploy_kserve, rollback_kserve, validate_endpoint

    api, url = kube
    model = published_artifact(published["v1"], digits_onnx, published["ir"])
    isvc = artifact("inference_service", str(tmp_path / "isvc"))
    report = artifact("report", str(tmp_path / "report.md"))
    outputs = deploy_kserve.python_func(model=model, inference_service=isvc, report=report,
                                        name="digits", namespace="models", api_host=url,
                                        ready_timeout_s=120)
    assert outputs.url == isvc.metadata["url"] and isvc.metadata["model_name"] == "digits"
    assert "Ready" in (tmp_path / "report.md").read_text()
    onnx = artifact("onnx_model", str(digits_onnx), artifacts.OnnxModel(ModelSignature.load(digits_onnx)))
    passed = validate_endpoint.python_func(
        endpoint=isvc, model=onnx, metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / "m")),
        report=dsl.Markdown(name="report", uri=str(tmp_path / "v.md")),
        html_report=dsl.HTML(name="html", uri=str(tmp_path / "v.html")),
        load_seconds=0.3, concurrency=[1, 2], max_error_rate=0.0)
    assert passed is True
    assert "<svg" in (tmp_path / "v.html").read_text()
    second = published_artifact(published["v2"], digits_onnx, published["ir"])
    deploy_kserve.python_func(model=second, inference_service=isvc, report=report, name="digits",
                              namespace="models", api_host=url, canary_traffic_percent=25,
                              ready_timeout_s=120)
    assert [t["percent"] for t in isvc.metadata["traffic"]] == [25, 75]
    assert isvc.metadata["validation_url"].startswith("http://latest-digits-predictor.models.svc.cluster.local:")
    assert rollback_kserve.python_func(inference_service=isvc, api_host=url) == outputs.url
    assert delete_kserve.python_func(name="digits", namespace="models", api_host=url) is True
    assert api.objects == {}


def test_component_failure_prints_diagnostics_and_raises_the_cause(kube, published, tmp_path, capsys):
    from kfp_serve.components import deploy_kserve

    _, url = kube
    model = published_artifact(published["broken"], None, published["ir"])
    with pytest.raises(UserError, match="ModelLoadFailed in kserve-container"):
        deploy_kserve.python_func(model=model, inference_service=artifact("x", str(tmp_path / "i")),
                                  report=artifact("Markdown", str(tmp_path / "r")), name="digits",
                                  namespace="models", api_host=url, ready_timeout_s=60)
    assert "# InferenceService `models/digits`: diagnostics" in capsys.readouterr().out


def test_the_component_deploys_an_oci_image_by_its_uri(kube, digits_repository, published, tmp_path):
    """storage_uri instead of a published model: the record names the served model as given."""
    import json

    from kfp_serve.components import deploy_kserve

    api, url = kube
    api.images["registry.example.com/models/digits:v1"] = digits_repository
    api.config_maps[("kserve", "inferenceservice-config")] = {"data": {"storageInitializer": json.dumps(
        {"image": "kserve/storage-initializer:v0.20.0", "enableModelcar": True})}}
    isvc = artifact("inference_service", str(tmp_path / "isvc"))
    report = artifact("report", str(tmp_path / "report.md"))
    common = dict(inference_service=isvc, report=report, name="digits", namespace="models",
                  api_host=url, ready_timeout_s=120, runtime_version="24.05-py3")
    with pytest.raises(UserError, match="needs model_format .* and served_model_name"):
        deploy_kserve.python_func(storage_uri="oci://registry.example.com/models/digits:v1", **common)
    with pytest.raises(UserError, match="needs exactly one of model .* and storage_uri"):
        deploy_kserve.python_func(**common)
    deploy_kserve.python_func(storage_uri="oci://registry.example.com/models/digits:v1",
                              model_format="triton", served_model_name="digits", **common)
    assert isvc.metadata["model_name"] == "digits"
    assert isvc.metadata["storage_uri"] == "oci://registry.example.com/models/digits:v1"
