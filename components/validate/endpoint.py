"""Validate a live Open Inference Protocol v2 endpoint against a model's signature and golden set.

Works with any v2 server (Triton, KServe runtimes, the local runtime) through tritonclient's HTTP
client, with JSON tensors so servers without Triton's binary extension answer too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature, dtype_from_protocol, protocol_dtype
from kfp_serve.components.validate.polling import poll
from kfp_serve.components.verify import OutputComparison, compare_outputs, markdown_table


@dataclass
class ValidationResult:
    """Everything the validation found; ``passed`` is the verdict."""

    url: str
    model_name: str
    metadata_problems: list[str]
    comparisons: list[OutputComparison]
    request_latencies_ms: list[float] = field(default_factory=list)
    samples: int = 0
    load: list = field(default_factory=list)  # LoadLevel per concurrency, when measured
    slo_problems: list[str] = field(default_factory=list)
    metadata_note: str = ""  # how the metadata was checked, where not by the metadata API

    @property
    def passed(self) -> bool:
        return (not self.metadata_problems and not self.slo_problems
                and all(c.passed for c in self.comparisons))

    def failure_line(self) -> str:
        """One line naming every problem ('' when passed)."""
        problems = list(self.metadata_problems)
        problems += [f"{c.name}: {c.problem}" for c in self.comparisons if not c.passed]
        problems += self.slo_problems
        return "; ".join(problems)

    def markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Endpoint validation: {verdict}",
            "",
            f"- endpoint: `{self.url}`, model `{self.model_name}`",
            f"- golden samples: {self.samples} in {len(self.request_latencies_ms)} request(s)",
        ]
        if self.request_latencies_ms:
            lat = np.asarray(self.request_latencies_ms)
            lines.append(
                f"- request latency: median {np.median(lat):.2f} ms, max {lat.max():.2f} ms"
            )
        lines += ["", "## Metadata", ""]
        if self.metadata_problems:
            lines += [f"- {p}" for p in self.metadata_problems]
        else:
            lines.append("- names, dtypes and shapes match the signature")
        if self.metadata_note:
            lines.append(f"- {self.metadata_note}")
        lines += ["", "## Golden outputs", "", markdown_table(self.comparisons), ""]
        if self.load:
            from kfp_serve.components.validate.load import markdown_table as load_table

            lines += ["## Load", "", load_table(self.load), ""]
            lines += [f"- SLO: {p}" for p in self.slo_problems] or ["- all SLO gates met"]
            lines.append("")
        return "\n".join(lines)

    def html(self) -> str:
        """A standalone HTML report: verdict, latency chart, comparison and load tables."""
        import html as escape

        from kfp_serve.components.validate.load import latency_svg
        from kfp_serve.components.validate.load import markdown_table as load_table

        def table(markdown: str) -> str:
            rows = [r.strip("|").split("|") for r in markdown.splitlines() if not r.startswith("|---")]
            head = "".join(f"<th>{escape.escape(c.strip())}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{escape.escape(c.strip().strip('`'))}</td>" for c in r)
                           + "</tr>" for r in rows[1:])
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        verdict = "PASSED" if self.passed else "FAILED"
        problems = "".join(f"<li>{escape.escape(p)}</li>" for p in
                           [*self.metadata_problems, *self.slo_problems]) or "<li>none</li>"
        load = (f"<h2>Latency under load</h2>{latency_svg(self.load)}{table(load_table(self.load))}"
                if self.load else "")
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Endpoint validation</title>"
            "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
            "margin:12px 0}td,th{border:1px solid #bbb;padding:4px 8px}"
            ".PASSED{color:#1a7f37}.FAILED{color:#cf222e}</style></head><body>"
            f"<h1>Endpoint validation: <span class='{verdict}'>{verdict}</span></h1>"
            f"<p>{escape.escape(self.url)} — model <code>{escape.escape(self.model_name)}</code>,"
            f" {self.samples} golden samples</p><h2>Problems</h2><ul>{problems}</ul>"
            f"<h2>Golden outputs</h2>{table(markdown_table(self.comparisons))}{load}</body></html>"
        )


def _client(url: str, grpc: bool = False):
    """tritonclient's HTTP client, or its gRPC client (``grpc``: ``url`` is HOST:PORT or
    grpc://HOST:PORT)."""
    if grpc:
        import tritonclient.grpc as grpcclient

        target = url.split("://", 1)[-1].rstrip("/")
        if not target or "/" in target:
            raise UserError(f"gRPC endpoint {url!r} is not valid; use HOST:PORT")
        return grpcclient.InferenceServerClient(target, ssl=url.startswith("grpcs://"))
    import tritonclient.http as httpclient

    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"endpoint URL {url!r} is not valid; use http://HOST:PORT")
    return httpclient.InferenceServerClient(
        parsed.netloc, ssl=parsed.scheme == "https", connection_timeout=10, network_timeout=60
    )


def wait_until_ready(client, model_name: str, timeout_s: float) -> None:
    """Poll server and model readiness; the timeout error says which was not ready."""
    def check() -> tuple[bool | None, str]:
        try:
            server_ready = client.is_server_ready()
            model_ready = server_ready and client.is_model_ready(model_name)
        except Exception as err:  # connection refused/reset while the server starts
            return None, f"unreachable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        return (True if model_ready else None,
                f"server ready={server_ready}, model {model_name!r} ready={model_ready}")

    poll(check, timeout_s, "endpoint not ready")


