"""KServe's Standard-mode canary (``spec.canary``, KServe 0.20+), as plain dict arithmetic.

Upstream (kserve/kserve at the commit of tests/data/kserve):

- ``spec.canary`` is a list of ``{predictor, trafficPercent}``; each canary's ``predictor.name``
  names its own Deployment and Service ``<isvc>-<name>-predictor``
  (constants.PredictorServiceName). Its pods run the stable predictor with the canary's fields
  merged over it (components/predictor.go buildCanaryPredictor, mergo WithOverride) at a fixed
  replica count, so the validating webhook refuses autoscaling fields on a canary
  (inference_service_validation.go validateCanarySpecs).
- Which of the users' traffic reaches it depends on the release: 0.20.0 routes none (a dark
  launch: ``trafficPercent`` only sizes its replicas); later releases weight the Gateway API
  HTTPRoute by ``trafficPercent`` once the canary is ready (httproute_reconciler.go). The
  predictor's own Service selects the stable pods only, in every release.
- A canary is promoted "without restart" by setting ``spec.predictor.name`` to its name and
  removing its entry: its Deployment becomes the stable one, and the old stable Deployment is
  deleted as an orphan. The webhook allows a change of ``predictor.name`` only together with a
  change of the model (``validatePredictorNameChange``).

The suite keeps at most one canary, its own: a canary deploy replaces any other (as a newer
Knative revision takes an older canary's place), a full deploy removes them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kfp_serve.components.kserve.manifest import deep_merge

#: predictor fields a canary may not carry: the webhook refuses autoscaling on it (it runs a
#: fixed replica count, from ``trafficPercent``), and ``name`` is the canary's own
SCALING = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "autoScaling")
NOT_ON_CANARY = (*SCALING, "canaryTrafficPercent", "name")
#: ``c`` and four hex digits: short, so ``<isvc>-<canary>-predictor-<namespace>`` fits a label
NAME_LENGTH = 5
MODEL_CONTAINER = "kserve-container"


def service_name(isvc: str, predictor_name: str | None = None) -> str:
    """The Service and Deployment KServe names after a predictor (constants.PredictorServiceName)."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


def model_of(predictor: dict[str, Any] | None) -> dict[str, Any] | None:
    """A predictor as a model to serve: its name, scaling and canary percentage aside."""
    if predictor is None:
        return None
    return {k: v for k, v in predictor.items() if k not in NOT_ON_CANARY}


def canary_name(predictor: dict[str, Any], taken: str | None) -> str:
    """A name for the canary of ``predictor``: the same for the same model (a retried deploy
    applies the same entry), never ``taken`` (the stable predictor's name)."""
    digest = hashlib.sha256(json.dumps(model_of(predictor), sort_keys=True).encode()).hexdigest()
    for start in range(0, len(digest) - 4, 4):
        name = f"c{digest[start:start + 4]}"
        if name != taken:
            return name
    raise AssertionError("unreachable: a digest has more than one distinct 4-digit slice")


@dataclass(frozen=True)
class CanaryPlan:
    """A Standard-mode canary deploy: the entry it adds and the predictor a promote applies."""

    entry: dict[str, Any]  # {"predictor": {..., "name": ...}, "trafficPercent": N}
    promoted: dict[str, Any]  # spec.predictor after a promote

    @property
    def name(self) -> str:
        return self.entry["predictor"]["name"]


def plan(manifest: dict[str, Any],
         current: dict[str, Any] | None) -> tuple[dict[str, Any], CanaryPlan | None]:
    """What a Standard-mode deploy of ``manifest`` applies over ``current``.

    A canary (``canaryTrafficPercent`` below 100) against a serving predictor: the stable
    predictor stays as it is and ``spec.canary`` holds the new model alone. Otherwise (no
    canary asked, nothing serving yet, or the model already the stable one) a full rollout:
    the new predictor replaces the stable one, keeping its ``name`` (so its Deployment is
    updated in place), and ``spec.canary`` is dropped."""
    applied = copy.deepcopy(manifest)
    predictor = applied["spec"]["predictor"]
    percent = predictor.pop("canaryTrafficPercent", None)
    applied["spec"].pop("canary", None)
    stable = (current or {}).get("spec", {}).get("predictor")
    if stable is not None and stable.get("name"):
        predictor["name"] = stable["name"]
    if percent is None or stable is None or model_of(predictor) == model_of(stable):
        return applied, None
    name = canary_name(predictor, stable.get("name"))
    entry = {"predictor": {**model_of(predictor), "name": name}, "trafficPercent": int(percent)}
    # the CRD requires a container name in a canary's model (KServe's Makefile strips that
    # requirement from spec.<component>.<field> only, not from spec.canary's items): the name
    # KServe gives the model container anyway (constants.InferenceServiceContainerName)
    entry["predictor"]["model"] = {"name": MODEL_CONTAINER, **entry["predictor"].get("model", {})}
    applied["spec"]["predictor"] = copy.deepcopy(stable)
    applied["spec"]["canary"] = [entry]
    return applied, CanaryPlan(entry, promoted(stable, entry, predictor))


def promoted(stable: dict[str, Any], entry: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """The predictor a promote applies: what the canary's pods run (the stable predictor with
    the canary's fields over it, as KServe builds them) with the scaling the deploy asked for,
    named after the canary so its Deployment carries on. With the same model as the stable
    one (another runtime setting, say), the webhook refuses a new name: the stable Deployment
    keeps its name and rolls to the canary's template."""
    merged = {k: v for k, v in deep_merge(stable, entry["predictor"]).items() if k not in SCALING}
    merged.update({k: copy.deepcopy(asked[k]) for k in SCALING if k in asked})
    same_model = storage_uri(stable) == storage_uri(entry["predictor"])
    merged.pop("name", None)
    name = stable.get("name") if same_model else entry["predictor"]["name"]
    return {**merged, "name": name} if name else merged


def storage_uri(predictor: dict[str, Any]) -> str | None:
    return (predictor.get("model") or {}).get("storageUri")


def entry_of(isvc: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The ``spec.canary`` entry named ``name`` of ``isvc``, or None."""
    entries = ((isvc or {}).get("spec") or {}).get("canary") or []
    return next((e for e in entries if (e.get("predictor") or {}).get("name") == name), None)


def status_of(isvc: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The canary's ``status.canaryStatuses`` entry (name, ready, trafficPercent), or None."""
    return next((s for s in isvc.get("status", {}).get("canaryStatuses") or []
                 if s.get("name") == name), None)


def internal_url(address_url: str, isvc: str, stable_name: str | None, name: str) -> str:
    """The canary Service's cluster-local URL: the InferenceService's address with the stable
    predictor's Service swapped for the canary's (same namespace, scheme and port)."""
    scheme, _, rest = address_url.partition("://")
    stable = service_name(isvc, stable_name)
    if not rest.startswith(f"{stable}."):
        return ""
    return f"{scheme}://{service_name(isvc, name)}{rest[len(stable):]}"
