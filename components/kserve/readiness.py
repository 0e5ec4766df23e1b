"""When an apply has really taken effect, per deployment mode, from what KServe reports.

``status.observedGeneration`` of an InferenceService is copied from its child (the Knative
Service, or the predictor Deployment in Standard mode) and is not set on error paths
(pkg/apis/serving/v1beta1/inference_service_status.go PropagateStatus / PropagateRawStatus),
so it is never compared with the InferenceService's own generation here. Instead:

- Knative: a change of the predictor creates a revision; the wait ends when the latest
  created revision differs from the one before the apply and is the latest ready one, and the
  latest revision's traffic share is the one asked for (KServe's ksvc_reconciler.go).
- Standard: the predictor Deployment's rollout of the new template completes (its generation
  moved, observed, every replica updated and available), as ``kubectl rollout status`` checks.
  A canary (``spec.canary``, canary.py) is ready when KServe reports it ready in
  ``status.canaryStatuses`` and its own Deployment's rollout is complete; a canary that was
  removed or promoted is gone from ``status.canaryStatuses`` once KServe has reconciled that.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.kserve import canary as canaries
from kfp_serve.components.kserve.manifest import (
    DEPLOYMENT_MODE_ANNOTATION,
    DEPLOYMENT_MODES,
    InferenceServiceSpec,
)

#: predictor fields that change only the autoscaler or the traffic split in Standard mode
#: (an HPA or KEDA object), never the Deployment's pod template
_NOT_IN_TEMPLATE = ("canaryTrafficPercent", "minReplicas", "maxReplicas", "scaleMetric",
                    "scaleTarget", "autoScaling")
#: a Ready condition with one of these reasons will not become True without a new spec
TERMINAL_REASONS = ("InvalidSpec",)
#: a reconcile error KServe retries (a conflict, a webhook timeout) or keeps hitting (a name the
#: API server refuses): final only once it has lasted (wait.py)
RECONCILE_FAILED = "ReconcileFailed"


def mode_of(isvc: dict[str, Any]) -> str:
    """``Knative`` or ``Standard``: the mode KServe reports, else the annotation."""
    reported = isvc.get("status", {}).get("deploymentMode") or isvc.get("metadata", {}).get(
        "annotations", {}).get(DEPLOYMENT_MODE_ANNOTATION, "Knative")
    return DEPLOYMENT_MODES.get(reported, reported)


#: metadata KServe does not copy onto the revision (or pod) template: everything else in the
#: InferenceService's labels and annotations does, so changing it rolls a new revision
#: (pkg/constants/constants.go ServiceAnnotationDisallowedList, RevisionTemplateLabelDisallowedList)
_NOT_PROPAGATED = ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
                   "internal.serving.kserve.io/storage-initializer-sourceuri",
                   "kubectl.kubernetes.io/last-applied-configuration", "modelFormat",
                   "networking.knative.dev/visibility")


def _template(isvc: dict[str, Any] | None, mode: str) -> dict[str, Any] | None:
    """What a new revision (Knative) or Deployment rollout (Standard) is made of."""
    if isvc is None:
        return None
    ignored = _NOT_IN_TEMPLATE if mode == "Standard" else ("canaryTrafficPercent",)
    metadata = isvc.get("metadata", {})
    return {"predictor": {k: v for k, v in isvc["spec"]["predictor"].items() if k not in ignored},
            **{part: {k: v for k, v in (metadata.get(part) or {}).items() if k not in _NOT_PROPAGATED}
               for part in ("labels", "annotations")}}


@dataclass(kw_only=True)
class Expectation:
    """What the wait after an apply (or a promote/rollback patch) has to see."""

    mode: str
    new_rollout: bool  # the pod template changed: a new revision / Deployment rollout
    latest_created_before: str = ""  # Knative
    deployment_generation_before: int | None = None  # Standard
    latest_percent: int | None = None  # Knative: the latest revision's share asked for
    previous_predictor: dict[str, Any] | None = field(default=None, repr=False)
    canary: str = ""  # Standard: the canary that must be ready
    canary_removed: str = ""  # Standard: the canary KServe must no longer report


def expectation(before: dict[str, Any] | None, after: dict[str, Any],
                deployment_generation_before: int | None = None) -> Expectation:
    """Compare the InferenceService before and after an apply."""
    mode = mode_of(after)
    predictor = after["spec"]["predictor"]
    previous = copy.deepcopy(before["spec"]["predictor"]) if before else None
    new_rollout = _template(before, mode) != _template(after, mode)
    percent = None
    if mode == "Knative":
        canary = predictor.get("canaryTrafficPercent")
        # an InferenceService's first revision takes everything, however KServe lists it (once
        # rolled out, a canary percentage splits it with itself): no share to wait for
        percent = None if before is None else 100 if canary is None else int(canary)
    created_before = (before or {}).get("status", {}).get("components", {}).get(
        "predictor", {}).get("latestCreatedRevision", "")
    return Expectation(mode=mode, new_rollout=new_rollout, latest_created_before=created_before,
                       deployment_generation_before=deployment_generation_before,
                       latest_percent=percent, previous_predictor=previous)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


def summary(status: dict[str, Any]) -> str:
    conditions = ", ".join(
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions", []))
    predictor = status.get("components", {}).get("predictor", {})
    revisions = ""
    if predictor.get("latestCreatedRevision"):
        revisions = (f"; latest created revision {predictor['latestCreatedRevision']}, latest"
                     f" ready {predictor.get('latestReadyRevision') or 'none'}")
    return f"conditions: {conditions or 'none yet'}{revisions}"


def terminal_failure(status: dict[str, Any], expect: Expectation, reconciled: bool) -> str:
    """Why the InferenceService cannot become Ready for this spec, or ''.

    InvalidSpec and ReconcileFailed are final whatever the generation; a failed model load
    counts once it belongs to this apply (Knative: not the revision from before; Standard: the
    Deployment was updated for it)."""
    model_status = status.get("modelStatus", {})
    info = model_status.get("lastFailureInfo", {})
    ready = condition(status, "PredictorReady") or condition(status, "Ready")
    transition = model_status.get("transitionStatus")
    if ready.get("status") == "False" and ready.get("reason") in TERMINAL_REASONS:
        return f"{ready['reason']}: {ready.get('message', '')}"
    # KServe never says which revision a failure belongs to (FailureInfo has no revision it
    # fills in): it computes the model status from the pods of status.latestCreatedRevision, so
    # a failure read before that names this apply's revision is the old one's
    created = status.get("components", {}).get("predictor", {}).get("latestCreatedRevision", "")
    stale = (expect.new_rollout and created in ("", expect.latest_created_before)
             if expect.mode == "Knative" else not reconciled)
    if transition == "InvalidSpec" or (transition == "BlockedByFailedLoad" and not stale):
        where = f" in {info['location']}" if info.get("location") else ""
        return f"{info.get('reason', transition)}{where}: {info.get('message', '')}"
    return ""


def knative_progress(status: dict[str, Any], expect: Expectation) -> str:
    """'' when the Knative revision and traffic asked for are serving, else what is missing."""
    predictor = status.get("components", {}).get("predictor", {})
    created, ready = predictor.get("latestCreatedRevision", ""), predictor.get("latestReadyRevision", "")
    if expect.new_rollout and created in ("", expect.latest_created_before):
        return f"no new revision yet (latest created: {created or 'none'})"
    if expect.new_rollout and ready != created:
        return f"revision {created} not ready yet"
    latest = [t for t in predictor.get("traffic", []) if t.get("latestRevision")]
    share = sum(t.get("percent") or 0 for t in latest)
    if expect.latest_percent is not None and share != expect.latest_percent:
        return f"traffic to the latest revision is {share}%, waiting for {expect.latest_percent}%"
    return ""


def rollout_progress(deployment: dict[str, Any] | None, expect: Expectation) -> str:
    """'' when the predictor Deployment's rollout for this apply is complete, else what is missing."""
    if deployment is None:
        return "no predictor Deployment yet"
    generation = deployment["metadata"].get("generation", 0)
    if expect.new_rollout and generation == expect.deployment_generation_before:
        return "the predictor Deployment is not updated yet"
    status, wanted = deployment.get("status", {}), deployment.get("spec", {}).get("replicas", 1)
    if status.get("observedGeneration", 0) < generation:
        return "the Deployment controller has not seen the new template yet"
    updated, total = status.get("updatedReplicas", 0), status.get("replicas", 0)
    if updated < wanted or total > updated or status.get("availableReplicas", 0) < updated:
        return (f"rollout in progress: {updated} of {wanted} replicas updated,"
                f" {status.get('availableReplicas', 0)} available, {total - updated} old")
    return ""


