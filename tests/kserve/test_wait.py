"""Waiting until an apply serves: new revisions, Deployment rollouts, pods that cannot start, SIGTERM."""

import signal

import pytest
from support import catches_sigterm
from support.kserve import cluster_for, make_spec

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.kserve.manifest import (
    build_inference_service,
)
from kfp_serve.components.kserve.wait import expect_after, wait_ready


def test_a_stale_ready_is_not_taken_for_the_new_revision(kube, published):
    """After a canary and its promotion KServe has updated the Knative Service more often than
    the InferenceService changed, so its observedGeneration (copied from the Knative Service)
    runs ahead: a replace looks 'current' and Ready while the old revision serves. The wait
    keys on the new revision instead."""
    from kfp_serve.components.kserve.rollout import deploy, promote

    api, url = kube
    cluster = cluster_for(url)
    for storage, canary in (("v1", None), ("v2", 50)):
        deploy(cluster, build_inference_service(make_spec(storage_uri=published[storage], canary_traffic_percent=canary)),
               timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    promote(KServeInferenceService(name="digits", namespace="models", model_name="digits", url=""), 60, url)
    api.controller.pause()
    before = cluster.apply(build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3")))
    isvc = cluster.get("digits")
    # the trap: what the old check accepted (generation observed, Ready) is there
    assert isvc["status"]["observedGeneration"] >= isvc["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in isvc["status"]["conditions"]}["Ready"] == "True"
    expect = expect_after(cluster, before, "digits", None)
    with pytest.raises(InfrastructureError, match="not Ready after 1s: .*no new revision yet"):
        wait_ready(cluster, "digits", 1, 0.2, expect)
    api.controller.resume()
    assert wait_ready(cluster, "digits", 120, 0.2, expect).latest_ready_revision == "digits-predictor-00003"


def test_an_unschedulable_pod_gets_a_grace_period(kube, published):
    """With a cluster autoscaler a GPU pod waits for a node: not fatal within the grace."""
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3",
                                                 annotations={"fake.kserve.io/behavior": "unschedulable-for-a-while"}))
    result = deploy(cluster_for(url), manifest, timeout_s=120, poll_s=0.2, unschedulable_grace_s=60)
    assert result.latest_ready_revision == "digits-predictor-00001"


def test_sigterm_stops_waiting_cleanly(kube, published):
    """Pipeline cancellation sends SIGTERM: the wait ends at once with a one-line error."""
    import subprocess
    import sys
    import time

    _, url = kube
    manifest = build_inference_service(make_spec(storage_uri=published["v1"],
                                                 annotations={"fake.kserve.io/behavior": "never-ready"}))
    cluster_for(url).apply(manifest)
    code = ("import sys\n"
            "from kfp_serve.components.kserve.api import KServeCluster, api_client\n"
            "from kfp_serve.components.kserve.wait import wait_ready\n"
            f"cluster = KServeCluster(api_client(host={url!r}), 'models')\n"
            "try:\n    wait_ready(cluster, 'digits', 120, 0.2)\n"
            "except Exception as err:\n    print(err)\n    sys.exit(3)\n")
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # signal only once the waiter catches SIGTERM (its handler is installed around the wait):
    # a fixed sleep races interpreter start-up on a busy machine
    deadline = time.monotonic() + 60
    while not catches_sigterm(waiter.pid) and time.monotonic() < deadline and waiter.poll() is None:
        time.sleep(0.05)
    began = time.monotonic()
    waiter.send_signal(signal.SIGTERM)
    out, _ = waiter.communicate(timeout=20)
    assert waiter.returncode == 3 and time.monotonic() - began < 5
    assert out.startswith("cancelled while waiting for 'digits' (conditions: ")


def test_after_a_failed_load_the_fix_is_waited_for_not_failed_with_the_old_error(kube, published):
    """KServe never says which revision a failure belongs to: until its status names the fix's
    revision as the latest created, the old failure is still there and is not this apply's."""
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    cluster = cluster_for(url)
    with pytest.raises(DeployError, match="ModelLoadFailed"):
        deploy(cluster, build_inference_service(make_spec(storage_uri=published["broken"])),
               timeout_s=60, poll_s=0.2, keep_failed=True, onnx_ir_version=published["ir"])
    assert "modelRevisionName" not in api.objects[("models", "digits")]["status"]["modelStatus"]["lastFailureInfo"]
    api.controller.pause()  # a controller that has not reconciled the fix yet
    before = cluster.apply(build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3")))
    expect = expect_after(cluster, before, "digits", None)
    with pytest.raises(InfrastructureError, match="not Ready after 1s: .*no new revision yet"):
        wait_ready(cluster, "digits", 1, 0.2, expect)  # waited for, not failed with the old error
    api.controller.resume()
    result = wait_ready(cluster, "digits", 120, 0.2, expect)
    assert result.latest_ready_revision == "digits-predictor-00002"
    # KServe keeps the last failure in the status after the fix serves (only a new one replaces it)
    assert api.objects[("models", "digits")]["status"]["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"


def test_a_change_of_labels_or_annotations_rolls_a_revision_that_is_waited_for(kube, published):
    """KServe copies the InferenceService's labels and annotations onto the revision template:
    changing only them makes a new revision, and the deploy waits until it serves."""
    from kfp_serve.components.kserve.rollout import deploy

    _, url = kube
    cluster = cluster_for(url)
    spec = {"storage_uri": published["v1"], "runtime_version": "24.05-py3"}
    deploy(cluster, build_inference_service(make_spec(**spec)), timeout_s=120, poll_s=0.2)
    changed = deploy(cluster, build_inference_service(make_spec(**spec, labels={"team": "vision"})),
                     timeout_s=120, poll_s=0.2)
    assert changed.latest_ready_revision == "digits-predictor-00002"
    again = deploy(cluster, build_inference_service(make_spec(
        **spec, labels={"team": "vision"}, annotations={"autoscaling.knative.dev/min-scale": "1"})),
        timeout_s=120, poll_s=0.2)
    assert again.latest_ready_revision == "digits-predictor-00002"  # not copied: no new revision


def test_a_transient_reconcile_failure_is_waited_out_and_a_lasting_one_is_reported(kube, published):
    """ReconcileFailed is what KServe writes for any error of one reconcile (a conflict, a
    webhook timeout) before it requeues: final only when it lasts."""
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    cluster = cluster_for(url)
    flaky = build_inference_service(make_spec(storage_uri=published["v1"], runtime_version="24.05-py3",
                                              annotations={"fake.kserve.io/behavior": "reconcile-fails-once"}))
    assert deploy(cluster, flaky, timeout_s=120, poll_s=0.2).latest_ready_revision == "digits-predictor-00001"
    assert cluster.delete("digits")
    # a name whose Standard-mode host the ingress reconciler refuses: the builder refuses it
    # first, so the manifest is made by hand here, as another client could
    long_name = "a" * 49
    manifest = build_inference_service(make_spec(storage_uri=published["v1"], deployment_mode="Standard",
                                                 runtime_version="24.05-py3"))
    manifest["metadata"]["name"] = long_name
    with pytest.raises(DeployError, match=r"ReconcileFailed for 1s: .*invalid domain name \"a{49}-predictor-models"
                                          r".*labels of at most 63 characters"):
        deploy(cluster_for(url), manifest, timeout_s=60, poll_s=0.2, reconcile_grace_s=1)
    assert ("models", long_name) not in api.objects  # created by this deploy, so deleted
