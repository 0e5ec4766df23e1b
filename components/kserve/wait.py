"""Wait until an apply serves: the InferenceService Ready with what the apply asked for (a new
revision and its traffic share, or the predictor Deployment's rollout), failing at once on
terminal states and on pods that cannot start."""

from __future__ import annotations

import time

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.kserve.api import KServeCluster
from kfp_serve.components.kserve.canary import service_name
from kfp_serve.components.kserve.readiness import (
    RECONCILE_FAILED,
    Expectation,
    KServeDeployment,
    canary_progress,
    condition,
    deployed,
    expectation,
    knative_progress,
    rollout_failure,
    rollout_progress,
    summary,
    terminal_failure,
)
from kfp_serve.components.polling import poll

INFRA_WAITING_REASONS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")


def expect_after(cluster: KServeCluster, before: dict | None, name: str,
                 generation_before: int | None) -> Expectation:
    """What the wait must see after an apply that found ``before`` (and, in Standard mode,
    the predictor Deployment at ``generation_before``)."""
    after = cluster.get(name)
    if after is None:
        raise InfrastructureError(f"InferenceService {name!r} disappeared after the apply")
    return expectation(before, after, generation_before)


def wait_ready(cluster: KServeCluster, name: str, timeout_s: float, poll_s: float = 2.0,
               expect: Expectation | None = None, unschedulable_grace_s: float = 0.0,
               reconcile_grace_s: float = 60.0) -> KServeDeployment:
    """Poll until the InferenceService serves what ``expect`` describes (by default: what
    it holds now, nothing new) and is Ready; fail at once on InvalidSpec, a failed model load
    of this apply or an image that cannot be pulled; fail on ReconcileFailed that lasts
    ``reconcile_grace_s`` (KServe retries a transient one) and on a pod still unschedulable
    after ``unschedulable_grace_s`` (a cluster autoscaler may be adding a node). SIGTERM
    (pipeline cancellation) stops the wait with an InfrastructureError.
    """
    unschedulable_since: float | None = None
    reconcile_failing_since: float | None = None
    canary_unreported_since: float | None = None

    def check() -> tuple[KServeDeployment | None, str]:
        nonlocal unschedulable_since, reconcile_failing_since, canary_unreported_since
        isvc = cluster.get(name)
        if isvc is None:
            raise InfrastructureError(f"InferenceService {name!r} disappeared while waiting")
        status = isvc.get("status", {})
        wait_for = expect or expectation(isvc, isvc)
        deployment = None
        if wait_for.mode == "Standard":
            deployment = cluster.deployment(name, (isvc.get("spec", {}).get("predictor") or {}).get("name"))
            missing = rollout_progress(deployment, wait_for)
            if wait_for.canary or wait_for.canary_removed:
                own = cluster.deployment(name, wait_for.canary) if wait_for.canary else None
                missing = missing or canary_progress(isvc, own, wait_for)
            # the controller has updated the Deployment for this apply
            reconciled = deployment is not None and (
                not wait_for.new_rollout or deployment["metadata"].get("generation")
                != wait_for.deployment_generation_before)
            failure = rollout_failure(deployment) if reconciled else ""
        else:
            missing, reconciled, failure = knative_progress(status, wait_for), True, ""
        if condition(status, "Ready").get("status") == "True" and not missing:
            return deployed(isvc, wait_for), "Ready"
        if wait_for.canary:
            failure = failure or _canary_crashing(cluster, name, wait_for.canary)
            # KServe before 0.20 (with a CRD that keeps unknown fields) ignores spec.canary
            unreported = (condition(status, "Ready").get("status") == "True"
                          and not status.get("canaryStatuses")
                          and not condition(status, "CanaryPredictorReady"))
            canary_unreported_since = (canary_unreported_since or time.monotonic()) if unreported else None
            if unreported and time.monotonic() - canary_unreported_since >= reconcile_grace_s:
                raise UserError(
                    f"InferenceService {name!r}: KServe reported nothing of canary {wait_for.canary}"
                    f" (status.canaryStatuses, CanaryPredictorReady) for {reconcile_grace_s:.0f}s"
                    " while the stable predictor is Ready: KServe before 0.20 ignores spec.canary;"
                    " upgrade KServe, or deploy with canary_traffic_percent=100")
        failure = failure or terminal_failure(status, wait_for, reconciled)
        if failure:
            raise UserError(f"InferenceService {name!r} failed: {failure}")
        ready = condition(status, "PredictorReady") or condition(status, "Ready")
        if ready.get("status") == "False" and ready.get("reason") == RECONCILE_FAILED:
            reconcile_failing_since = reconcile_failing_since or time.monotonic()
            if time.monotonic() - reconcile_failing_since >= reconcile_grace_s:
                raise UserError(f"InferenceService {name!r} failed: {RECONCILE_FAILED} for"
                                f" {reconcile_grace_s:.0f}s: {ready.get('message', '')}")
        else:
            reconcile_failing_since = None
        infra, unschedulable = _pod_infrastructure_failure(cluster, name)
        if unschedulable and unschedulable_since is None:
            unschedulable_since = time.monotonic()
        elif not unschedulable:
            unschedulable_since = None
        if infra and (not unschedulable
                      or time.monotonic() - unschedulable_since >= unschedulable_grace_s):
            surge = (wait_for.mode == "Standard" and wait_for.new_rollout and unschedulable
                     and deployment is not None and deployment.get("status", {}).get("replicas", 0)
                     > deployment.get("spec", {}).get("replicas", 1)
                     and deployment.get("spec", {}).get("strategy", {}).get("type") != "Recreate")
            raise InfrastructureError(
                f"InferenceService {name!r} cannot start: {infra}"
                + (f" (for {unschedulable_grace_s:.0f}s)" if unschedulable and unschedulable_grace_s else "")
                + ("; a rolling update starts the new pod before it stops the old one, which needs"
                   " a spare GPU: use rollout_strategy='Recreate' (a short outage) or add a node"
                   if surge else ""))
        return None, summary(status) + (f"; {missing}" if missing else "")

    def cancelled(state: str) -> InfrastructureError:
        return InfrastructureError(f"cancelled while waiting for {name!r} ({state})")

    return poll(check, timeout_s, f"InferenceService {name!r} not Ready", interval_s=poll_s,
                on_cancel=cancelled)


