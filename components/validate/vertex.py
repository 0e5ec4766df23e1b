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
import math
from typing import Any

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.polling import poll
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.http import HttpEndpoint, answer_error
from kfp_serve.components.validate.server_metrics import parse_counters
from kfp_serve.components.validate.targets import HttpTarget
from kfp_serve.components.validate.tensors import (
    Instances,
    OipJson,
    check_metadata,
    tritonclient_payload,
    tritonclient_request,
)

PROTOCOLS = ("vertex-raw", "vertex-predict")
#: Vertex AI online prediction refuses request bodies over 1.5 MB on shared endpoints (its
#: quotas and limits page) and over 10 MB on dedicated ones (its dedicated endpoints page)
MAX_REQUEST_BYTES = 1_500_000
DEDICATED_MAX_REQUEST_BYTES = 10_000_000
#: the header in which Vertex AI names the deployed model that answered
DEPLOYED_MODEL_HEADER = "X-Vertex-AI-Deployed-Model-Id"
#: Triton's Vertex AI endpoint: what the predict route calls instead of the default model, and
#: the content type of binary tensors (triton-inference-server/server src/vertex_ai_server.cc)
REDIRECT_HEADER = "X-Vertex-Ai-Triton-Redirect"
BINARY_CONTENT_TYPE = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
MISS_PROBABILITY = 1e-9  # tries per request are sized so the model under test answers
MAX_TRIES_PER_REQUEST = 5000


