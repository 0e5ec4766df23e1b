"""Validate a KServe v1 endpoint (KServe's TorchServe runtime, sklearn/xgboost servers ...).

``GET /v1/models/<name>`` for readiness, ``POST /v1/models/<name>:predict`` with
``{"instances": [...]}``. The v1 protocol has no metadata API, so output shapes are checked on
every response instead.
"""

from __future__ import annotations

import json
import time
from http.client import HTTPConnection, HTTPSConnection
from urllib.parse import urlparse

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.endpoint import ValidationResult
from kfp_serve.components.validate.envelopes import instances, parse_predict, shape_problems
from kfp_serve.components.validate.load import LoadLevel, run_requests
from kfp_serve.components.validate.polling import poll
from kfp_serve.components.verify import compare_outputs


def _connection(url: str):
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"endpoint URL {url!r} is not valid; use http://HOST:PORT")
    kind = HTTPSConnection if parsed.scheme == "https" else HTTPConnection
    return lambda: kind(parsed.netloc, timeout=60), parsed.path.rstrip("/")


def _bodies(signature: ModelSignature, golden: GoldenSet, step: int) -> list[bytes]:
    return [json.dumps({"instances": instances(signature, golden.slice(i, i + step).inputs)}).encode()
            for i in range(0, golden.batch_size, step)]


def wait_until_ready(url: str, model_name: str, timeout_s: float) -> None:
    connect, prefix = _connection(url)

    def check() -> tuple[bool | None, str]:
        conn = connect()
        try:
            conn.request("GET", f"{prefix}/v1/models/{model_name}")
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and json.loads(body or b"{}").get("ready") in (True, "True"):
                return True, "ready"
            return None, f"HTTP {response.status}: {body.decode(errors='replace')[:200]}"
        except (OSError, ValueError) as err:
            return None, f"unreachable ({type(err).__name__}: {err})"
        finally:
            conn.close()

    poll(check, timeout_s, f"model {model_name!r} not ready at {url}")


def validate_v1(url: str, model_name: str, signature: ModelSignature, golden: GoldenSet,
                atol: float = 1e-4, rtol: float = 1e-3, max_batch_size: int = 0,
                ready_timeout_s: float = 120.0) -> ValidationResult:
    """Wait for readiness, send the whole golden set as instances, compare every output."""
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    wait_until_ready(url, model_name, ready_timeout_s)
    connect, prefix = _connection(url)
    step = golden.batch_size if max_batch_size <= 0 else max_batch_size
    collected: dict[str, list[np.ndarray]] = {n: [] for n in signature.output_names}
    latencies, problems = [], set()
    conn = connect()
    try:
        for body in _bodies(signature, golden, step):
            began = time.perf_counter()
            conn.request("POST", f"{prefix}/v1/models/{model_name}:predict", body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            latencies.append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                raise InfrastructureError(f"predict on {model_name!r} answered {response.status}:"
                                          f" {data.decode(errors='replace')[:300]}")
            outputs = parse_predict(signature, json.loads(data))
            problems |= shape_problems(signature, outputs)
            for name, value in outputs.items():
                collected[name].append(value)
    except OSError as err:
        raise InfrastructureError(f"cannot reach {url}: {err}") from err
    finally:
        conn.close()
    actual = {n: np.concatenate(v) for n, v in collected.items() if v}
    result = ValidationResult(url, model_name, sorted(problems),
                              compare_outputs(golden.outputs, actual, atol, rtol), latencies,
                              golden.batch_size)
    result.metadata_note = "KServe v1 has no metadata API: output shapes were checked on every response"
    return result


def run_load_v1(url: str, model_name: str, signature: ModelSignature, golden: GoldenSet,
                concurrency: list[int], seconds: float) -> list[LoadLevel]:
    connect, prefix = _connection(url)
    return run_requests(connect, f"{prefix}/v1/models/{model_name}:predict", _bodies(signature, golden, 1),
                        {"Content-Type": "application/json"}, concurrency, seconds)
