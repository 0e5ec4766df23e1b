"""Model-based tests of whole sequences on one namespace's InferenceServices (hypothesis.stateful).

Two pipelines deploy versions to the InferenceService ``digits`` (per sequence Knative, or
Standard with full rollouts and ``spec.canary`` canaries), one step at a time, beside an
unrelated InferenceService ``other``.
Random sequences of deploys, deploys that die right after they applied followed by a retry,
retried steps, validations that pass (promote) or fail (rollback) run against the fake
Kubernetes API and KServe controller (control plane only: nothing is served). After every step:

- ``other`` is exactly as it was (revision, traffic, predictor);
- Knative: the traffic names ready revisions and sums to 100; a canary deploy leaves what
  served before (the last rolled-out revision) with the rest; a rollback gives it everything
  back; a promote gives the canary everything; a step of a deploy overtaken by a later one
  changes nothing it does not own;
- Standard: a canary deploy leaves the stable predictor exactly as it was and holds only its
  own canary; its promote makes the canary the predictor (refused, changing nothing, when
  another deploy came since), its rollback removes it and leaves the stable predictor as it
  was; a full rollout's rollback re-applies the predictor from before its deploy, a retried
  deploy included, and refuses (changing nothing) when another deploy came since;
- a retried step makes no second revision.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
from fakes.crd_schema import load_crd_schema
from fakes.http_fake import FakeServer
from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from support import run_sequences
from support.kserve import cluster_for, make_spec

from kfp_serve.components.artifacts import KServeInferenceService
from kfp_serve.components.errors import KfpServeError, UserError
from kfp_serve.components.kserve import canary as canaries
from kfp_serve.components.kserve import rollout
from kfp_serve.components.kserve.manifest import build_inference_service

KEY = ("models", "digits")
FAST = {"timeout_s": 30, "poll_s": 0.05}


def strip(predictor: dict | None) -> dict | None:
    """A predictor, the canary percentage aside."""
    if predictor is None:
        return None
    return {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}


class InferenceServiceSequences(RuleBasedStateMachine):
    explored = {"sequences": 0, "steps": 0, "deaths": 0, "promotes": 0, "rollbacks": 0,
                "refused or moot": 0, "standard canaries": 0}

    def __init__(self):
        super().__init__()
        self.explored["sequences"] += 1
        self.api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(),
                               crd_schema=load_crd_schema())
        self.controller = FakeKServeController(self.api, Path(tempfile.mkdtemp(prefix="kserve-sequences-")))
        self.controller.serve = False
        self.server = FakeServer(self.api).__enter__()
        self.cluster = cluster_for(self.server.url)
        self.open: dict[str, KServeInferenceService] = {}
        self.steps: list[str] = []

    def teardown(self):
        self.server.__exit__(None, None, None)
        self.controller.stop()

    def manifest(self, name, version, canary):
        return build_inference_service(make_spec(
            name=name, storage_uri=f"gs://models/{name}/v{version}", deployment_mode=self.mode,
            canary_traffic_percent=canary, runtime_version="24.05-py3"))

    def record(self, result, manifest) -> KServeInferenceService:
        return KServeInferenceService(
            name=result.name, namespace=result.namespace, model_name="digits", url=result.url,
            mode=result.mode, latest_ready_revision=result.latest_ready_revision,
            previous_predictor=result.previous_predictor, predictor=result.predictor,
            storage_uri=manifest["spec"]["predictor"]["model"]["storageUri"], canary=result.canary,
            promoted_predictor=result.promoted_predictor)

    def status(self, key=KEY) -> dict:
        return copy.deepcopy(self.api.objects.get(key, {}).get("status", {}))

    def traffic(self, key=KEY) -> dict[str, int]:
        shares: dict[str, int] = {}
        for t in self.status(key).get("components", {}).get("predictor", {}).get("traffic", []):
            shares[t["revisionName"]] = shares.get(t["revisionName"], 0) + (t.get("percent") or 0)
        return {k: v for k, v in shares.items() if v}

    def predictor(self, key=KEY) -> dict | None:
        obj = self.api.objects.get(key)
        return copy.deepcopy(obj["spec"]["predictor"]) if obj else None

    def canaries(self) -> list:
        return copy.deepcopy((self.api.objects.get(KEY) or {}).get("spec", {}).get("canary") or [])

    def rolled_out(self) -> str:
        return self.status().get("components", {}).get("predictor", {}).get("latestRolledoutRevision", "")

    @initialize(mode=st.sampled_from(["Knative", "Standard"]))
    def start(self, mode):
        self.mode = mode
        self.steps.append(f"mode {mode}")
        rollout.deploy(self.cluster, self.manifest("other", 1, None), **FAST)
        self.other = (self.status(("models", "other")), self.predictor(("models", "other")))

    @rule(pipeline=st.sampled_from(["a", "b"]), version=st.integers(1, 3),
          canary=st.sampled_from([None, 10, 50]), dies=st.booleans())
    def deploy(self, pipeline, version, canary, dies):
        if pipeline in self.open:
            return
        manifest = self.manifest("digits", version, canary)
        before_predictor, before_traffic = self.predictor(), self.traffic()
        production = self.rolled_out()
        created = self.controller.states.get(KEY).created if KEY in self.controller.states else 0
        self.steps.append(f"deploy {pipeline} v{version} canary={canary} dies={dies}")
        self.explored["steps"] += 1
        if dies:  # the step dies right after its apply; the retry below resumes
            self.api.die_after_write = True
            with pytest.raises(KfpServeError):
                rollout.deploy(self.cluster, copy.deepcopy(manifest), keep_failed=True, **FAST)
            self.api.die_after_write = False
            self.explored["deaths"] += 1
        result = rollout.deploy(self.cluster, copy.deepcopy(manifest), **FAST)
        again = rollout.deploy(self.cluster, copy.deepcopy(manifest), **FAST)  # a retry
        assert again.latest_ready_revision == result.latest_ready_revision
        new = self.controller.states[KEY].created - created
        changed = before_predictor is None or strip(before_predictor) != strip(self.predictor())
        assert new <= 1, f"one revision per deploy, a retry included ({new})"
        if result.canary:  # Standard: the stable predictor stays, the canary beside it is ours alone
            assert self.predictor() == before_predictor and self.canaries() == [result.canary], self.steps
            assert new == 0 and again.canary == result.canary
            self.explored["standard canaries"] += 1
        elif self.mode == "Standard":
            assert self.canaries() == [], "a full rollout leaves no canary"
            assert result.previous_predictor == before_predictor or not changed, \
                "a retried deploy still knows what it replaced"
        elif canary and production and new:
            assert self.traffic() == {result.latest_ready_revision: canary, production: 100 - canary}, \
                (self.traffic(), before_traffic, self.steps)
        self.open[pipeline] = self.record(result, manifest)

    @precondition(lambda self: self.open)
    @rule(pipeline=st.sampled_from(["a", "b"]), passed=st.booleans(), retried=st.booleans())
    def validate_then_promote_or_roll_back(self, pipeline, passed, retried):
        if pipeline not in self.open:
            return
        service = self.open.pop(pipeline)
        self.steps.append(f"{'promote' if passed else 'rollback'} {pipeline}")
        self.explored["steps"] += 1
        self.explored["promotes" if passed else "rollbacks"] += 1
        latest = self.status().get("components", {}).get("predictor", {}).get("latestCreatedRevision", "")
        before_predictor, before_traffic = self.predictor(), self.traffic()
        step = rollout.promote if passed else rollout.rollback
        if service.canary:
            self.standard_canary_step(service, step, passed, retried, before_predictor)
            return
        ours = (latest == service.latest_ready_revision if self.mode == "Knative"
                else strip(before_predictor) == strip(service.predictor))
        # a later deploy that went back to the predictor from before this one leaves nothing to
        # undo: the rollback is moot, not refused
        moot = self.mode == "Standard" and not passed and strip(before_predictor) == strip(
            service.previous_predictor)
        if not ours and not moot and (passed or self.mode == "Standard"):
            with pytest.raises(UserError, match="refused, nothing changed"):
                step(service, **{"timeout_s": 30, "api_host": self.server.url})
            assert (self.predictor(), self.traffic()) == (before_predictor, before_traffic)
            self.explored["refused or moot"] += 1
            return
        if not passed and self.mode == "Standard" and service.previous_predictor is None:
            with pytest.raises(UserError, match="nothing to roll back to"):
                step(service, 30, self.server.url)
            self.explored["refused or moot"] += 1
            return
        for _ in range(2 if retried else 1):
            step(service, 30, self.server.url)
        if not ours:  # a later deploy holds the canary's place: the rollback changed nothing
            assert (self.predictor(), self.traffic()) == (before_predictor, before_traffic)
            self.explored["refused or moot"] += 1
        elif self.mode == "Knative":
            production = self.rolled_out()
            if passed:
                assert self.traffic() == {service.latest_ready_revision: 100}, (self.traffic(), self.steps)
            elif production and production != service.latest_ready_revision:
                assert self.traffic() == {production: 100}, (self.traffic(), self.steps)
        elif not passed:
            assert self.predictor()["model"] == service.previous_predictor["model"], self.steps

    def standard_canary_step(self, service, step, passed, retried, before_predictor):
        own = service.canary["predictor"]["name"]
        before = (before_predictor, self.canaries())
        present = canaries.entry_of(self.api.objects[KEY], own) == service.canary
        # another pipeline's canary of the very same model (the same entry) promoted already:
        # what this one validated serves, and its promote has nothing left to do
        done = canaries.entry_of(self.api.objects[KEY], own) is None and before_predictor == service.promoted_predictor
        if passed and not done and not (present and before_predictor == service.predictor):
            with pytest.raises(UserError, match="promote refused, nothing changed"):
                step(service, 30, self.server.url)
            assert (self.predictor(), self.canaries()) == before, self.steps
            self.explored["refused or moot"] += 1
            return
        for _ in range(2 if retried else 1):
            step(service, 30, self.server.url)
        if passed:  # the canary is the predictor now, under its own name when its model is new
            assert self.predictor() == service.promoted_predictor and self.canaries() == [], self.steps
        else:  # what served before the deploy serves still, and the canary is gone
            assert self.predictor() == before_predictor, self.steps
            assert self.canaries() == [e for e in before[1] if e["predictor"]["name"] != own], self.steps
            self.explored["refused or moot"] += 0 if present else 1

    @invariant()
    def the_other_inference_service_is_untouched(self):
        if hasattr(self, "other"):
            assert (self.status(("models", "other")), self.predictor(("models", "other"))) == self.other

    @invariant()
    def traffic_names_ready_revisions_and_sums_to_100(self):
        if self.mode == "Knative" and KEY in self.api.objects:
            traffic = self.traffic()
            assert not traffic or sum(traffic.values()) == 100, (traffic, self.steps)


@pytest.mark.server  # the fake Kubernetes API on 127.0.0.1, for about a minute of sequences
def test_whole_sequences_of_deploys_retries_promotes_and_rollbacks_hold():
    """The same 25 sequences every run (support.run_sequences says how to explore more)."""
    run_sequences(InferenceServiceSequences)
