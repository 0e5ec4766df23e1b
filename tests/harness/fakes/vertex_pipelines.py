"""A behavioural fake of Vertex AI's PipelineJobs REST API (create only, so far)."""

from __future__ import annotations

import re

_CREATE = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/pipelineJobs$")


class FakeVertexPipelines:
    def __init__(self, deny: tuple[int, str, str] | None = None):
        self.jobs: dict[str, dict] = {}
        self.deny = deny

    def __call__(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        match = _CREATE.match(path)
        if method == "POST" and match:
            if self.deny:
                code, status, message = self.deny
                return code, {"error": {"code": code, "status": status, "message": message}}
            if "pipelineSpec" not in body or "runtimeConfig" not in body:
                return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                       "message": "pipelineSpec and runtimeConfig are required"}}
            job_id = query.get("pipelineJobId") or f"job-{len(self.jobs) + 1}"
            name = f"projects/{match['project']}/locations/{match['location']}/pipelineJobs/{job_id}"
            job = dict(body, name=name, state="PIPELINE_STATE_PENDING")
            self.jobs[name] = job
            return 200, job
        return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": f"no route {path}"}}
