"""Validate Triton on a Vertex AI dedicated endpoint over gRPC: Triton's own protocol
(``inference.GRPCInferenceService``), each call carried by Vertex AI's
``PredictionService.DirectRawPredict`` to the container's gRPC port.

Upstream: Vertex AI's dedicated endpoints page (gRPC on the endpoint's own DNS name, with the
``x-vertex-ai-endpoint-id`` header); prediction_service.proto (``DirectRawPredict``: a method
name ``/namespace.Service/Method`` and the serialized request in, the serialized answer out);
model.proto (``grpc_ports``: gRPC requests go to the first one). tritonclient builds and reads
every message (model readiness, metadata, inference), so what is checked is what a production
Triton gRPC client sends.

A DirectRawPredict answer does not say which deployed model served it (rawPredict's HTTP answer
does), so answers cannot be sifted while traffic is split: the deployed model under test must
take all of the endpoint's traffic, or validation refuses in one line.
"""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.http import HttpEndpoint
from kfp_serve.components.validate.targets import OipGrpcTarget
from kfp_serve.components.validate.vertex import DEDICATED_MAX_REQUEST_BYTES, in_parts, wait_serving

DIRECT_RAW_PREDICT = "/google.cloud.aiplatform.v1.PredictionService/DirectRawPredict"
STREAM_DIRECT_RAW_PREDICT = "/google.cloud.aiplatform.v1.PredictionService/StreamDirectRawPredict"
ENDPOINT_HEADER = "x-vertex-ai-endpoint-id"
TRITON_SERVICE = "/inference.GRPCInferenceService"
#: the unary methods of Triton's service the validator calls (tritonclient's stub names)
TRITON_METHODS = ("ServerLive", "ServerReady", "ModelReady", "ModelMetadata", "ModelInfer")


class DirectRawPredictStub:
    """Stands in for tritonclient's ``GRPCInferenceServiceStub``: each call's request is
    serialized into a ``DirectRawPredictRequest`` for the endpoint, and its ``output`` parsed as
    Triton's answer; gRPC errors (Vertex AI's or Triton's) stay ``grpc.RpcError``, which
    tritonclient turns into its own exception."""

    def __init__(self, channel, endpoint: str, metadata: list[tuple[str, str]]):
        from google.cloud.aiplatform_v1.types import (
            DirectRawPredictRequest,
            DirectRawPredictResponse,
            StreamDirectRawPredictRequest,
            StreamDirectRawPredictResponse,
        )

        self._call = channel.unary_unary(DIRECT_RAW_PREDICT,
                                         request_serializer=DirectRawPredictRequest.serialize,
                                         response_deserializer=DirectRawPredictResponse.deserialize)
        self._stream = channel.stream_stream(
            STREAM_DIRECT_RAW_PREDICT, request_serializer=StreamDirectRawPredictRequest.serialize,
            response_deserializer=StreamDirectRawPredictResponse.deserialize)
        self._request, self._stream_request = DirectRawPredictRequest, StreamDirectRawPredictRequest
        self.endpoint, self.metadata = endpoint, metadata

    def ModelStreamInfer(self, requests, metadata=(), timeout=None, compression=None):
        """Triton's bidirectional stream inside StreamDirectRawPredict: the first message names
        the endpoint and the method, the others carry input only (prediction_service.proto)."""
        def wrapped():
            named = dict(endpoint=self.endpoint, method_name=f"{TRITON_SERVICE}/ModelStreamInfer")
            for request in requests:
                yield self._stream_request(**named, input=request.SerializeToString())
                named = {}

        call = self._stream(wrapped(), metadata=[*self.metadata, *(metadata or ())], timeout=timeout,
                            compression=compression)
        return _StreamAnswers(call)

    def __getattr__(self, method: str):
        if method not in TRITON_METHODS:
            raise AttributeError(f"{method} is not carried through DirectRawPredict here")
        from tritonclient.grpc import service_pb2

        answer = getattr(service_pb2, f"{method}Response")

        def call(request, metadata=(), timeout=None, compression=None):
            wrapped = self._request(endpoint=self.endpoint, input=request.SerializeToString(),
                                    method_name=f"{TRITON_SERVICE}/{method}")
            response = self._call(wrapped, metadata=[*self.metadata, *(metadata or ())],
                                  timeout=timeout, compression=compression)
            return answer.FromString(response.output)

        return call


