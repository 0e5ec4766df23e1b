"""Deploy, promote and roll back an InferenceService: preflight, apply, wait, and on failure a
diagnostics report (and the clean-up of what this deploy created)."""

from __future__ import annotations

import json

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import KfpServeError, UserError
from kfp_serve.components.kserve import canary as canaries
from kfp_serve.components.kserve import keda, monitoring
from kfp_serve.components.kserve.api import KServeCluster, api_client
from kfp_serve.components.kserve.diagnostics import diagnostics
from kfp_serve.components.kserve.preflight import check_workload_identity, preflight
from kfp_serve.components.kserve.readiness import Expectation, KServeDeployment, mode_of
from kfp_serve.components.kserve.runtimes import runtime_version_for_onnx
from kfp_serve.components.kserve.sources import check_cluster_reads
from kfp_serve.components.kserve.wait import expect_after, wait_ready


class DeployError(KfpServeError):
    """A deploy that failed, with the diagnostics report gathered at the time."""

    def __init__(self, cause: KfpServeError, diagnostics: str):
        super().__init__(str(cause))
        self.cause = cause
        self.diagnostics = diagnostics
        self.exit_code = cause.exit_code


def promote(service: KServeInferenceService, timeout_s: float,
            api_host: str | None = None) -> KServeDeployment:
    """All traffic to the latest revision of the InferenceService ``service`` records, then
    wait for it. In Standard mode the new model already takes all traffic: nothing changes."""
    name = service.name
    cluster = KServeCluster(api_client(api_host), service.namespace)
    if service.canary and _promoted(cluster.get(name), service):  # a retried promote
        print(f"{name} already serves canary {service.canary['predictor']['name']} as its"
              " predictor: nothing to promote")
        return wait_ready(cluster, name, timeout_s)
    changed = changed_since(cluster, service)
    if changed:
        raise UserError(f"promote refused, nothing changed: InferenceService {name!r} {changed};"
                        " promoting now would promote that, not what this pipeline validated")
    if service.canary:  # Standard: the canary's Deployment becomes the stable one
        own = service.canary["predictor"]["name"]
        others = [e for e in cluster.get(name)["spec"].get("canary") or []
                  if e["predictor"].get("name") != own]
        cluster.replace_spec(name, predictor=service.promoted_predictor, canary=others or None)
        result = wait_ready(cluster, name, timeout_s,
                            expect=Expectation(mode="Standard", new_rollout=False, canary_removed=own))
        print(f"promoted {name}: canary {own} is now the predictor"
              f" ({canaries.service_name(name, service.promoted_predictor.get('name'))})")
        return result
    if service.mode == "Knative":
        cluster.patch_predictor(name, {"canaryTrafficPercent": None})
        result = wait_ready(cluster, name, timeout_s,
                            expect=Expectation(mode="Knative", new_rollout=False, latest_percent=100))
    else:
        result = wait_ready(cluster, name, timeout_s)
    print(f"promoted {name}: traffic {result.traffic or 'all to ' + result.latest_ready_revision}")
    return result


def rollback(service: KServeInferenceService, timeout_s: float,
             api_host: str | None = None) -> KServeDeployment:
    """Knative: 0 % to the latest revision, all traffic back to the last rolled-out one.
    Standard: re-apply the predictor from before the deploy (a Deployment rollout back to the
    previous model), then wait for it to complete."""
    name = service.name
    cluster = KServeCluster(api_client(api_host), service.namespace)
    if service.canary:
        return _remove_canary(cluster, service, timeout_s)
    if service.mode == "Standard" and _same(cluster.get(name), service.previous_predictor):
        print(f"{name} already serves the predictor from before this deploy: nothing to roll back")
        return wait_ready(cluster, name, timeout_s)  # a retried rollback
    changed = changed_since(cluster, service)
    if changed and service.mode == "Knative":
        # a later deploy's revision holds the canary's place: this one has no traffic left
        print(f"nothing to roll back: InferenceService {name!r} {changed}, which takes the canary's"
              " place; this deploy's revision serves nothing")
        return wait_ready(cluster, name, timeout_s)
    if changed:
        raise UserError(f"rollback refused, nothing changed: InferenceService {name!r} {changed};"
                        " re-applying the predictor from before this deploy would undo that one")
    if service.mode == "Knative":
        cluster.patch_predictor(name, {"canaryTrafficPercent": 0})
        result = wait_ready(cluster, name, timeout_s,
                            expect=Expectation(mode="Knative", new_rollout=False, latest_percent=0))
    else:
        previous = service.previous_predictor
        if not previous:
            raise UserError(f"nothing to roll back to: InferenceService {name!r} was created by"
                            " the deploy (Standard mode keeps no earlier model); delete it with"
                            " delete_kserve, or deploy a known-good version")
        before, generation = cluster.get(name), cluster.generation(name)
        cluster.replace_predictor(name, previous)
        result = wait_ready(cluster, name, timeout_s,
                            expect=expect_after(cluster, before, name, generation))
    print(f"rolled back {name}: traffic {result.traffic or 'all to the previous model'}")
    return result


