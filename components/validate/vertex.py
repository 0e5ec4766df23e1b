"""Validate a model deployed on a Vertex AI endpoint, through the endpoint's own API.

Two protocols: ``vertex-raw`` (rawPredict carrying Open Inference Protocol v2 JSON to Triton,
which Vertex AI passes through) and ``vertex-predict`` (predict with ``{"instances": [...]}``,
TorchServe's Vertex format). Vertex AI forwards only prediction calls, so the served model's
metadata cannot be read: every response is checked instead (output names, datatypes, shapes).
While traffic is split, each answer says which deployed model served it (the
``X-Vertex-AI-Deployed-Model-Id`` header, or ``deployedModelId``); only answers from the model
under test count, so a canary is validated alone, not mixed with the model it may replace.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPSConnection
from urllib.parse import urlparse

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, dtype_from_protocol, protocol_dtype
from kfp_serve.components.validate.endpoint import ValidationResult
from kfp_serve.components.validate.envelopes import instances, parse_predict, shape_problems
from kfp_serve.components.validate.load import request_body
from kfp_serve.components.validate.polling import poll
from kfp_serve.components.verify import compare_outputs

PROTOCOLS = ("vertex-raw", "vertex-predict")
MISS_PROBABILITY = 1e-9  # tries per request are sized so the model under test answers
MAX_TRIES_PER_REQUEST = 5000


@dataclass(frozen=True)
class VertexTarget:
    """Where and how to call one deployed model: ``base`` is ``http(s)://HOST/v1/<endpoint>``."""

    base: str
    deployed_model_id: str
    protocol: str
    model_name: str  # the Triton model behind rawPredict
    token: str = ""

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise UserError(f"protocol {self.protocol!r} is not a Vertex AI protocol ({PROTOCOLS})")
        parsed = urlparse(self.base)
        if parsed.scheme not in ("http", "https") or "/endpoints/" not in parsed.path:
            raise UserError(f"{self.base!r} is not a Vertex AI endpoint URL"
                            " (https://REGION-aiplatform.googleapis.com/v1/projects/.../endpoints/ID)")

    @property
    def path(self) -> str:
        verb = "rawPredict" if self.protocol == "vertex-raw" else "predict"
        return f"{urlparse(self.base).path}:{verb}"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.protocol == "vertex-raw":
            headers["X-Vertex-Ai-Triton-Redirect"] = f"v2/models/{self.model_name}/infer"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def connection(self):
        parsed = urlparse(self.base)
        kind = HTTPSConnection if parsed.scheme == "https" else HTTPConnection
        return kind(parsed.netloc, timeout=60)

    def bodies(self, signature: ModelSignature, golden: GoldenSet, step: int,
               tensor_names: dict[str, str] | None = None) -> list[bytes]:
        """Request bodies, one per ``step`` golden samples."""
        out = []
        for start in range(0, golden.batch_size, step):
            part = golden.slice(start, start + step).inputs
            if self.protocol == "vertex-raw":
                out.append(request_body(signature, part, tensor_names))
            else:
                out.append(json.dumps({"instances": instances(signature, part)}).encode())
        return out


def access_token(base: str) -> str:
    """A bearer token for Google APIs (application default credentials); none for http://."""
    if base.startswith("http://"):
        return ""
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as err:  # DefaultCredentialsError, RefreshError
        raise UserError(f"no Google Cloud credentials to call {base} ({err})") from err
    return credentials.token


def parse_raw(signature: ModelSignature, payload: dict, tensor_names: dict[str, str] | None,
              problems: set[str]) -> dict[str, np.ndarray]:
    """Outputs of an Open Inference Protocol response; datatype/shape/name mismatches go to
    ``problems`` (the metadata check Vertex AI does not let us make up front)."""
    served = {t.get("name"): t for t in payload.get("outputs", [])}
    arrays = {}
    for spec in signature.outputs:
        name = (tensor_names or {}).get(spec.name, spec.name)
        tensor = served.get(name)
        if tensor is None:
            problems.add(f"output {name!r} is not in the response (it has {sorted(served)})")
            continue
        if tensor.get("datatype") != protocol_dtype(spec.dtype):
            problems.add(f"output {spec.name!r} is {tensor.get('datatype')}, signature says"
                         f" {protocol_dtype(spec.dtype)}")
        dtype = dtype_from_protocol(tensor.get("datatype", protocol_dtype(spec.dtype)))
        arrays[spec.name] = np.asarray(tensor.get("data", []), dtype=dtype).reshape(tensor.get("shape", [-1]))
    problems |= shape_problems(signature, arrays)
    return arrays