def canary_progress(isvc: dict[str, Any], deployment: dict[str, Any] | None,
                    expect: Expectation) -> str:
    """'' when the canary ``expect`` names is ready (or the removed one is gone), else what is
    missing. ``deployment`` is the canary's own Deployment."""
    if expect.canary_removed and canaries.status_of(isvc, expect.canary_removed) is not None:
        return f"KServe still reports canary {expect.canary_removed}"
    if not expect.canary:
        return ""
    reported = canaries.status_of(isvc, expect.canary)
    if reported is None:
        return f"KServe reports no status for canary {expect.canary} yet"
    if not reported.get("ready"):
        return f"canary {expect.canary} not ready yet"
    missing = rollout_progress(deployment, Expectation(mode="Standard", new_rollout=False))
    return f"canary {expect.canary}: {missing}" if missing else ""


def rollout_failure(deployment: dict[str, Any] | None) -> str:
    progressing = condition((deployment or {}).get("status", {}), "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"ProgressDeadlineExceeded: {progressing.get('message', '')}"
    return ""


def tagged_internal_url(address_url: str, name: str, tag: str) -> str:
    """The cluster-local URL of a tagged revision: Knative gives each traffic tag a Service
    ``{tag}-{route}`` (the route is ``{name}-predictor``) beside the InferenceService's own."""
    scheme, _, rest = address_url.partition("://")
    if not rest.startswith(f"{name}."):
        return ""
    return f"{scheme}://{tag}-{name}-predictor.{rest[len(name) + 1:]}"


@dataclass
class KServeDeployment:
    """The ready InferenceService, as the outputs report it."""

    name: str
    namespace: str
    url: str  # status.url: the external host on the ingress domain, what clients outside call
    internal_url: str  # status.address.url: cluster-local, what validation inside calls
    latest_ready_revision: str
    mode: str = "Knative"
    traffic: list[dict[str, Any]] = field(default_factory=list)
    created: bool = False
    canary_url: str = ""  # the latest revision's tagged external URL, while traffic is split
    canary_internal_url: str = ""  # ... and its cluster-local URL
    previous_predictor: dict[str, Any] | None = None  # what Standard-mode rollback re-applies
    notes: list[str] = field(default_factory=list)
    predictor: dict[str, Any] | None = None  # as applied: a later deploy changes it
    canary: dict[str, Any] | None = None  # Standard: this deploy's spec.canary entry
    promoted_predictor: dict[str, Any] | None = None  # Standard: what promoting the canary applies

    @property
    def validation_url(self) -> str:
        """Where validation inside the cluster calls: the canary itself while traffic is split."""
        return self.canary_internal_url or self.internal_url or self.url

    def summary(self, storage_uri: str) -> str:
        """The deployment summary (Markdown) the step's report shows."""
        if self.mode == "Knative":
            rollout = "canary by traffic split (Knative)"
        elif self.canary:
            rollout = (f"Standard: canary `{self.canary['predictor']['name']}` in its own Deployment"
                       f" beside the stable one (trafficPercent {self.canary['trafficPercent']}:"
                       " KServe 0.20.0 routes none of the users' traffic to it, later releases"
                       " weight the Gateway API route); promote_kserve makes it the stable"
                       " predictor, rollback_kserve removes it")
        else:
            rollout = ("Standard: the new model serves all traffic once rolled out;"
                       " rollback_kserve re-applies the previous one")
        notes = "".join(f"- note: {n}\n" for n in self.notes)
        return (f"# InferenceService `{self.namespace}/{self.name}`: Ready\n\n- mode: {self.mode}"
                f" ({rollout})\n- url: {self.url}\n- internal url: {self.internal_url}\n"
                f"- validated at: {self.validation_url}\n- revision: {self.latest_ready_revision}\n"
                f"- traffic: {json.dumps(self.traffic)}\n- storageUri: {storage_uri}\n{notes}")

    def record(self, spec: InferenceServiceSpec, model_name: str,
               tensor_names: dict[str, str]) -> KServeInferenceService:
        """The KServeInferenceService artifact's record: what validation, promote and rollback
        read (the served model's name and its tensors' names on the server)."""
        return KServeInferenceService(
            name=self.name, namespace=self.namespace, model_name=model_name, url=self.url,
            internal_url=self.internal_url, validation_url=self.validation_url, mode=self.mode,
            protocol=spec.protocol_version, latest_ready_revision=self.latest_ready_revision,
            traffic=self.traffic, canary_url=self.canary_url,
            canary_internal_url=self.canary_internal_url,
            previous_predictor=self.previous_predictor, storage_uri=spec.storage_uri,
            tensor_names=tensor_names, predictor=self.predictor,
            canary=self.canary, promoted_predictor=self.promoted_predictor)


def deployed(isvc: dict, expect: Expectation) -> KServeDeployment:
    """The ready InferenceService as the outputs report it."""
    status = isvc.get("status", {})
    name = isvc["metadata"]["name"]
    predictor = status.get("components", {}).get("predictor", {})
    internal = status.get("address", {}).get("url", "")
    url = status.get("url") or internal
    traffic = predictor.get("traffic", [])
    stable = isvc.get("spec", {}).get("predictor") or {}
    revision = predictor.get("latestReadyRevision", "") or canaries.service_name(name, stable.get("name"))
    if expect.canary:  # Standard: validation calls the canary's own Service
        return KServeDeployment(
            name, isvc["metadata"]["namespace"], url, internal, revision, expect.mode, traffic,
            canary_internal_url=canaries.internal_url(internal, name, stable.get("name"), expect.canary),
            previous_predictor=copy.deepcopy(stable), predictor=copy.deepcopy(stable),
            canary=copy.deepcopy(canaries.entry_of(isvc, expect.canary)))
    canary = next((t for t in traffic
                   if t.get("latestRevision") and t.get("tag") and (t.get("percent") or 0) < 100), {})
    return KServeDeployment(
        name, isvc["metadata"]["namespace"], url, internal, revision, expect.mode, traffic,
        canary_url=canary.get("url", ""),
        canary_internal_url=tagged_internal_url(internal, name, canary["tag"]) if canary else "",
        previous_predictor=expect.previous_predictor, predictor=copy.deepcopy(stable) or None)
