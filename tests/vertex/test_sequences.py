"""Model-based tests of whole sequences on one Vertex AI endpoint (hypothesis.stateful).

Two pipelines share the endpoint: "digits" deploys versions of its model as canaries, "other"
deploys another model beside it. Random sequences of deploys (canary or full), deploys that die
after their work finished followed by a retry, retried steps, validations that pass (promote) or
fail (rollback) run against the fake Vertex AI (control plane only: no model is served). After
every step the endpoint must hold these invariants:

- the split sums to 100 (or is empty) and names only deployed models;
- a model that served before a step serves after it, unless the step is the promote that
  replaced it (an earlier version of the same model) or the rollback of the canary itself;
- nothing a step did not deploy is undeployed, except the versions a promote replaced;
- a rollback gives the canary's share back to what served before its deploy, in the proportions
  it had then; models deployed since keep their shares;
- a promote leaves the other pipeline's models and shares as they were;
- a retried step returns what the first attempt would have (the same deployed model, the split
  before the deploy) and makes no second model version, deployed model or endpoint;
- a canary on flex-start VMs is never promoted, never takes all the traffic from models that
  serve, and when Vertex AI undeploys it (its time runs out) every other model still serves.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fakes.http_fake import FakeServer
from fakes.vertex_api import FakeVertexApi
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support import run_sequences
from support.vertex import vertex_spec

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.vertex import rollout

PIPELINES = {"digits": "digits", "other": "other"}  # pipeline -> model display name
ENDPOINT = "shared-endpoint"


class EndpointSequences(RuleBasedStateMachine):
    """One shared endpoint; each step compares the endpoint before and after."""

    explored = {"sequences": 0, "steps": 0, "crashes": 0, "promotes": 0, "rollbacks": 0,
                "refused rollbacks": 0, "flex-start deploys": 0, "expiries": 0}

    def __init__(self):
        super().__init__()
        self.explored["sequences"] += 1
        self.api = FakeVertexApi(Path(tempfile.mkdtemp(prefix="vertex-sequences-")), op_seconds=0.01,
                                 serve=False)
        self.server = FakeServer(self.api).__enter__()
        self.api.url = self.server.url
        self.runs = 0
        self.open: dict[str, tuple] = {}  # pipeline -> (record, result, split before its deploy)
        self.steps: list[str] = []

    def teardown(self):
        self.server.__exit__(None, None, None)

    # -- what the endpoint holds -------------------------------------------------------------
    def endpoint(self) -> dict:
        found = [e for e in self.api.endpoints.values() if e.get("displayName") == ENDPOINT]
        assert len(found) <= 1, f"{len(found)} endpoints named {ENDPOINT} after {self.steps}"
        return found[0] if found else {"deployedModels": [], "trafficSplit": {}}

    def state(self) -> tuple[dict[str, int], dict[str, str]]:
        """(split, deployed model id -> model resource)."""
        endpoint = self.endpoint()
        return (dict(endpoint["trafficSplit"]),
                {d["id"]: d["model"].split("@")[0] for d in endpoint["deployedModels"]})

    def counts(self) -> tuple[int, int, int]:
        return (self.api.calls.count("upload"), self.api.calls.count("deployModel"),
                self.api.calls.count("create_endpoint"))

    # -- steps ---------------------------------------------------------------------------------
    @rule(pipeline=st.sampled_from(sorted(PIPELINES)), version=st.integers(1, 3),
          percent=st.sampled_from([10, 30, 50, 100]),
          crash=st.sampled_from([None, None, "uploadModel", "deployModel"]),
          flex=st.sampled_from([False, False, True]))
    def deploy(self, pipeline, version, percent, crash, flex):
        if pipeline in self.open:  # a pipeline validates its canary before deploying another
            return
        self.runs += 1
        spec = vertex_spec(f"gs://models/{pipeline}/v{version}", display_name=PIPELINES[pipeline],
                           model_name=pipeline, endpoint=ENDPOINT, traffic_percentage=percent,
                           flex_start_s=600 if flex else 0)
        deploy_id = f"{pipeline}-run-{self.runs}"
        before, owners = self.state()
        serving = sum(1 for v in before.values() if v > 0)
        self.steps.append(f"deploy {pipeline} v{version} {percent}% crash={crash} flex={flex}")
        self.explored["steps"] += 1
        made = self.counts()
        if flex and percent == 100 and serving:
            with pytest.raises(UserError, match="the endpoint would serve nothing"):
                rollout.deploy(spec, self.api.url, 30, 0.05, deploy_id=deploy_id)
            assert self.state() == (before, owners)
            return
        self.explored["flex-start deploys"] += flex
        if 0 < 100 - percent < serving:
            with pytest.raises(UserError, match="needs at least 1 %"):
                rollout.deploy(spec, self.api.url, 30, 0.05, deploy_id=deploy_id)
            return
        result = None
        if crash:  # the work is done, then the step dies before it writes its outputs
            self.api.faults[crash] = "fail-after-done"
            try:
                result = rollout.deploy(spec, self.api.url, 30, 0.05, deploy_id=deploy_id)
            except InfrastructureError:  # died; the retry below resumes
                self.steps.append("  died after the work; retried")
                self.explored["crashes"] += 1
            self.api.faults.pop(crash, None)  # unused where the deploy had nothing to upload
        result = result or rollout.deploy(spec, self.api.url, 30, 0.05, deploy_id=deploy_id)
        after, after_owners = self.state()
        new = set(after_owners) - set(owners)
        assert new == {result.deployed_model_id}, f"one deployed model per deploy: {new}"
        assert result.previous_traffic == before, "the split this deploy found"
        assert self.counts()[1] - made[1] == 1, "deployModel once, a retry included"
        for k in before:  # every model that served still serves (or was outranked)
            assert k in after_owners and (after.get(k, 0) > 0 or percent == 100), k
        again = rollout.deploy(spec, self.api.url, 30, 0.05, deploy_id=deploy_id)  # a retry
        assert (again.deployed_model_id, again.previous_traffic) == \
            (result.deployed_model_id, result.previous_traffic)
        assert self.counts()[1] - made[1] == 1 and self.state() == (after, after_owners)
        record = result.endpoint_record(spec, self.api.url, {})
        self.open[pipeline] = (record, result, before)

    @precondition(lambda self: self.open)
    @rule(pipeline=st.sampled_from(sorted(PIPELINES)), passed=st.booleans(), retried=st.booleans())
    def validate_then_promote_or_roll_back(self, pipeline, passed, retried):
        if pipeline not in self.open:
            return
        record, result, previous = self.open.pop(pipeline)
        before, owners = self.state()
        self.steps.append(f"{'promote' if passed else 'rollback'} {pipeline}")
        self.explored["steps"] += 1
        self.explored["promotes" if passed else "rollbacks"] += 1
        ours = result.deployed_model_id
        if ours not in owners:  # a flex-start canary whose time ran out: nothing left to do
            assert record.flex_start_s
            split = rollout.rollback(record, True, 30, 0.05)
            assert self.state() == (before, owners) and split == before
            return
        if passed and record.flex_start_s:  # never promoted: it would vanish with production
            with pytest.raises(UserError, match="runs on flex-start VMs"):
                rollout.promote(record, True, 30, 0.05)
            assert self.state() == (before, owners)
            self.open[pipeline] = (record, result, previous)
            return
        if passed:
            replaced = {k for k in previous if k in owners and owners[k] == owners[ours] and k != ours}
            split = rollout.promote(record, True, 30, 0.05)
            if retried:
                assert rollout.promote(record, True, 30, 0.05) == split
            after, after_owners = self.state()
            assert set(owners) - set(after_owners) == replaced, "only the replaced versions go"
            assert after.get(ours, 0) == before.get(ours, 0) + sum(before.get(k, 0) for k in replaced)
            for k in set(owners) - replaced - {ours}:  # the other pipeline's models are untouched
                assert after.get(k, 0) == before.get(k, 0), (k, before, after)
        else:
            live_previous = {k: v for k, v in previous.items() if k in owners and v > 0}
            since = {k for k, v in before.items() if k != ours and v > 0}
            if before.get(ours) and not live_previous and (previous or since):
                # nothing from before can take the canary's share: a rollback hands no traffic
                # to models deployed since, so it refuses and the canary keeps serving
                with pytest.raises(UserError, match="which a rollback does not hand traffic to"):
                    rollout.rollback(record, True, 30, 0.05)
                assert self.state() == (before, owners)
                self.explored["refused rollbacks"] += 1
                self.open[pipeline] = (record, result, previous)
                return
            split = rollout.rollback(record, True, 30, 0.05)
            if retried:
                assert rollout.rollback(record, True, 30, 0.05) == split
            after, after_owners = self.state()
            assert set(owners) - set(after_owners) == {ours}, "the canary alone is undeployed"
            share = before.get(ours, 0)
            later = {k for k in owners if k not in previous and k != ours}
            for k in later:  # deployed since: they keep their shares
                assert after.get(k, 0) == before.get(k, 0), (k, before, after)
            if share and live_previous:  # the share went back in the proportions from before
                total = sum(live_previous.values())
                for k, v in live_previous.items():
                    expected = before.get(k, 0) + share * v / total
                    assert abs(after[k] - expected) <= 1.0 + 1e-9, (k, before, after, previous)

    @rule(pick=st.integers(0, 3))
    def time_runs_out(self, pick):
        """Vertex AI undeploys a flex-start deployed model whose time ran out."""
        endpoint = self.endpoint()
        flex = sorted(d["id"] for d in endpoint["deployedModels"]
                      if (d.get("dedicatedResources") or {}).get("flexStart"))
        if not flex:
            return
        gone = flex[pick % len(flex)]
        before, owners = self.state()
        self.steps.append(f"time runs out for {gone}")
        self.explored["expiries"] += 1
        self.api._expire(endpoint["name"].rsplit("/", 1)[-1], gone)
        after, after_owners = self.state()
        assert set(owners) - set(after_owners) == {gone}
        for k, v in before.items():  # every other model that served still serves
            assert k == gone or after.get(k, 0) >= v > 0 or not v, (k, before, after)

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def the_split_names_only_deployed_models_and_sums_to_100(self):
        split, owners = self.state()
        assert set(split) <= set(owners), (split, owners, self.steps)
        assert sum(split.values()) in ((100,) if owners else (0,)) or not split, (split, self.steps)

    @invariant()
    def one_endpoint_and_one_model_per_pipeline(self):
        self.endpoint()
        assert len(self.api.models) <= len(PIPELINES)


@pytest.mark.server  # the fake Vertex AI API on 127.0.0.1, for about a minute of sequences
def test_whole_sequences_of_deploys_retries_promotes_and_rollbacks_hold():
    """The same 25 sequences every run (support.run_sequences says how to explore more)."""
    run_sequences(EndpointSequences)
