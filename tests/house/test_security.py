"""Where credentials go, and what the suite leaves readable: each a reproduction of a review
finding (issue "Integrity and security")."""

from __future__ import annotations

import os
import re
import stat

import pytest

from kfp_serve.components.credentials import check_bearer_target, google_credentials_for
from kfp_serve.components.errors import UserError


@pytest.mark.parametrize(("url", "gets"), [
    ("https://us-central1-aiplatform.googleapis.com/v1/projects/p/endpoints/1", True),
    ("us-central1-aiplatform.googleapis.com", True),
    ("https://1234.us-central1-567.prediction.vertexai.goog/v1/projects/p/endpoints/1", True),
    ("http://127.0.0.1:8080/v1/projects/p/endpoints/1", False),
    ("http://localhost:9000", False),
])
def test_google_credentials_go_to_google_hosts_and_never_to_emulators(url, gets):
    assert google_credentials_for(url) is gets


@pytest.mark.parametrize("url", [
    "https://attacker.example.com/v1/projects/p/endpoints/1",
    "https://googleapis.com.attacker.example/v1",  # a lookalike suffix
    "http://10.0.0.5:8080/v1/projects/p/endpoints/1",  # plain http off this machine
    "http://us-central1-aiplatform.googleapis.com",  # Google, but not over TLS
])
def test_any_other_host_is_refused_before_a_token_is_fetched(url):
    with pytest.raises(UserError, match="refusing to send Google credentials to"):
        google_credentials_for(url)


def test_the_validator_and_the_vertex_client_refuse_a_foreign_api_endpoint():
    from kfp_serve.components.validate.vertex import access_token
    from kfp_serve.components.vertex.api import VertexClient

    with pytest.raises(UserError, match="refusing to send Google credentials to 'https://evil.example"):
        access_token("https://evil.example/v1/projects/p/locations/l/endpoints/1")
    with pytest.raises(UserError, match="refusing to send Google credentials to 'evil.example:443'"):
        VertexClient("p", "us-central1", api_endpoint="evil.example:443")


def test_a_bearer_token_never_travels_over_plain_http_to_another_machine():
    check_bearer_target("https://kubeflow.example.com/pipeline")
    check_bearer_target("http://127.0.0.1:8888")
    with pytest.raises(UserError, match="refusing to send a bearer token over plain http to"
                                        " 'kubeflow.example.com'"):
        check_bearer_target("http://kubeflow.example.com/pipeline")


def test_submit_refuses_a_token_over_plain_http_before_compiling(monkeypatch, capsys):
    from kfp_serve.pipelines.cli import main

    monkeypatch.setenv("KFP_SERVE_KFP_TOKEN", "secret")
    code = main(["submit", "train_to_serve_local", "--host", "http://kubeflow.example.com"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: refusing to send a bearer token over plain http")


def test_the_podman_configuration_is_private_not_a_predictable_tmp_file():
    from kfp_serve.pipelines.image_build import containers_conf

    path = containers_conf()
    assert path.parent.name.startswith("kfp-serve-podman-conf-") and path.parent.name != "kfp-serve-podman-conf-"
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.read_text().startswith("[containers]")


@pytest.mark.parametrize(("override", "path"), [
    ({"spec": {"predictor": {"serviceAccountName": "cluster-admin-sa"}}}, "spec.predictor.serviceAccountName"),
    ({"spec": {"predictor": {"hostNetwork": True}}}, "spec.predictor.hostNetwork"),
    ({"spec": {"predictor": {"model": {"securityContext": {"privileged": True}}}}},
     "spec.predictor.model.securityContext.privileged"),
    ({"spec": {"predictor": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}},
     "spec.predictor.volumes[0].hostPath"),
])
def test_an_override_may_not_change_the_pods_identity_or_privileges(override, path):
    """deploy_kserve's override is a pipeline parameter: without this check anyone who can
    start a run could create pods as any service account, or with the node's privileges."""
    from kfp_serve.components.kserve.manifest import InferenceServiceSpec, build_inference_service

    spec = dict(name="digits", namespace="models", storage_uri="gs://b/m/v1", override=override)
    with pytest.raises(UserError, match=rf"the override sets \['{re.escape(path)}'\], which change the"
                                        " identity or privileges of the serving pod"):
        build_inference_service(InferenceServiceSpec(**spec))
    allowed = build_inference_service(InferenceServiceSpec(**spec, override_allowed=(path,)))
    assert allowed["spec"]["predictor"]  # named on purpose: merged


def test_the_rbac_grants_only_the_verbs_the_code_uses():
    import yaml
    from support import REPO_ROOT

    docs = list(yaml.safe_load_all((REPO_ROOT / "rbac" / "kfp-serve-kserve.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    verbs = {tuple(r["resources"]): sorted(r["verbs"]) for r in role["rules"]}
    assert verbs == {("inferenceservices",): ["create", "delete", "get", "patch", "update"],
                     ("servingruntimes",): ["list"], ("deployments",): ["get"], ("pods", "events"): ["list"],
                     ("networkpolicies",): ["create", "get", "update"], ("serviceaccounts",): ["get"],
                     ("pods/log",): ["get"], ("services",): ["create", "get", "update"],
                     ("podmonitorings", "servicemonitors"): ["create", "get", "update"]}
    # the optional read of KServe's own configuration: one object, get only
    [config_read] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "kserve"]
    assert config_read["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                     "resourceNames": ["inferenceservice-config"], "verbs": ["get"]}]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "PIPELINE_NAMESPACE"}]
