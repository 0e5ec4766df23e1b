"""The endpoints the validator calls, one small object per protocol behind one interface.

Every target waits for readiness, reports what the server's metadata says (or None where the
protocol has no metadata API), runs one inference on named inputs and drives a load phase. The
golden loop and the verdict (:mod:`kfp_serve.components.validate.validation`) are written once,
against :class:`Target`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np

from kfp_serve.components.artifacts import KServeInferenceService, ServingEndpoint, VertexEndpoint
from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.polling import poll
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.http import HttpEndpoint, answer_error
from kfp_serve.components.validate.load import LoadLevel, Selector, run_load_grpc, run_requests
from kfp_serve.components.validate.tensors import (
    Codec,
    Instances,
    OipJson,
    check_metadata,
    tritonclient_payload,
    tritonclient_request,
    wire_names,
)


class Target(Protocol):
    """One endpoint under test."""

    signature: ModelSignature
    model_name: str
    description: str  # where, as the report names it
    #: how names/dtypes/shapes were checked where the server publishes no metadata
    response_check_note: str

    def wait_ready(self, timeout_s: float) -> None: ...

    def metadata_problems(self) -> list[str] | None:
        """Problems in the served metadata; None where the server publishes none."""
        ...

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Outputs by signature name, and the problems seen in the response."""
        ...

    def load(self, golden: GoldenSet, concurrency: list[int], seconds: float) -> list[LoadLevel]: ...

    def close(self) -> None: ...


