"""Which ServingRuntime KServe would pick for a predictor, and whether its Triton loads our ONNX.

Matching follows KServe's ``ModelSpec.GetSupportingRuntimes`` and ``RuntimeSupportsModel``
(pkg/apis/serving/v1beta1/predictor_model.go) and ``ServingRuntimeSpec`` helpers
(pkg/apis/serving/v1alpha1/servingruntime_types.go), kserve/kserve at aaac4e29.
"""

from __future__ import annotations

import re
from typing import Any

from kfp_serve.components.errors import UserError

#: the first Triton release whose onnxruntime (1.18) loads ONNX IR version 10, which
#: torch.onnx writes at opset 18; KServe's default runtime image is 23.05-py3
#: (config/runtimes/kustomization.yaml), whose onnxruntime 1.15 loads IR <= 9
TRITON_FOR_IR10 = (24, 5)
TRITON_FOR_IR10_TAG = "24.05-py3"
_TRITON_TAG = re.compile(r"^(\d{2})\.(\d{2})(?:-|$)")


def supports(runtime: dict[str, Any], model_format: str, protocol: str, explicit: bool) -> bool:
    """KServe's rule: not disabled, single-model, the format listed (with autoSelect unless the
    runtime is named), and the protocol listed, where a runtime without ``protocolVersions``
    takes every protocol."""
    spec = runtime.get("spec", {})
    if spec.get("disabled") or spec.get("multiModel"):
        return False
    protocols = spec.get("protocolVersions") or []
    if protocols and protocol not in protocols:
        return False
    return any(f.get("name") == model_format and (explicit or f.get("autoSelect"))
               for f in spec.get("supportedModelFormats", []))


def choose(runtimes: list[dict[str, Any]], model_format: str, protocol: str,
           named: str | None) -> dict[str, Any] | None:
    """The runtime KServe would use (namespace runtimes before cluster ones, then priority), or
    None; a named runtime that is disabled or does not fit is a one-line error, as KServe's
    controller reports it (RuntimeDisabled / NoSupportingRuntime)."""
    if named:
        for runtime in runtimes:
            if runtime["metadata"]["name"] != named:
                continue
            if runtime.get("spec", {}).get("disabled"):
                raise UserError(f"serving runtime {named!r} is disabled (spec.disabled); enable it"
                                " or pick another runtime")
            if supports(runtime, model_format, protocol, explicit=True):
                return runtime
            raise UserError(f"serving runtime {named!r} does not serve model format"
                            f" {model_format!r} over protocol {protocol!r}")
        return None

    def priority(runtime: dict[str, Any]) -> int:
        formats = runtime["spec"].get("supportedModelFormats", [])
        return -max((f.get("priority") or 0) for f in formats if f.get("name") == model_format)

    fits = [r for r in runtimes if supports(r, model_format, protocol, explicit=False)]
    fits.sort(key=lambda r: (r.get("kind") != "ServingRuntime", priority(r)))
    return fits[0] if fits else None


def triton_release(runtime: dict[str, Any], runtime_version: str | None) -> tuple[int, int] | None:
    """(year, month) of the Triton release the predictor will run, when the runtime is a Triton
    image and its tag (or ``runtimeVersion``, which replaces the tag) is a release tag."""
    images = [c.get("image", "") for c in runtime.get("spec", {}).get("containers", [])]
    image = next((i for i in images if "tritonserver" in i), "")
    if not image:
        return None
    tag = runtime_version or (image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "")
    match = _TRITON_TAG.match(tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


def runtime_version_for_onnx(runtime: dict[str, Any], runtime_version: str | None,
                             ir_version: int | None) -> str | None:
    """The ``runtimeVersion`` the predictor needs so its Triton loads an ONNX model of
    ``ir_version``: None when the runtime already does (or is not a Triton we can read);
    a refusal when the user pinned an older Triton."""
    release = triton_release(runtime, runtime_version)
    if ir_version is None or ir_version < 10 or release is None or release >= TRITON_FOR_IR10:
        return None
    found = f"{release[0]:02d}.{release[1]:02d}"
    if runtime_version:
        raise UserError(f"runtime_version {runtime_version!r} is Triton {found}, whose onnxruntime"
                        f" cannot load this ONNX model (IR version {ir_version}); use"
                        f" {TRITON_FOR_IR10_TAG} or later, or leave runtime_version empty")
    return TRITON_FOR_IR10_TAG