def _remove_canary(cluster: KServeCluster, service: KServeInferenceService,
                   timeout_s: float) -> KServeDeployment:
    """Standard-mode rollback of a canary: its entry goes; the stable predictor, which never
    changed, serves as before. A canary already gone (rolled back, or replaced by a later
    deploy) leaves nothing to do."""
    name, own = service.name, service.canary["predictor"]["name"]
    current = _existing(cluster, service)
    if canaries.entry_of(current, own) is None:
        print(f"nothing to roll back: canary {own} is no longer in InferenceService {name!r}"
              " (rolled back already, or replaced by a later deploy); it serves nothing")
        return wait_ready(cluster, name, timeout_s)
    others = [e for e in current["spec"].get("canary") or [] if e["predictor"].get("name") != own]
    cluster.replace_spec(name, canary=others or None)
    result = wait_ready(cluster, name, timeout_s,
                        expect=Expectation(mode="Standard", new_rollout=False, canary_removed=own))
    print(f"rolled back {name}: canary {own} removed; the stable predictor serves as before")
    return result


def _promoted(current: dict | None, service: KServeInferenceService) -> bool:
    own = service.canary["predictor"]["name"]
    return (current is not None and canaries.entry_of(current, own) is None
            and _same(current, service.promoted_predictor))


def _existing(cluster: KServeCluster, service: KServeInferenceService) -> dict:
    current = cluster.get(service.name)
    if current is None:
        raise UserError(f"InferenceService {service.name!r} no longer exists in namespace"
                        f" {service.namespace!r}; nothing to promote or roll back")
    return current


def changed_since(cluster: KServeCluster, service: KServeInferenceService) -> str:
    """How the InferenceService changed since the deploy ``service`` records ('' if it did not):
    another deploy made a newer revision (Knative), another predictor or replaced this
    deploy's canary (Standard)."""
    current = _existing(cluster, service)
    if service.canary:
        own = service.canary["predictor"]["name"]
        if canaries.entry_of(current, own) != service.canary:
            return f"no longer holds this deploy's canary {own} (a later deploy replaced or removed it)"
    if service.mode == "Knative":
        latest = current.get("status", {}).get("components", {}).get("predictor", {}).get(
            "latestCreatedRevision", "")
        if latest and service.latest_ready_revision and latest != service.latest_ready_revision:
            return f"has revision {latest}, made after this deploy's {service.latest_ready_revision}"
        return ""
    if service.predictor is not None and not _same(current, service.predictor):
        return (f"serves another predictor than this deploy applied (storageUri"
                f" {current['spec']['predictor'].get('model', {}).get('storageUri')})")
    return ""


def _same(isvc: dict | None, predictor: dict | None) -> bool:
    """Whether ``isvc`` serves ``predictor`` (the canary percentage aside)."""
    if isvc is None or predictor is None:
        return False
    ignore = ("canaryTrafficPercent",)
    return ({k: v for k, v in isvc["spec"]["predictor"].items() if k not in ignore}
            == {k: v for k, v in predictor.items() if k not in ignore})


#: Standard mode: the predictor a deploy replaced, written in the same apply, so a retry of a
#: deploy that died after it applied still knows what a rollback must re-apply
PREVIOUS_PREDICTOR_ANNOTATION = "kfp-serve.io/previous-predictor"


def record_previous_predictor(manifest: dict, current: dict | None) -> None:
    """Write into ``manifest`` the predictor it replaces: the current one when it differs
    (a new deploy), else the one the current object recorded (a retry, or the same spec again)."""
    if current is None:
        return
    annotations = manifest["metadata"].setdefault("annotations", {})
    recorded = current["metadata"].get("annotations", {}).get(PREVIOUS_PREDICTOR_ANNOTATION)
    if current["spec"]["predictor"] != manifest["spec"]["predictor"]:
        annotations[PREVIOUS_PREDICTOR_ANNOTATION] = json.dumps(current["spec"]["predictor"], sort_keys=True)
    elif recorded:
        annotations[PREVIOUS_PREDICTOR_ANNOTATION] = recorded


def recorded_previous_predictor(manifest: dict) -> dict | None:
    text = manifest["metadata"].get("annotations", {}).get(PREVIOUS_PREDICTOR_ANNOTATION)
    return json.loads(text) if text else None