def check_metadata(metadata: dict, signature: ModelSignature,
                   tensor_names: dict[str, str] | None = None) -> list[str]:
    """Compare the server's model metadata with the signature; returns the problems found.

    ``tensor_names`` maps signature names to served names where they differ (TorchScript's
    ``<name>__<index>`` convention).
    """
    served_name = (tensor_names or {}).get
    problems = []
    for kind, specs, served in (
        ("input", signature.inputs, metadata.get("inputs", [])),
        ("output", signature.outputs, metadata.get("outputs", [])),
    ):
        by_name = {t.get("name"): t for t in served}
        for spec in specs:
            name = served_name(spec.name, spec.name)
            tensor = by_name.get(name)
            if tensor is None:
                problems.append(f"{kind} {name!r} is not served (server has {sorted(by_name)})")
                continue
            if tensor.get("datatype") != protocol_dtype(spec.dtype):
                problems.append(f"{kind} {spec.name!r} is {tensor.get('datatype')},"
                                f" signature says {protocol_dtype(spec.dtype)}")
            shape = [int(d) for d in tensor.get("shape", [])]
            want = spec.shape_with_unknowns()
            if len(shape) != len(want) or any(
                w != -1 and s not in (w, -1) for s, w in zip(shape, want)
            ):
                problems.append(f"{kind} {spec.name!r} has shape {shape}, signature says {want}")
        extra = sorted(set(by_name) - {served_name(s.name, s.name) for s in specs})
        if extra:
            problems.append(f"server has {kind}s not in the signature: {extra}")
    return problems


def infer(client, model_name: str, signature: ModelSignature, inputs: dict[str, np.ndarray],
          tensor_names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """One inference request (JSON tensors over HTTP, protobuf over gRPC); returns outputs by
    signature name."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    grpc = isinstance(client, grpcclient.InferenceServerClient)
    module = grpcclient if grpc else httpclient
    extra = {} if grpc else {"binary_data": False}

    served = {n: (tensor_names or {}).get(n, n) for n in (*signature.input_names,
                                                         *signature.output_names)}
    request_inputs = []
    for spec in signature.inputs:
        tensor = module.InferInput(served[spec.name], list(inputs[spec.name].shape),
                                   protocol_dtype(spec.dtype))
        tensor.set_data_from_numpy(inputs[spec.name], **extra)
        request_inputs.append(tensor)
    outputs = [module.InferRequestedOutput(served[n], **extra) for n in signature.output_names]
    try:
        result = client.infer(model_name, request_inputs, outputs=outputs)
    except InferenceServerException as err:
        raise InfrastructureError(f"inference request to {model_name!r} failed: {err}") from err
    response = result.get_response(as_json=True) if grpc else result.get_response()
    returned = {o["name"]: o for o in response.get("outputs", [])}
    arrays = {}
    for name in signature.output_names:
        if served[name] in returned:
            dtype = dtype_from_protocol(returned[served[name]]["datatype"])
            arrays[name] = np.asarray(result.as_numpy(served[name])).astype(dtype, copy=False)
    return arrays


def validate_endpoint(url: str, model_name: str, signature: ModelSignature, golden: GoldenSet,
                      atol: float = 1e-4, rtol: float = 1e-3, max_batch_size: int = 0,
                      ready_timeout_s: float = 120.0,
                      tensor_names: dict[str, str] | None = None,
                      grpc: bool = False) -> ValidationResult:
    """Wait for readiness, check metadata, send the whole golden set and compare the outputs.

    Args:
        url: Base URL of the v2 endpoint (``http://HOST:PORT``).
        model_name: The served model's name.
        signature: The signature the model was exported with.
        golden: Golden inputs and reference outputs.
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value.
        max_batch_size: Largest batch per request (0: the whole golden set in one request).
        ready_timeout_s: How long to wait for server and model readiness.
        tensor_names: Signature name -> served name, where they differ.
        grpc: Use the gRPC protocol (``url`` is HOST:PORT).
    """
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    client = _client(url, grpc)
    try:
        wait_until_ready(client, model_name, ready_timeout_s)
        metadata = (client.get_model_metadata(model_name, as_json=True) if grpc
                    else client.get_model_metadata(model_name))
        # KServe's TorchServe wrapper and some custom servers publish no tensor metadata: then
        # names, dtypes and shapes are checked on the responses instead
        published = bool(metadata.get("inputs") or metadata.get("outputs"))
        problems = check_metadata(metadata, signature, tensor_names) if published else []
        step = golden.batch_size if max_batch_size <= 0 else max_batch_size
        collected: dict[str, list[np.ndarray]] = {n: [] for n in signature.output_names}
        latencies = []
        for start in range(0, golden.batch_size, step):
            part = golden.slice(start, start + step)
            began = time.perf_counter()
            outputs = infer(client, model_name, signature, part.inputs, tensor_names)
            latencies.append((time.perf_counter() - began) * 1000)
            for name, value in outputs.items():
                collected[name].append(value)
    finally:
        client.close()
    actual = {n: np.concatenate(v) for n, v in collected.items() if v}
    comparisons = compare_outputs(golden.outputs, actual, atol, rtol)
    result = ValidationResult(url, model_name, problems, comparisons, latencies, golden.batch_size)
    if not published:
        from kfp_serve.components.validate.envelopes import shape_problems

        found = shape_problems(signature, actual)
        found |= {f"output {s.name!r} is {actual[s.name].dtype}, signature says {s.dtype}"
                  for s in signature.outputs if s.name in actual and actual[s.name].dtype != s.dtype}
        result.metadata_problems = sorted(found)
        result.metadata_note = ("the server publishes no tensor metadata: names, dtypes and shapes"
                                " were checked on every response")
    return result