class HttpTarget:
    """A target reached by JSON over HTTP: requests encoded by a codec, posted to one path. The
    load phase sends the same encoded single-sample requests."""

    response_check_note = "names, dtypes and shapes were checked on every response"

    def __init__(self, url: str, model_name: str, signature: ModelSignature, codec: Codec):
        self.endpoint = HttpEndpoint.parse(url)
        self.model_name, self.signature, self.codec = model_name, signature, codec
        self.description = self.endpoint.url
        self._connection = None

    infer_path = ""

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def post(self, body: bytes) -> dict[str, Any]:
        """POST one request on a kept-alive connection; the parsed answer."""
        if self._connection is None:
            self._connection = self.endpoint.connection()
        status, data, _ = self.endpoint.call(self._connection, "POST", self.infer_path, body,
                                             self.headers())
        if status != 200:
            raise answer_error(status, data, f"{self.infer_path} on {self.endpoint.netloc}")
        return json.loads(data)

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        return self.codec.decode(self.post(self.codec.encode(inputs)))

    def request(self, inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
        """One encoded request: its body and headers."""
        return self.codec.encode(inputs), self.headers()

    #: which answers of the load phase are the model under test's (None: every answer)
    load_selector: Selector | None = None

    def load(self, golden: GoldenSet, concurrency: list[int], seconds: float) -> list[LoadLevel]:
        requests = [self.request(golden.slice(i, i + 1).inputs) for i in range(golden.batch_size)]
        return run_requests(self.endpoint.connection, self.infer_path, requests, concurrency,
                            seconds, self.load_selector)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class OipRestTarget(HttpTarget):
    """An Open Inference Protocol v2 server over REST: Triton, KServe v2 runtimes."""

    response_check_note = ("the server publishes no tensor metadata: names, dtypes and shapes"
                           " were checked on every response")

    def __init__(self, url: str, model_name: str, signature: ModelSignature,
                 tensor_names: dict[str, str] | None = None):
        super().__init__(url, model_name, signature, OipJson(signature, tensor_names))
        self.tensor_names = tensor_names
        self.model_path = f"{self.endpoint.prefix}/v2/models/{model_name}"
        self.infer_path = f"{self.model_path}/infer"

    def wait_ready(self, timeout_s: float) -> None:
        def check() -> tuple[bool | None, str]:
            try:
                server, _ = self.endpoint.get_json(f"{self.endpoint.prefix}/v2/health/ready")
                model = self.endpoint.get_json(f"{self.model_path}/ready")[0] if server == 200 else None
            except InfrastructureError as err:  # refused/reset while the server starts
                return None, f"unreachable ({err})"
            return (True if model == 200 else None), (f"server ready={server == 200},"
                                                      f" model {self.model_name!r} ready={model == 200}")

        poll(check, timeout_s, "endpoint not ready")

    def metadata_problems(self) -> list[str] | None:
        status, metadata = self.endpoint.get_json(self.model_path)
        if status != 200 or not isinstance(metadata, dict):
            raise answer_error(status, str(metadata).encode(), f"metadata of {self.model_name!r}")
        # KServe's TorchServe wrapper and some custom servers publish no tensor metadata
        if not (metadata.get("inputs") or metadata.get("outputs")):
            return None
        return check_metadata(metadata, self.signature, self.tensor_names)


class OipBinaryRestTarget(OipRestTarget):
    """Open Inference Protocol v2 over REST with binary tensor data (Triton's binary data
    extension, also served by KServe's ModelServer): a JSON header of
    ``Inference-Header-Content-Length`` bytes, then the raw tensors, both ways; what a
    production client (tritonclient) sends. Bodies are built and read by tritonclient.http."""

    def request(self, inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
        import tritonclient.http as httpclient

        tensors, outputs = tritonclient_request("rest-binary", self.signature, self.codec.served, inputs)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(tensors, outputs)
        headers = {"Content-Type": "application/octet-stream"}
        if json_size is not None:
            headers["Inference-Header-Content-Length"] = str(json_size)
        return body, headers

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        body, headers = self.request(inputs)
        if self._connection is None:
            self._connection = self.endpoint.connection()
        status, data, response = self.endpoint.call(self._connection, "POST", self.infer_path,
                                                    body, headers)
        if status != 200:
            raise answer_error(status, data, f"{self.infer_path} on {self.endpoint.netloc}")
        length = response.getheader("Inference-Header-Content-Length")
        try:
            result = httpclient.InferResult.from_response_body(
                data, header_length=int(length) if length else None)
            payload = tritonclient_payload(result, result.get_response().get("outputs", []))
        except (InferenceServerException, ValueError) as err:
            raise InfrastructureError(f"{self.infer_path} answered a body that is not a binary"
                                      f" tensor response: {first_line(err)}") from err
        return self.codec.decode(payload)


class KServeV1Target(HttpTarget):
    """KServe v1 (KServe's TorchServe runtime, sklearn/xgboost servers): ``GET
    /v1/models/<name>`` for readiness, ``:predict`` with instances; no metadata API."""

    response_check_note = "KServe v1 has no metadata API: output shapes were checked on every response"

    def __init__(self, url: str, model_name: str, signature: ModelSignature):
        super().__init__(url, model_name, signature, Instances(signature))
        self.model_path = f"{self.endpoint.prefix}/v1/models/{model_name}"
        self.infer_path = f"{self.model_path}:predict"

    def wait_ready(self, timeout_s: float) -> None:
        def check() -> tuple[bool | None, str]:
            try:
                status, body = self.endpoint.get_json(self.model_path)
            except InfrastructureError as err:
                return None, f"unreachable ({err})"
            ready = status == 200 and isinstance(body, dict) and body.get("ready") in (True, "True")
            return (True if ready else None), f"HTTP {status}: {str(body)[:200]}"

        poll(check, timeout_s, f"model {self.model_name!r} not ready at {self.endpoint.url}")

    def metadata_problems(self) -> list[str] | None:
        return None


class StreamingClient:
    """A tritonclient gRPC client with one bidirectional stream open (Triton's
    ``ModelStreamInfer``, what ``perf_analyzer --streaming`` drives): each request goes on the
    stream and its answer is waited for; a model that is not decoupled answers each request
    once, in order. Readiness and metadata stay unary calls of the same client."""

    def __init__(self, client):
        import queue

        self.client, self.answers = client, queue.Queue()
        client.start_stream(lambda result, error: self.answers.put((result, error)))

    def infer(self, model_name: str, inputs: list, outputs: list | None = None, client_timeout: float = 60):
        import queue

        from tritonclient.utils import InferenceServerException

        self.client.async_stream_infer(model_name, inputs, outputs=outputs)
        try:
            result, error = self.answers.get(timeout=client_timeout)
        except queue.Empty:
            raise InferenceServerException(f"no answer on the stream within {client_timeout} s") from None
        if error is not None:
            raise error
        return result

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def close(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


class OipGrpcTarget:
    """An Open Inference Protocol v2 server over gRPC (tritonclient, protobuf tensors); with
    ``stream``, inferences go on a bidirectional stream (``ModelStreamInfer``) per client."""

    response_check_note = OipRestTarget.response_check_note

    def __init__(self, url: str, model_name: str, signature: ModelSignature,
                 tensor_names: dict[str, str] | None = None, stream: bool = False):
        scheme, _, target = url.rpartition("://")
        target = target.rstrip("/")
        if not target or "/" in target:
            raise UserError(f"gRPC endpoint {url!r} is not valid; use HOST:PORT")
        if scheme and ":" not in target.rsplit("]", 1)[-1]:
            # a URL without a port (KServe's cluster-local address): the scheme's port, where
            # Knative serves h2c on 80; a bare host would make gRPC dial 443
            target += ":80" if scheme == "http" else ":443"
        self.address, self.model_name, self.signature = target, model_name, signature
        self.tensor_names = tensor_names
        self.served = wire_names(signature, tensor_names)
        self.codec = OipJson(signature, tensor_names)
        self.description = url + (" (streaming)" if stream else "")
        self.ssl, self.stream = url.startswith("grpcs://"), stream
        self.client = self.make_client()

    def grpc_client(self):
        """A tritonclient gRPC client of the server."""
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.address, ssl=self.ssl)

    def make_client(self):
        """The client of one caller (the golden loop, each load-phase thread): streaming where
        asked."""
        client = self.grpc_client()
        return StreamingClient(client) if self.stream else client

    def wait_ready(self, timeout_s: float) -> None:
        def check() -> tuple[bool | None, str]:
            try:
                server = self.client.is_server_ready()
                model = server and self.client.is_model_ready(self.model_name)
            except Exception as err:  # unavailable while the server starts
                return None, f"unreachable ({type(err).__name__}: {first_line(err)})"
            return (True if model else None), (f"server ready={server},"
                                               f" model {self.model_name!r} ready={model}")

        poll(check, timeout_s, "endpoint not ready")

    def metadata_problems(self) -> list[str] | None:
        metadata = self.client.get_model_metadata(self.model_name, as_json=True)
        if not (metadata.get("inputs") or metadata.get("outputs")):
            return None
        return check_metadata(metadata, self.signature, self.tensor_names)

    def _request(self, inputs: dict[str, np.ndarray]) -> tuple[list, list]:
        return tritonclient_request("grpc", self.signature, self.served, inputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        from tritonclient.utils import InferenceServerException

        request, outputs = self._request(inputs)
        try:
            result = self.client.infer(self.model_name, request, outputs=outputs, client_timeout=60)
        except InferenceServerException as err:
            raise InfrastructureError(f"inference request to {self.model_name!r} failed: {err}") from err
        # decoded as the JSON codec decodes (its "data" may be an array): one check of names,
        # datatypes and shapes for every protocol
        response = result.get_response(as_json=True)
        return self.codec.decode(tritonclient_payload(result, response.get("outputs", [])))

    def load(self, golden: GoldenSet, concurrency: list[int], seconds: float) -> list[LoadLevel]:
        requests = [self._request(golden.slice(i, i + 1).inputs)[0] for i in range(golden.batch_size)]
        return run_load_grpc(self.make_client, self.model_name, requests,
                             self._request(golden.inputs)[1], concurrency, seconds)

    def close(self) -> None:
        self.client.close()


#: how tensors travel: JSON over REST, binary tensor data over REST, protobuf over gRPC (unary,
#: or on a bidirectional stream); auto picks binary where JSON cannot carry a tensor (see
#: :func:`resolve_transport`)
TRANSPORTS = ("auto", "rest", "rest-binary", "grpc", "grpc-stream")
#: dtypes Triton's JSON tensors do not carry: it answers "... use the binary data format"
#: (triton-inference-server/server docs/protocol/extension_binary_data.md)
BINARY_ONLY_DTYPES = ("float16",)


def json_only(endpoint: ServingEndpoint | KServeInferenceService | VertexEndpoint) -> bool:
    """Endpoints that take JSON only: KServe v1 and TorchServe behind Vertex AI's predict."""
    return endpoint.protocol in ("v1", "vertex-predict")


def resolve_transport(transport: str, signature: ModelSignature, json_only: bool) -> str:
    """``auto``: binary tensors over REST where an input or output has a dtype JSON cannot carry
    (float16), else JSON; an endpoint that speaks only JSON (KServe v1, Vertex AI predict) gets
    JSON."""
    if transport != "auto":
        return transport
    binary = any(s.dtype in BINARY_ONLY_DTYPES for s in (*signature.inputs, *signature.outputs))
    return "rest-binary" if binary and not json_only else "rest"


def target_for(endpoint: ServingEndpoint | KServeInferenceService | VertexEndpoint,
               signature: ModelSignature, transport: str = "auto") -> Target:
    """The target an endpoint artifact's record describes.

    ``ServingEndpoint`` / ``KServeInferenceService``: an Open Inference Protocol v2 server (a
    KServe canary is called through its tagged URL, so the canary itself is checked); with
    ``transport="grpc"`` (or a ``grpc-v2`` InferenceService) over gRPC, with
    ``transport="rest-binary"`` over REST with binary tensor data. Protocol ``v1``: KServe v1.
    ``VertexEndpoint``: the deployed model under test, through rawPredict or predict, or with
    ``transport="grpc"`` Triton's gRPC through DirectRawPredict.
    """
    if transport not in TRANSPORTS:
        raise UserError(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    protocol = endpoint.protocol
    vertex = isinstance(endpoint, VertexEndpoint)
    transport = resolve_transport(transport, signature, json_only(endpoint))
    stream = transport == "grpc-stream"
    grpc = transport in ("grpc", "grpc-stream") or protocol == "grpc-v2"
    if grpc and vertex and protocol == "vertex-raw":
        if not endpoint.grpc:
            raise UserError(f"transport={transport}: this deployed model's container takes no gRPC"
                            " (it was deployed without grpc=True); redeploy with"
                            " deploy_vertex(grpc=True, dedicated_endpoint=True), or validate with"
                            " transport=rest-binary")
        from kfp_serve.components.validate.vertex import access_token
        from kfp_serve.components.validate.vertex_grpc import VertexGrpcTarget

        return VertexGrpcTarget(endpoint.predict_base, endpoint.api_base, endpoint.deployed_model_id,
                                endpoint.model_name, signature, endpoint.tensor_names or None,
                                access_token(endpoint.predict_base), stream)
    if (grpc and vertex) or (transport != "rest" and protocol in ("v1", "vertex-predict")):
        what = "gRPC" if grpc else "binary tensor (rest-binary)"
        raise UserError(f"{what} validation needs an Open Inference Protocol v2 server (Triton,"
                        " through rawPredict on Vertex AI); this endpoint speaks JSON over REST"
                        " (transport=rest)")
    tensor_names = endpoint.tensor_names or None
    if vertex:
        from kfp_serve.components.validate.vertex import VertexTarget, access_token

        return VertexTarget(endpoint.predict_base, endpoint.deployed_model_id, protocol,
                            endpoint.model_name, signature, tensor_names,
                            access_token(endpoint.predict_base), endpoint.api_base,
                            binary=transport == "rest-binary")
    # inside the cluster (KServe: the cluster-local address, not status.url on the ingress
    # domain); while a canary takes part of the traffic, the canary itself, not the mix
    url = endpoint.url
    grpc_url = ""
    if isinstance(endpoint, KServeInferenceService):
        url = endpoint.validation_url or endpoint.canary_url or endpoint.url
    else:
        grpc_url = endpoint.grpc_url
    if protocol == "v1":
        return KServeV1Target(url, endpoint.model_name, signature)
    if grpc:
        return OipGrpcTarget(grpc_url or url, endpoint.model_name, signature, tensor_names, stream)
    rest = OipBinaryRestTarget if transport == "rest-binary" else OipRestTarget
    return rest(url, endpoint.model_name, signature, tensor_names)