def deploy(cluster: KServeCluster, manifest: dict, timeout_s: float = 900.0,
           keep_failed: bool = False, poll_s: float = 2.0, onnx_ir_version: int | None = None,
           unschedulable_grace_s: float = 0.0, network_policy: dict | None = None,
           workload_identity: tuple[str, str] | None = None,
           reconcile_grace_s: float = 60.0, kserve_namespace: str = "kserve",
           monitor: tuple[str, int] | None = None) -> KServeDeployment:
    """Preflight, apply, wait until this apply serves. On failure raise DeployError with
    diagnostics, and delete an InferenceService this call created unless ``keep_failed``.

    ``onnx_ir_version``: the IR of the ONNX model the repository holds, if any; when the
    runtime's Triton cannot load it, ``runtimeVersion`` is set to one that can.
    ``kserve_namespace``: where KServe's configuration lives (an hf:// or oci:// source is
    checked against it). ``monitor``: (``podmonitoring`` or ``servicemonitor``, interval in
    seconds): its API is checked first, and the monitor applied once the model serves."""
    name = manifest["metadata"]["name"]
    if monitor:
        monitoring.check_kind(monitor[0], manifest["spec"]["predictor"]["model"]["modelFormat"]["name"],
                              monitor[1])
    runtime, notes = preflight(cluster, manifest)
    notes += check_cluster_reads(cluster, manifest["spec"]["predictor"]["model"]["storageUri"],
                                 kserve_namespace)
    if monitor:
        monitoring.check_api(cluster, monitor[0])
    notes += keda.check_manifest_queries(manifest)
    if workload_identity:
        notes += check_workload_identity(cluster, *workload_identity)
    model = manifest["spec"]["predictor"]["model"]
    if runtime is not None and model["modelFormat"]["name"] in ("triton", "onnx"):
        version = runtime_version_for_onnx(runtime, model.get("runtimeVersion"), onnx_ir_version)
        if version:
            model["runtimeVersion"] = version
            notes.append(f"runtime {runtime['metadata']['name']!r} runs an older Triton whose"
                         f" onnxruntime cannot load ONNX IR {onnx_ir_version}: runtimeVersion set"
                         f" to {version}")
    for note in notes:
        print(f"note: {note}")
    if network_policy:  # before the pods exist, so none serves unprotected
        cluster.apply_network_policy(network_policy)
    standard = mode_of(manifest) == "Standard"
    generation, plan = None, None
    if standard:
        current = cluster.get(name)
        manifest, plan = canaries.plan(manifest, current)
        stable = ((current or {}).get("spec", {}).get("predictor") or {}).get("name")
        generation = cluster.generation(name, stable)
        record_previous_predictor(manifest, current)
    before = _apply(cluster, manifest, plan)
    created = before is None
    try:
        expect = expect_after(cluster, before, name, generation)
        if plan:
            expect.canary = plan.name
        elif standard:  # a retried deploy: what it replaced is the recorded one, not itself
            expect.previous_predictor = recorded_previous_predictor(manifest)
        result = wait_ready(cluster, name, timeout_s, poll_s, expect, unschedulable_grace_s,
                            reconcile_grace_s)
    except KfpServeError as err:
        try:  # best effort: the API may be what failed
            report = diagnostics(cluster, name)
        except KfpServeError as unavailable:
            report = f"(no diagnostics: {unavailable})\n"
        if created and not keep_failed:
            try:
                cluster.delete(name)
                report += "\nThe InferenceService was created by this deploy and has been deleted" \
                          " (keep_failed=False).\n"
            except KfpServeError as undeleted:
                report += (f"\nThe InferenceService was created by this deploy but could not be"
                           f" deleted ({undeleted}); delete it by hand.\n")
        elif plan and not keep_failed:
            try:
                current = cluster.get(name) or {"spec": {}}
                others = [e for e in current["spec"].get("canary") or []
                          if e["predictor"].get("name") != plan.name]
                cluster.replace_spec(name, canary=others or None)
                report += (f"\nThe canary {plan.name} this deploy added has been removed"
                           " (keep_failed=False); the stable predictor serves as before.\n")
            except KfpServeError as unremoved:
                report += f"\nThe canary {plan.name} could not be removed ({unremoved}).\n"
        raise DeployError(err, report) from err
    if monitor:
        notes.append(monitoring.apply_monitor(cluster, name, *monitor, runtime))
    result.created = created
    result.notes = notes
    if plan:
        result.promoted_predictor = plan.promoted
    return result


def _apply(cluster: KServeCluster, manifest: dict, plan: canaries.CanaryPlan | None) -> dict | None:
    """``cluster.apply``, with a CRD that has no spec.canary (KServe before 0.20) named."""
    try:
        return cluster.apply(manifest)
    except UserError as err:
        if plan and 'unknown field "spec.canary"' in str(err):
            raise UserError(
                f"InferenceService {manifest['metadata']['name']!r}: this cluster's"
                " InferenceService CRD has no spec.canary, so its KServe (before 0.20) has no"
                " Standard-mode canary; upgrade KServe, or deploy with canary_traffic_percent=100"
                " (the new model then takes all traffic once rolled out, and rollback_kserve"
                " re-applies the previous one)") from err
        raise