class VertexTarget(HttpTarget):
    """One deployed model on a Vertex AI endpoint: ``base`` is ``http(s)://HOST/v1/<endpoint>``."""

    @property
    def response_check_note(self) -> str:  # type: ignore[override]
        note = ("Vertex AI forwards only predictions: names, dtypes and shapes were checked on"
                " every response")
        return "; ".join(filter(None, [note, self.split_note]))

    @property
    def split_note(self) -> str:
        """What the traffic split did to the golden requests ('' when all reached this model)."""
        others = {k: v for k, v in self.served_by.items() if k and k != self.deployed_model_id}
        if not others:
            return ""
        return (f"the endpoint's traffic split sent {sum(others.values())} of the golden requests"
                f" to other deployed models ({others}): they were sent again until deployed model"
                f" {self.deployed_model_id} answered, and not counted")

    def __init__(self, base: str, deployed_model_id: str, protocol: str, model_name: str,
                 signature: ModelSignature, tensor_names: dict[str, str] | None = None,
                 token: str = "", api_base: str = "", binary: bool = False):
        if protocol not in PROTOCOLS:
            raise UserError(f"protocol {protocol!r} is not a Vertex AI protocol ({PROTOCOLS})")
        if binary and protocol != "vertex-raw":
            raise UserError("binary tensors (transport rest-binary) reach Triton on Vertex AI"
                            " through rawPredict; this deployed model is called through predict"
                            " (TorchServe), which takes JSON instances")
        self.binary = binary
        self.replicas = (0, 0)  # the deployed model's min/max replicas, read by wait_ready
        codec = OipJson(signature, tensor_names) if protocol == "vertex-raw" else Instances(signature)
        super().__init__(base, model_name, signature, codec)  # model_name: Triton's, behind rawPredict
        if "/endpoints/" not in self.endpoint.prefix:
            raise UserError(f"{base!r} is not a Vertex AI endpoint URL"
                            " (https://REGION-aiplatform.googleapis.com/v1/projects/.../endpoints/ID)")
        self.deployed_model_id, self.protocol, self.token = deployed_model_id, protocol, token
        self.infer_path = f"{self.endpoint.prefix}:{'rawPredict' if protocol == 'vertex-raw' else 'predict'}"
        self.description = f"{self.endpoint.url} (deployed model {deployed_model_id})"
        self.tries = 1
        self.served_by: dict[str, int] = {}
        # the load phase measures the model under test only: answers of the models it shares
        # the endpoint with are counted apart (the production model a canary may replace)
        self.load_selector = (DEPLOYED_MODEL_HEADER, self._answered_by_us)
        # the endpoint's state is read on the regional API host; a dedicated endpoint takes
        # predictions only on its own host (``base``)
        self.api = HttpEndpoint.parse(api_base) if api_base else self.endpoint
        dedicated = self.api.url != self.endpoint.url
        self.max_request_bytes = DEDICATED_MAX_REQUEST_BYTES if dedicated else MAX_REQUEST_BYTES

    def headers(self, redirect: str = "") -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.protocol == "vertex-raw":
            headers[REDIRECT_HEADER] = redirect or f"v2/models/{self.model_name}/infer"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(self, inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
        """One encoded request: JSON, or with ``binary`` Triton's binary tensors in the content
        type its Vertex AI endpoint reads (``...binary+json;json-header-size=N``)."""
        if not self.binary:
            return self.codec.encode(inputs), self.headers()
        import tritonclient.http as httpclient

        tensors, outputs = tritonclient_request("rest-binary", self.signature, self.codec.served, inputs)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(tensors, outputs)
        headers = self.headers()
        headers["Content-Type"] = f"{BINARY_CONTENT_TYPE}{json_size if json_size is not None else len(body)}"
        return body, headers

    def _decode_binary(self, data: bytes, response: Any) -> tuple[dict[str, np.ndarray], list[str]]:
        """Triton's binary answer: its JSON header is ``Inference-Header-Content-Length`` bytes
        where a proxy keeps that header; rawPredict may not, so the header's end is found by
        reading one JSON object off the front."""
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        length = response.getheader("Inference-Header-Content-Length")
        try:
            if length is None:
                _, end = json.JSONDecoder().raw_decode(data.decode("latin-1"))
                length = end
            result = httpclient.InferResult.from_response_body(data, header_length=int(length))
            payload = tritonclient_payload(result, result.get_response().get("outputs", []))
        except (InferenceServerException, ValueError) as err:
            raise InfrastructureError(f"{self.infer_path} answered a body that is not a binary"
                                      f" tensor response: {first_line(err)}") from err
        return self.codec.decode(payload)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the endpoint lists the deployed model and gives it traffic; size the tries
        per request from its share: a model with share s misses n tries with probability
        (1 - s)^n."""
        share, self.replicas = wait_serving(self.api, self.headers(), self.deployed_model_id,
                                            self.endpoint.url, timeout_s)
        self.tries = 1 if share >= 100 else min(MAX_TRIES_PER_REQUEST, math.ceil(
            math.log(MISS_PROBABILITY) / math.log(1 - max(share, 1) / 100)))

    def metadata_problems(self) -> list[str] | None:
        """Triton's own view of the model, read through rawPredict with its redirect header
        (``v2/models/<m>``: Triton's Vertex AI endpoint turns it into the metadata GET); None
        for TorchServe's predict, which has no metadata."""
        if self.protocol != "vertex-raw":
            return None
        data, _ = self._post_ours(b"{}", self.headers(f"v2/models/{self.model_name}"), count=False)
        return check_metadata(json.loads(data), self.signature, self.codec.served)

    def read_counters(self) -> tuple[str, dict[str, float]] | None:
        """Triton's metrics through the redirect header (``metrics``), when they are one
        server's: a deployed model on exactly one replica (a reading comes from whichever
        replica answers, so before and after could be two servers); None otherwise."""
        if self.protocol != "vertex-raw" or self.replicas != (1, 1):
            return None
        data, _ = self._post_ours(b"{}", self.headers("metrics"), count=False)
        return parse_counters(data.decode(errors="replace"), self.model_name)

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        """One request, or rows split in halves until every request is under Vertex AI's size
        limit; the outputs are joined back in order."""
        def one(part: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]] | int:
            body, headers = self.request(part)
            if len(body) > self.max_request_bytes:
                return len(body)
            if self.binary:
                return self._decode_binary(*self._post_ours(body, headers))
            return self.codec.decode(self.post(body))

        return in_parts(one, inputs, self.max_request_bytes)

    def load(self, golden, concurrency, seconds):
        golden_answers = dict(self.served_by)
        self.infer(golden.slice(0, 1).inputs)  # a single row over the limit: one clear error
        self.served_by = golden_answers  # the note counts the golden requests, not this probe
        return super().load(golden, concurrency, seconds)

    def _answered_by_us(self, header: str, body: bytes) -> bool:
        served = header
        if not served and self.protocol == "vertex-predict":
            try:
                served = json.loads(body).get("deployedModelId", "")
            except ValueError:
                served = ""
        return not served or served == self.deployed_model_id

    def post(self, body: bytes) -> dict:
        """Send ``body`` until the deployed model under test answers it (the
        ``X-Vertex-AI-Deployed-Model-Id`` header, or ``deployedModelId`` in a predict body)."""
        return json.loads(self._post_ours(body, self.headers())[0])

    def _post_ours(self, body: bytes, headers: dict[str, str], count: bool = True) -> tuple[bytes, Any]:
        """The raw answer of the deployed model under test (``count``: a golden request, which
        the note on the split counts)."""
        if self._connection is None:
            self._connection = self.endpoint.connection()
        for _ in range(self.tries):
            status, data, response = self.endpoint.call(self._connection, "POST", self.infer_path,
                                                        body, headers)
            if status != 200:
                raise answer_error(status, data, self.infer_path)
            served = response.getheader(DEPLOYED_MODEL_HEADER) or ""
            if not served and self.protocol == "vertex-predict":
                served = json.loads(data).get("deployedModelId", "")
            if count:
                self.served_by[served] = self.served_by.get(served, 0) + 1
            if not served or served == self.deployed_model_id:
                return data, response
        raise InfrastructureError(
            f"deployed model {self.deployed_model_id} answered none of"
            f" {self.tries} requests (answers by deployed model: {self.served_by});"
            " give it traffic (traffic_percentage > 0) to validate it through the endpoint")


def in_parts(infer_one, inputs: dict[str, np.ndarray],
             limit: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """``infer_one(inputs)``, or (where it answers the size of a request over Vertex AI's
    ``limit`` instead) the rows split in halves until each part fits, the outputs joined in
    order."""
    answer = infer_one(inputs)
    if not isinstance(answer, int):
        return answer
    rows = len(next(iter(inputs.values())))
    if rows < 2:
        raise UserError(f"one request of this model is {answer / 1e6:.1f} MB, over Vertex AI's"
                        f" {limit / 1e6:.1f} MB limit on prediction requests; serve it where"
                        " requests may be larger (KServe), or send smaller inputs")
    half = rows // 2
    first, first_problems = in_parts(infer_one, {k: v[:half] for k, v in inputs.items()}, limit)
    second, second_problems = in_parts(infer_one, {k: v[half:] for k, v in inputs.items()}, limit)
    joined = {k: np.concatenate([first[k], second[k]]) for k in first if k in second}
    return joined, first_problems + second_problems


def wait_serving(api: HttpEndpoint, headers: dict[str, str], deployed_model_id: str, where: str,
                 timeout_s: float) -> tuple[int, tuple[int, int]]:
    """Wait until the endpoint (read on its API host) lists the deployed model and gives it
    traffic: its share of the traffic in percent, and its (min, max) replicas."""
    replicas = (0, 0)

    def check() -> tuple[int | None, str]:
        nonlocal replicas
        try:
            status, endpoint = api.get_json(api.prefix, headers)
        except InfrastructureError as err:
            return None, f"unreachable ({err})"
        if status != 200 or not isinstance(endpoint, dict):
            return None, f"HTTP {status}: {str(endpoint)[:200]}"
        ids = [d.get("id") for d in endpoint.get("deployedModels", [])]
        share = endpoint.get("trafficSplit", {}).get(deployed_model_id, 0)
        for deployed in endpoint.get("deployedModels", []):
            if deployed.get("id") == deployed_model_id:
                resources = deployed.get("dedicatedResources") or {}
                replicas = (int(resources.get("minReplicaCount", 0) or 0),
                            int(resources.get("maxReplicaCount", 0) or 0))
        if deployed_model_id in ids and share > 0:
            return int(share), "serving"
        return None, f"deployed models {ids}, traffic split {endpoint.get('trafficSplit', {})}"

    share = poll(check, timeout_s, f"deployed model {deployed_model_id} is not serving on {where}",
                 interval_s=1.0)
    return share, replicas


def access_token(base: str) -> str:
    """A bearer token for Google APIs (application default credentials): only for https Google
    API hosts; none for a loopback emulator; any other host is refused."""
    from kfp_serve.components.credentials import google_credentials_for

    if not google_credentials_for(base):
        return ""
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as err:  # DefaultCredentialsError, RefreshError
        raise UserError(f"no Google Cloud credentials to call {base} ({err})") from err
    return credentials.token