class _StreamAnswers:
    """The answers of a StreamDirectRawPredict call as Triton's stream answers
    (``ModelStreamInferResponse``), with the call's ``cancel`` and ``is_active`` that
    tritonclient's stream handler uses."""

    def __init__(self, call):
        from tritonclient.grpc import service_pb2

        self.call, self.answer = call, service_pb2.ModelStreamInferResponse

    def __iter__(self):
        return self

    def __next__(self):
        return self.answer.FromString(next(self.call).output)

    def cancel(self) -> bool:
        return self.call.cancel()

    def is_active(self) -> bool:
        return self.call.is_active()


class VertexGrpcTarget(OipGrpcTarget):
    """One deployed model (Triton with ``grpcPorts``) on a dedicated endpoint, over gRPC."""

    def __init__(self, base: str, api_base: str, deployed_model_id: str, model_name: str,
                 signature: ModelSignature, tensor_names: dict[str, str] | None = None,
                 token: str = "", stream: bool = False):
        url = urlparse(base)
        if "/endpoints/" not in url.path:
            raise UserError(f"{base!r} is not a Vertex AI endpoint URL")
        secure = url.scheme == "https"
        address = url.netloc if ":" in url.netloc else f"{url.netloc}:{443 if secure else 80}"
        self.resource = url.path.split("/", 2)[2]  # /v1/projects/...: projects/.../endpoints/ID
        self.metadata = [(ENDPOINT_HEADER, self.resource.rsplit("/", 1)[-1])]
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))
        self.deployed_model_id, self.api = deployed_model_id, HttpEndpoint.parse(api_base or base)
        self.token = token
        super().__init__(f"{'grpcs' if secure else 'grpc'}://{address}", model_name, signature,
                         tensor_names, stream)
        how = "StreamDirectRawPredict" if stream else "DirectRawPredict"
        self.description = f"{address} over gRPC ({how}, deployed model {deployed_model_id})"

    def grpc_client(self):
        """tritonclient's gRPC client of the dedicated host (TLS for https), whose stub wraps
        every call in DirectRawPredict on that client's channel."""
        client = super().grpc_client()
        # tritonclient has no hook for another transport: its stub (``_client_stub``, on its
        # channel ``_channel``) is replaced; tritonclient is pinned and tests/vertex covers this
        client._client_stub = DirectRawPredictStub(client._channel, self.resource, self.metadata)
        return client

    def wait_ready(self, timeout_s: float) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        share, _ = wait_serving(self.api, headers, self.deployed_model_id, self.api.url, timeout_s)
        if share < 100:
            raise UserError(
                f"deployed model {self.deployed_model_id} takes {share} % of the endpoint's traffic,"
                " and a DirectRawPredict answer does not say which deployed model served it, so"
                " over gRPC a canary's answers cannot be told from the others'; validate it with"
                " transport=rest-binary (rawPredict names the deployed model that answered), or"
                " over gRPC once it takes 100 %")
        super().wait_ready(timeout_s)

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        """One request, or rows split in halves until each is under the dedicated endpoint's
        10 MB (the tensors' bytes, which a ModelInferRequest carries raw)."""
        def one(part: dict[str, np.ndarray]):
            size = sum(v.nbytes for v in part.values())
            return size if size > DEDICATED_MAX_REQUEST_BYTES else OipGrpcTarget.infer(self, part)

        return in_parts(one, inputs, DEDICATED_MAX_REQUEST_BYTES)