def _canary_crashing(cluster: KServeCluster, name: str, canary: str) -> str:
    """Why the canary's pods cannot serve ('' if they may yet): a container in
    CrashLoopBackOff. KServe's modelStatus follows the stable predictor's pods only
    (components/predictor.go), so the canary's own pods are what tells."""
    app = f"isvc.{service_name(name, canary)}"
    for pod in cluster.pods(name):
        if (pod.metadata.labels or {}).get("app") != app:
            continue
        for container in [*(pod.status.init_container_statuses or []),
                          *(pod.status.container_statuses or [])]:
            waiting = container.state.waiting if container.state else None
            if waiting and waiting.reason == "CrashLoopBackOff":
                last = container.last_state.terminated if container.last_state else None
                why = f": {last.message or last.reason}" if last and (last.message or last.reason) else ""
                return (f"canary {canary} cannot serve: container {container.name} of pod"
                        f" {pod.metadata.name} is in CrashLoopBackOff after"
                        f" {container.restart_count} restarts{why} (its log is in the diagnostics)")
    return ""


def _pod_infrastructure_failure(cluster: KServeCluster, name: str) -> tuple[str, bool]:
    """(why a predictor pod cannot start, whether that is only 'unschedulable')."""
    for pod in cluster.pods(name):
        for container in [*(pod.status.init_container_statuses or []),
                          *(pod.status.container_statuses or [])]:
            waiting = container.state.waiting if container.state else None
            if waiting and waiting.reason in INFRA_WAITING_REASONS:
                return f"container {container.name} is {waiting.reason}: {waiting.message}", False
        for pod_condition in pod.status.conditions or []:
            if pod_condition.type == "PodScheduled" and pod_condition.reason == "Unschedulable":
                return f"pod {pod.metadata.name} is unschedulable: {pod_condition.message}", True
    return "", False