class _Caller:
    """Sends bodies until the deployed model under test answers each one."""

    def __init__(self, target: VertexTarget, share: int):
        import math

        self.target = target
        # a model with share s of the traffic misses n tries with probability (1 - s)^n
        self.tries = 1 if share >= 100 else min(MAX_TRIES_PER_REQUEST, math.ceil(
            math.log(MISS_PROBABILITY) / math.log(1 - max(share, 1) / 100)))
        self.conn = target.connection()
        self.served_by: dict[str, int] = {}

    def send(self, body: bytes) -> tuple[int, bytes, str]:
        self.conn.request("POST", self.target.path, body=body, headers=self.target.headers())
        response = self.conn.getresponse()
        return (response.status, response.read(),
                response.getheader("X-Vertex-AI-Deployed-Model-Id") or "")

    def call(self, body: bytes) -> tuple[dict, float]:
        for _ in range(self.tries):
            began = time.perf_counter()
            try:
                status, data, served = self.send(body)
            except OSError as err:
                self.conn.close()
                raise InfrastructureError(f"cannot reach {self.target.base}: {err}") from err
            elapsed = (time.perf_counter() - began) * 1000
            if status != 200:
                detail = data.decode(errors="replace")[:300]
                kind = UserError if status in (400, 403, 404) else InfrastructureError
                raise kind(f"{self.target.path} answered {status}: {detail}")
            payload = json.loads(data)
            served = served or payload.get("deployedModelId", "")  # predict says it in the body
            self.served_by[served] = self.served_by.get(served, 0) + 1
            if not served or served == self.target.deployed_model_id:
                return payload, elapsed
        raise InfrastructureError(
            f"deployed model {self.target.deployed_model_id} answered none of"
            f" {self.tries} requests (answers by deployed model: {self.served_by});"
            " give it traffic (traffic_percentage > 0) to validate it through the endpoint")

    def close(self) -> None:
        self.conn.close()


def wait_until_serving(target: VertexTarget, timeout_s: float) -> int:
    """Wait until the endpoint lists the deployed model and gives it traffic (a GET of the
    endpoint); returns its traffic share in percent."""

    def check() -> tuple[int | None, str]:
        conn = target.connection()
        try:
            conn.request("GET", urlparse(target.base).path, headers=target.headers())
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return None, f"HTTP {response.status}: {body.decode(errors='replace')[:200]}"
            endpoint = json.loads(body)
            ids = [d.get("id") for d in endpoint.get("deployedModels", [])]
            share = endpoint.get("trafficSplit", {}).get(target.deployed_model_id, 0)
            if target.deployed_model_id in ids and share > 0:
                return int(share), "serving"
            return None, f"deployed models {ids}, traffic split {endpoint.get('trafficSplit', {})}"
        except OSError as err:
            return None, f"unreachable ({err})"
        finally:
            conn.close()

    return poll(check, timeout_s, f"deployed model {target.deployed_model_id} is not serving on"
                f" {target.base}", interval_s=1.0)


def validate_vertex(target: VertexTarget, signature: ModelSignature, golden: GoldenSet,
                    atol: float = 1e-4, rtol: float = 1e-3, max_batch_size: int = 0,
                    ready_timeout_s: float = 120.0,
                    tensor_names: dict[str, str] | None = None) -> ValidationResult:
    """Send the whole golden set to the deployed model under test and compare every output."""
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    share = wait_until_serving(target, ready_timeout_s)
    step = golden.batch_size if max_batch_size <= 0 else max_batch_size
    caller = _Caller(target, share)
    problems: set[str] = set()
    collected: dict[str, list[np.ndarray]] = {n: [] for n in signature.output_names}
    latencies = []
    try:
        for body in target.bodies(signature, golden, step, tensor_names):
            payload, elapsed = caller.call(body)
            latencies.append(elapsed)
            if target.protocol == "vertex-raw":
                outputs = parse_raw(signature, payload, tensor_names, problems)
            else:
                outputs = parse_predict(signature, payload)
                problems |= shape_problems(signature, outputs)
            for name, value in outputs.items():
                collected[name].append(value)
    finally:
        caller.close()
    actual = {n: np.concatenate(v) for n, v in collected.items() if v}
    comparisons = compare_outputs(golden.outputs, actual, atol, rtol)
    result = ValidationResult(f"{target.base} (deployed model {target.deployed_model_id})",
                              target.model_name, sorted(problems), comparisons, latencies,
                              golden.batch_size)
    result.metadata_note = ("Vertex AI forwards only predictions: names, dtypes and shapes were"
                            " checked on every response")
    return result
