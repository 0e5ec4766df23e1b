"""A behavioural fake of the Kubeflow Pipelines v2beta1 REST API (experiments and runs)."""

from __future__ import annotations

import json
import uuid


class FakeKfpApi:
    """Keeps experiments and runs in memory, answering like the KFP API server."""

    def __init__(self, fail_runs_with: tuple[int, str] | None = None, multi_user: bool = False):
        self.multi_user = multi_user
        self.experiments: dict[str, dict] = {}
        self.runs: list[dict] = []
        self.fail_runs_with = fail_runs_with

    def __call__(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        if path == "/apis/v2beta1/healthz" and method == "GET":
            return 200, {"multi_user": self.multi_user}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = None
            if "filter" in query:
                predicates = json.loads(query["filter"]).get("predicates", [])
                wanted = next((p.get("stringValue") or p.get("string_value") for p in predicates
                               if p.get("key") == "display_name"), None)
            found = [e for e in self.experiments.values()
                     if wanted is None or e["display_name"] == wanted]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if path == "/apis/v2beta1/experiments" and method == "POST":
            if not body.get("display_name"):
                return 400, {"error": "experiment display_name is empty", "code": 3}
            experiment = dict(body, experiment_id=str(uuid.uuid4()))
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if path == "/apis/v2beta1/runs" and method == "POST":
            if self.fail_runs_with:
                status, message = self.fail_runs_with
                return status, {"error": message, "message": message, "code": 7}
            if body.get("experiment_id") not in self.experiments:
                return 404, {"error": "experiment not found", "code": 5}
            if "pipeline_spec" not in body:
                return 400, {"error": "pipeline_spec is required", "code": 3}
            run = dict(body, run_id=str(uuid.uuid4()), state="PENDING")
            self.runs.append(run)
            return 200, run
        return 404, {"error": f"no route {method} {path}", "code": 5}
