"""KServe's Standard-mode canary (``spec.canary``, 0.20+): a canary in its own Deployment beside
the stable predictor, validated at its own Service, promoted without a restart or removed, and
the clusters whose KServe has none (a CRD without the field; a controller that ignores it)."""

import copy

import pytest
from support.kserve import cluster_for, make_spec, validates

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve import canary
from kfp_serve.components.kserve.manifest import build_inference_service

STANDARD = {"deployment_mode": "Standard", "runtime_version": "24.05-py3"}


def _manifest(storage_uri, percent=None, **kwargs):
    return build_inference_service(make_spec(storage_uri=storage_uri, canary_traffic_percent=percent,
                                             **STANDARD, **kwargs))


def _served(api, key=("models", "digits")):
    """(stable Deployment, its server's URL, {canary name: its server's URL}) as the fake holds them."""
    st = api.controller.states[key]
    return (st.service, st.revisions[-1].server.url if st.revisions else None,
            {c: k.revision.server.url for c, k in st.canaries.items() if k.revision})


# -- the plan, as plain data ----------------------------------------------------------------------
def test_a_canary_keeps_the_stable_predictor_and_adds_only_the_new_model():
    current = _manifest("gs://m/digits/v1")
    current["spec"]["predictor"].pop("canaryTrafficPercent", None)
    applied, plan = canary.plan(_manifest("gs://m/digits/v2", 20, max_replicas=3), current)
    assert applied["spec"]["predictor"] == current["spec"]["predictor"]
    [entry] = applied["spec"]["canary"]
    assert entry == plan.entry and entry["trafficPercent"] == 20
    assert entry["predictor"]["model"]["storageUri"] == "gs://m/digits/v2"
    assert set(entry["predictor"]) & {"minReplicas", "maxReplicas", "canaryTrafficPercent"} == set()
    assert len(plan.name) == canary.NAME_LENGTH and plan.name.startswith("c")
    # a promote renames the predictor to the canary's (a new model) with the scaling asked for
    assert plan.promoted["name"] == plan.name and plan.promoted["maxReplicas"] == 3
    assert plan.promoted["model"]["storageUri"] == "gs://m/digits/v2"
    # the same deploy again (a retry) applies the same entry
    assert canary.plan(_manifest("gs://m/digits/v2", 20, max_replicas=3), applied)[1].entry == entry


def test_no_canary_without_a_stable_model_or_with_the_same_model_and_names_carry_over():
    first, plan = canary.plan(_manifest("gs://m/digits/v1", 20), None)
    assert plan is None and "canaryTrafficPercent" not in first["spec"]["predictor"]
    named = copy.deepcopy(first)
    named["spec"]["predictor"]["name"] = "c1234"
    named["spec"]["canary"] = [{"predictor": {"name": "cabcd"}, "trafficPercent": 5}]
    # the model that serves already: no canary, the stable Deployment keeps its name
    same, plan = canary.plan(_manifest("gs://m/digits/v1", 20), named)
    assert plan is None and same["spec"]["predictor"]["name"] == "c1234" and "canary" not in same["spec"]
    # a full rollout keeps the name too (a rename needs a new model) and drops other canaries
    full, plan = canary.plan(_manifest("gs://m/digits/v2"), named)
    assert plan is None and full["spec"]["predictor"]["name"] == "c1234" and "canary" not in full["spec"]
    # a canary is never named as the stable predictor
    _, plan = canary.plan(_manifest("gs://m/digits/v2", 10), named)
    assert plan.name != "c1234"


def test_a_canary_of_the_same_model_is_promoted_under_the_stable_name():
    """KServe's webhook allows a new predictor.name only with a new model."""
    stable = {"model": {"storageUri": "gs://m/v1", "runtimeVersion": "24.05-py3"}, "minReplicas": 2}
    entry = {"predictor": {"model": {"storageUri": "gs://m/v1", "runtimeVersion": "24.08-py3"},
                           "name": "c0001"}, "trafficPercent": 10}
    promoted = canary.promoted(stable, entry, {"minReplicas": 1})
    assert "name" not in promoted and promoted["minReplicas"] == 1
    assert promoted["model"] == {"storageUri": "gs://m/v1", "runtimeVersion": "24.08-py3"}
    assert canary.internal_url("http://digits-predictor.models.svc.cluster.local:81", "digits", None,
                               "c0001") == "http://digits-c0001-predictor.models.svc.cluster.local:81"


