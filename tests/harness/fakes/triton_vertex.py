"""Triton's Vertex AI mode, for the fake Vertex AI: what ``tritonserver`` does when Vertex AI
runs it (``AIP_MODE=PREDICTION``), in front of a local Triton (whose build has no Vertex AI
endpoint).

Upstream: triton-inference-server/server ``src/command_line_parser.cc`` (AIP_MODE turns the
Vertex AI endpoint on and plain HTTP/gRPC off; its port is AIP_HTTP_PORT, 8080 by default;
AIP_STORAGE_URI is the repository only when no ``--model-repository`` is given) and
``src/vertex_ai_server.cc`` (the default model must be loaded, or the only one; the health route
answers readiness; the predict route infers the default model, or, with
``X-Vertex-Ai-Triton-Redirect: v2/models/<m>/infer``, that model; redirects to other
read-only endpoints become GETs; anything else is 400).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from fakes.http_fake import FakeServer

REDIRECT_HEADER = "X-Vertex-Ai-Triton-Redirect"
BINARY_CONTENT_TYPE = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([0-9]+))?(?:/(infer|ready|config|stats))?$")


def expand(value: str, env: dict[str, str]) -> str:
    """Vertex AI expands ``$(VAR)`` in args from the variables it sets and ``env``."""
    return re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def triton_options(args: list[str], env: dict[str, str]) -> dict[str, str]:
    """tritonserver's ``--name=value`` options, ``$(VAR)`` expanded as Vertex AI does."""
    expanded = [expand(a, env) for a in args]
    return dict(a[2:].split("=", 1) for a in expanded if a.startswith("--") and "=" in a)


def repository_and_default_model(args: list[str], env: dict[str, str]) -> tuple[str, str]:
    """The repository and default model tritonserver takes from its args and the AIP_* env."""
    options = triton_options(args, env)
    repository = options.get("model-repository") or options.get("model-store") or env.get("AIP_STORAGE_URI", "")
    return repository, options.get("vertex-ai-default-model", "")


class TritonVertexFront:
    """The Vertex AI endpoint of tritonserver, forwarding to ``backend`` (a local Triton)."""

    def __init__(self, backend: str, default_model: str, predict_route: str, health_route: str,
                 metrics_url: str = ""):
        self.backend, self.default_model, self.metrics_url = backend, default_model, metrics_url
        self.predict_route, self.health_route = predict_route, health_route
        def handler(method, path, query, body, headers=None):
            return self._handle(method, path, query, body, headers or {})

        handler.wants_headers = True
        handler.takes_bytes = True  # binary tensors (BINARY_CONTENT_TYPE)
        self.server = FakeServer(handler)
        self.url = self.server.url

    def __enter__(self) -> TritonVertexFront:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    def _call(self, method: str, path: str, body: dict | None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.backend + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return err.code, json.loads(text) if text.startswith("{") else {"error": text}

    def _binary_infer(self, path: str, body: bytes, content_type: str):
        """GetInferenceHeaderLength of vertex_ai_server.cc: the vendor MIME type must start the
        Content-Type, its json-header-size parse and lie within the body; the request goes on
        as Triton's binary tensors, and Triton's answer comes back as it is."""
        if content_type.find(BINARY_CONTENT_TYPE) != 0:
            return 400, {"error": f"expect MIME type for binary data starts with '{BINARY_CONTENT_TYPE}',"
                                  f" got: {content_type}"}
        size = content_type[len(BINARY_CONTENT_TYPE):]
        if not re.fullmatch(r"-?\d+", size):
            return 400, {"error": f"Unable to parse inference header size, got: {size}"}
        if not 0 <= int(size) <= len(body):
            return 400, {"error": f"inference header size should be in range (0, {len(body)}), got: {size}"}
        request = urllib.request.Request(self.backend + path, data=body, method="POST", headers={
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": size})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
                passed = {k: v for k, v in response.headers.items()
                          if k.lower() in ("content-type", "inference-header-content-length")}
                return response.status, data, passed
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return err.code, json.loads(text) if text.startswith("{") else {"error": text}

    def _handle(self, method, path, query, body, headers):
        if path == self.health_route:
            return self._call("GET", "/v2/health/ready", None)
        if path != self.predict_route:
            return 400, {"error": f"no Vertex AI route {path}"}
        redirect = next((v for k, v in headers.items() if k.lower() == REDIRECT_HEADER.lower()), None)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if isinstance(body, bytes):  # not JSON: Triton's binary tensors, or refused
            match = _MODEL.match("/" + (redirect or f"v2/models/{self.default_model}/infer"))
            if not match or match.group(3) != "infer":
                return 400, {"error": "binary data is accepted for inference only"}
            return self._binary_infer("/" + (redirect or f"v2/models/{self.default_model}/infer"),
                                      body, content_type)
        if redirect is None:
            return self._call("POST", f"/v2/models/{self.default_model}/infer", body)
        if method != "POST":
            return 405, {"error": "method not allowed"}
        target = "/" + redirect
        match = _MODEL.match(target)
        if match:
            model, version, kind = match.groups()
            base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
            if kind == "infer":
                return self._call("POST", f"{base}/infer", body)
            return self._call("GET", f"{base}/{kind}" if kind else base, None)
        if target in ("/v2", "/v2/health/ready", "/v2/health/live"):
            return self._call("GET", target, None)
        if target == "/metrics" and self.metrics_url:  # HandleMetrics: the Prometheus page
            with urllib.request.urlopen(self.metrics_url, timeout=30) as response:
                return 200, response.read().decode()
        return 403, {"error": f"Vertex AI redirect blocked: {target}"}
