"""Vertex AI's PredictionService over gRPC, as a dedicated endpoint's host serves it, for the
fake Vertex AI (``FakeVertexApi`` relays HTTP/2 connections on its port here).

Upstream (VERTEX_BEHAVIOUR.md rows 36-38):
- "Use dedicated public endpoints": dedicated endpoints take gRPC; a gRPC request must carry
  the ``x-vertex-ai-endpoint-id`` header "for proper endpoint identification".
- prediction_service.proto ``DirectRawPredict``: "an unary online prediction request to a gRPC
  model server for custom containers": ``method_name`` (``/namespace.Service/Method``) and
  ``input`` bytes, answered by ``output`` bytes.
- model.proto ``ModelContainerSpec.grpc_ports``: gRPC requests go to the first port listed;
  "If you do not specify this field, gRPC requests to the container will be disabled"; Vertex
  AI sends health checks to that port (here the standard grpc.health.v1 check, which
  tritonserver's gRPC server implements: src/grpc/grpc_server.cc RegisterHealthCheck).
- prediction_service.proto ``StreamDirectRawPredict``: a bidirectional stream whose first
  message must name the endpoint and the method; later messages carry input only (their
  method_name has no effect). Here one deployed model (picked by the split) serves a stream.
- Which deployed model answered a DirectRawPredict call is not documented (rawPredict's HTTP
  answer names it in ``X-Vertex-AI-Deployed-Model-Id``): this fake names none.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from google.cloud.aiplatform_v1.types import (
    DirectRawPredictRequest,
    DirectRawPredictResponse,
    StreamDirectRawPredictRequest,
    StreamDirectRawPredictResponse,
)

SERVICE = "google.cloud.aiplatform.v1.PredictionService"
ENDPOINT_HEADER = "x-vertex-ai-endpoint-id"
#: HealthCheckResponse{status: SERVING} (grpc/health/v1/health.proto: field 1, SERVING = 1)
SERVING = b"\x08\x01"


def grpc_health(address: str, timeout_s: float = 10.0) -> str:
    """'' when the gRPC server at ``address`` answers grpc.health.v1 Check with SERVING, else
    what went wrong."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            answer = check(b"", timeout=timeout_s)
        except grpc.RpcError as err:
            return f"{err.code().name}: {err.details()}"
    return "" if answer == SERVING else f"not SERVING ({answer!r})"


class FakePredictionGrpc:
    """DirectRawPredict of a dedicated endpoint, forwarded to the container's gRPC port."""

    def __init__(self, api):
        self.api = api
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        method = grpc.unary_unary_rpc_method_handler(
            self._direct_raw_predict, request_deserializer=DirectRawPredictRequest.deserialize,
            response_serializer=DirectRawPredictResponse.serialize)
        stream = grpc.stream_stream_rpc_method_handler(
            self._stream_direct_raw_predict,
            request_deserializer=StreamDirectRawPredictRequest.deserialize,
            response_serializer=StreamDirectRawPredictResponse.serialize)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"DirectRawPredict": method, "StreamDirectRawPredict": stream}),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.channels: dict[str, grpc.Channel] = {}
        self.calls: list[tuple[str, str]] = []  # (deployed model id, method name)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)
        for channel in self.channels.values():
            channel.close()

    def _route(self, endpoint_name: str, method_name: str, size: int, context) -> str:
        """The gRPC address of the container that serves this call (a deployed model the split
        picks), or the call aborted with Vertex AI's refusal."""
        from fakes.vertex_api import DEDICATED_REQUEST_LIMIT_BYTES

        header = dict(context.invocation_metadata()).get(ENDPOINT_HEADER, "")
        endpoint_id = endpoint_name.rsplit("/", 1)[-1]
        with self.api.lock:
            endpoint = self.api.endpoints.get(endpoint_id)
        if not header:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the {ENDPOINT_HEADER} header is required on a dedicated endpoint")
        if endpoint is None or header != endpoint_id:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Endpoint {endpoint_name!r} (header {header!r}) is not served here")
        if not endpoint.get("dedicatedEndpointEnabled"):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "gRPC predictions are served by dedicated endpoints only")
        if not method_name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "method_name is required")
        if size > DEDICATED_REQUEST_LIMIT_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Request payload size exceeds the"
                          f" limit: {DEDICATED_REQUEST_LIMIT_BYTES} bytes.")
        deployed_id = self.api._pick(endpoint_id)
        with self.api.lock:
            address = self.api.grpc_ports.get(deployed_id or "")
        if deployed_id is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "the endpoint has no deployed model that takes traffic")
        if not address:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"Deployed model {deployed_id} has no grpc_ports: gRPC requests to its"
                          " container are disabled")
        self.calls.append((deployed_id, method_name))
        with self.api.lock:
            return self.channels.setdefault(address, grpc.insecure_channel(address))

    def _direct_raw_predict(self, request, context):
        channel = self._route(request.endpoint, request.method_name, len(request.input), context)
        try:
            output = channel.unary_unary(request.method_name)(request.input, timeout=60)
        except grpc.RpcError as err:  # the model server's own status comes back as it is
            context.abort(err.code(), err.details() or "")
        return DirectRawPredictResponse(output=output)

    def _stream_direct_raw_predict(self, requests, context):
        first = next(requests, None)
        if first is None or not first.endpoint:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first message must contain endpoint and method_name")
        channel = self._route(first.endpoint, first.method_name, len(first.input), context)

        from fakes.vertex_api import DEDICATED_REQUEST_LIMIT_BYTES

        refused = []

        def inputs():
            if first.input:
                yield first.input
            for request in requests:
                if len(request.input) > DEDICATED_REQUEST_LIMIT_BYTES:
                    refused.append(len(request.input))
                    return
                yield request.input

        call = channel.stream_stream(first.method_name)(inputs(), timeout=3600)
        context.add_callback(call.cancel)  # the caller gone: the container's stream ends too
        try:
            for output in call:
                yield StreamDirectRawPredictResponse(output=output)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                context.abort(err.code(), err.details() or "")
        if refused:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Request payload size exceeds the"
                          f" limit: {DEDICATED_REQUEST_LIMIT_BYTES} bytes.")