# -- against the fake cluster ---------------------------------------------------------------------
def test_standard_canary_validated_on_its_own_service_removed_or_promoted_without_restart(
        kube, published, digits_onnx):
    from kfp_serve.components.kserve.rollout import deploy, promote, rollback

    api, url = kube
    cluster = cluster_for(url)
    first = deploy(cluster, _manifest(published["v1"], 20), timeout_s=120, poll_s=0.2)
    assert first.canary is None and "canary" not in cluster.get("digits")["spec"]  # nothing to canary against
    stable_service, stable_server, _ = _served(api)
    assert stable_service == "digits-predictor"

    result = deploy(cluster, _manifest(published["v2"], 20), timeout_s=120, poll_s=0.2)
    name = result.canary["predictor"]["name"]
    assert result.canary["trafficPercent"] == 20 and not result.created
    assert result.validation_url.startswith(f"http://digits-{name}-predictor.models.svc.cluster.local:")
    validates(result.validation_url, digits_onnx)
    isvc = cluster.get("digits")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == published["v1"]  # the stable one stays
    assert isvc["status"]["canaryStatuses"] == [{"name": name, "ready": True, "trafficPercent": 20}]
    assert _served(api)[:2] == (stable_service, stable_server)  # never restarted
    canary_server = _served(api)[2][name]
    again = deploy(cluster, _manifest(published["v2"], 20), timeout_s=60, poll_s=0.2)  # a retry
    assert again.canary == result.canary and _served(api)[2] == {name: canary_server}

    service = result.record(make_spec(storage_uri=published["v2"], **STANDARD), "digits", {})
    rollback(service, 60, url)
    assert "canary" not in cluster.get("digits")["spec"] and cluster.deployment("digits", name) is None
    assert _served(api) == (stable_service, stable_server, {})
    rollback(service, 60, url)  # a retried rollback: nothing left to do
    with pytest.raises(UserError, match=f"promote refused, nothing changed: .* canary {name}"):
        promote(service, 60, url)

    result = deploy(cluster, _manifest(published["v2"], 20), timeout_s=120, poll_s=0.2)
    canary_server = _served(api)[2][name]
    service = result.record(make_spec(storage_uri=published["v2"], **STANDARD), "digits", {})
    promoted = promote(service, 120, url)
    isvc = cluster.get("digits")
    assert isvc["spec"]["predictor"]["name"] == name and "canary" not in isvc["spec"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == published["v2"]
    # the canary's Deployment is the stable one now, its pods unchanged; the old one is gone
    assert _served(api) == (f"digits-{name}-predictor", canary_server, {})
    assert cluster.deployment("digits", name) is not None and cluster.deployment("digits") is None
    assert promoted.internal_url.startswith(f"http://digits-{name}-predictor.models.svc.cluster.local:")
    validates(promoted.validation_url, digits_onnx)
    promote(service, 60, url)  # a retried promote: nothing to do
    assert _served(api) == (f"digits-{name}-predictor", canary_server, {})

    # the next canary against the promoted one, and a full rollout that keeps the name
    third = deploy(cluster, _manifest(published["v1"], 50), timeout_s=120, poll_s=0.2)
    assert third.canary["predictor"]["name"] not in (name, "")
    full = deploy(cluster, _manifest(published["v1"]), timeout_s=120, poll_s=0.2)
    isvc = cluster.get("digits")
    assert isvc["spec"]["predictor"]["name"] == name and "canary" not in isvc["spec"]
    assert full.canary is None and _served(api)[2] == {}
    validates(full.validation_url, digits_onnx)


def test_a_canary_that_cannot_serve_fails_and_is_removed(kube, published):
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    cluster = cluster_for(url)
    deploy(cluster, _manifest(published["v1"]), timeout_s=120, poll_s=0.2)
    stable = _served(api)[:2]
    with pytest.raises(DeployError, match=r"canary c[0-9a-f]{4} cannot serve: container kserve-container"
                                          r" of pod .* is in CrashLoopBackOff") as caught:
        deploy(cluster, _manifest(published["broken"], 10), timeout_s=60, poll_s=0.2)
    assert caught.value.exit_code == 2
    assert "has been removed (keep_failed=False); the stable predictor serves as before" in caught.value.diagnostics
    assert "INVALID_PROTOBUF" in caught.value.diagnostics  # the canary's container log
    assert "canary" not in cluster.get("digits")["spec"] and _served(api) == (*stable, {})


@pytest.mark.parametrize("crd", ["full", "minimal"])
def test_a_kserve_without_standard_canaries_is_named(tmp_path, published, crd):
    """Before 0.20 the full CRD has no spec.canary (strict field validation refuses it before
    anything changes); the minimal CRD keeps unknown fields, and the controller ignores them."""
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api = FakeKubeApi(runtimes=kserve_runtimes(), standard_canary=False,
                      crd_schema=load_crd_schema() if crd == "full" else None)
    controller = FakeKServeController(api, tmp_path)
    controller.serve = False
    try:
        with FakeServer(api) as server:
            cluster = cluster_for(server.url)
            deploy(cluster, _manifest(published["v1"]), timeout_s=60, poll_s=0.1)
            before = copy.deepcopy(cluster.get("digits")["spec"])
            if crd == "full":
                with pytest.raises(UserError, match="has no spec.canary, so its KServe .before 0.20. has no"
                                                    " Standard-mode canary") as caught:
                    deploy(cluster, _manifest(published["v2"], 10), timeout_s=60, poll_s=0.1)
                assert caught.value.exit_code == 2 and cluster.get("digits")["spec"] == before
            else:
                with pytest.raises(DeployError, match=r"KServe reported nothing of canary c[0-9a-f]{4}.*"
                                                      "KServe before 0.20 ignores spec.canary"):
                    deploy(cluster, _manifest(published["v2"], 10), timeout_s=60, poll_s=0.1,
                           reconcile_grace_s=1)
                assert cluster.get("digits")["spec"] == before  # the ignored canary is taken out again
    finally:
        controller.stop()


def test_the_webhook_refuses_what_kserve_refuses_of_canaries(kube, published):
    """validateCanarySpecs and validatePredictorNameChange, through the fake's webhook."""
    _, url = kube
    cluster = cluster_for(url)
    from kfp_serve.components.kserve.rollout import deploy

    deploy(cluster, _manifest(published["v1"]), timeout_s=120, poll_s=0.2)
    entry = {"predictor": {"name": "c0001", "model": {"name": "kserve-container", "modelFormat": {"name": "triton"},
                                                      "storageUri": published["v2"]}}, "trafficPercent": 10}
    refusals = [
        ({"canary": [{**entry, "predictor": {**entry["predictor"], "maxReplicas": 2}}]},
         'canary "c0001" must not set maxReplicas'),
        ({"canary": [entry, {**entry, "trafficPercent": 95}]}, 'canary predictor.name "c0001" is duplicated'),
        ({"canary": [{**entry, "predictor": {k: v for k, v in entry["predictor"].items() if k != "name"}}]},
         r"canary\[0\] predictor.name is required"),
        ({"predictor": {**cluster.get("digits")["spec"]["predictor"], "name": "c0002"}},
         r"predictor.name change requires a model change"),
    ]
    for change, refused in refusals:
        with pytest.raises(UserError, match=refused):
            cluster.replace_spec("digits", **change)
    knative = build_inference_service(make_spec(name="other", storage_uri=published["v1"]))
    knative["spec"]["canary"] = [entry]
    with pytest.raises(UserError, match="canary is only supported in Standard deployment mode"):
        cluster.apply(knative)
