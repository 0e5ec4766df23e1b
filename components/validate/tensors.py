"""Tensors on the wire: served names, the checks of names/dtypes/shapes against the signature,
and the two JSON codecs the validator speaks.

- :class:`OipJson`: Open Inference Protocol v2 JSON (``{"inputs": [...]}`` in, ``{"outputs":
  [...]}`` out): Triton, KServe v2 runtimes, Vertex AI rawPredict to Triton.
- :class:`Instances`: KServe v1 / Vertex AI predict (``{"instances": [...]}`` in,
  ``{"predictions": [...]}`` out).
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.signature import (
    ModelSignature,
    TensorSpec,
    dtype_from_protocol,
    protocol_dtype,
)


def wire_names(signature: ModelSignature, tensor_names: dict[str, str] | None) -> dict[str, str]:
    """Signature name -> the name the server uses (TorchScript on Triton: ``<name>__<index>``)."""
    given = tensor_names or {}
    return {n: given.get(n, n) for n in (*signature.input_names, *signature.output_names)}


def tritonclient_request(protocol: str, signature: ModelSignature, served: dict[str, str],
                         inputs: dict[str, np.ndarray]) -> tuple[list, list]:
    """tritonclient's ``InferInput`` list and requested outputs for named inputs: the one place
    requests are built for ``grpc`` (protobuf tensors) and ``rest-binary`` (binary tensor data,
    as tritonclient.http sends it)."""
    if protocol == "grpc":
        import tritonclient.grpc as client

        binary: dict = {}
    else:
        import tritonclient.http as client

        binary = {"binary_data": True}
    tensors = []
    for spec in signature.inputs:
        tensor = client.InferInput(served[spec.name], list(inputs[spec.name].shape),
                                   protocol_dtype(spec.dtype))
        tensor.set_data_from_numpy(inputs[spec.name], **binary)
        tensors.append(tensor)
    outputs = [client.InferRequestedOutput(served[n], **binary) for n in signature.output_names]
    return tensors, outputs


def tritonclient_payload(result, described: list[dict]) -> dict:
    """A tritonclient ``InferResult`` as the JSON codec's payload (arrays as ``data``), so every
    protocol's response is checked by the one decoder."""
    return {"outputs": [{**o, "data": result.as_numpy(o["name"])} for o in described]}


def tensor_problems(kind: str, spec: TensorSpec, datatype: str | None,
                    shape: list[int]) -> list[str]:
    """What disagrees between one served tensor (protocol datatype, shape with -1 for dynamic)
    and its spec: the one check behind the metadata API and every response."""
    problems = []
    if datatype is not None and datatype != protocol_dtype(spec.dtype):
        problems.append(f"{kind} {spec.name!r} is {datatype}, signature says {protocol_dtype(spec.dtype)}")
    want = spec.shape_with_unknowns()
    if len(shape) != len(want) or any(w != -1 and s not in (w, -1) for s, w in zip(shape, want)):
        problems.append(f"{kind} {spec.name!r} has shape {list(shape)}, signature says {want}")
    return problems


def check_metadata(metadata: dict, signature: ModelSignature,
                   tensor_names: dict[str, str] | None = None) -> list[str]:
    """Compare a v2 server's model metadata with the signature; returns the problems found."""
    served = wire_names(signature, tensor_names)
    problems = []
    for kind, specs, listed in (("input", signature.inputs, metadata.get("inputs", [])),
                                ("output", signature.outputs, metadata.get("outputs", []))):
        by_name = {t.get("name"): t for t in listed}
        for spec in specs:
            tensor = by_name.get(served[spec.name])
            if tensor is None:
                problems.append(f"{kind} {served[spec.name]!r} is not served (server has {sorted(by_name)})")
                continue
            problems += tensor_problems(kind, spec, tensor.get("datatype"),
                                        [int(d) for d in tensor.get("shape", [])])
        extra = sorted(set(by_name) - {served[s.name] for s in specs})
        if extra:
            problems.append(f"server has {kind}s not in the signature: {extra}")
    return problems


def array_problems(signature: ModelSignature, outputs: dict[str, np.ndarray]) -> list[str]:
    """Decoded outputs whose dtype or shape disagrees with the signature (the check a protocol
    without a metadata API allows)."""
    problems = []
    for spec in signature.outputs:
        if spec.name in outputs:
            value = outputs[spec.name]
            datatype = protocol_dtype(str(value.dtype))
            problems += tensor_problems("output", spec, datatype, list(value.shape))
    return problems


class Codec(Protocol):
    """Encodes named inputs into a request body; decodes a response into named outputs and the
    problems seen in it."""

    def encode(self, inputs: dict[str, np.ndarray]) -> bytes: ...

    def decode(self, payload: dict) -> tuple[dict[str, np.ndarray], list[str]]: ...


class OipJson:
    """Open Inference Protocol v2 with JSON tensors (servers without Triton's binary extension
    answer too)."""

    def __init__(self, signature: ModelSignature, tensor_names: dict[str, str] | None = None):
        self.signature = signature
        self.served = wire_names(signature, tensor_names)

    def encode(self, inputs: dict[str, np.ndarray]) -> bytes:
        return json.dumps({
            "inputs": [{"name": self.served[s.name], "shape": list(inputs[s.name].shape),
                        "datatype": protocol_dtype(s.dtype),
                        "data": inputs[s.name].reshape(-1).tolist()} for s in self.signature.inputs],
            "outputs": [{"name": self.served[n]} for n in self.signature.output_names],
        }).encode()

    def decode(self, payload: dict) -> tuple[dict[str, np.ndarray], list[str]]:
        returned = {t.get("name"): t for t in payload.get("outputs", [])}
        arrays, problems = {}, []
        for spec in self.signature.outputs:
            tensor = returned.get(self.served[spec.name])
            if tensor is None:
                problems.append(f"output {self.served[spec.name]!r} is not in the response"
                                f" (it has {sorted(returned)})")
                continue
            datatype = tensor.get("datatype", protocol_dtype(spec.dtype))
            shape = [int(d) for d in tensor.get("shape", [-1])]
            problems += tensor_problems("output", spec, datatype, shape)
            arrays[spec.name] = np.asarray(tensor.get("data", []),
                                           dtype=dtype_from_protocol(datatype)).reshape(shape)
        return arrays, problems


class Instances:
    """KServe v1 / Vertex AI predict: one value per row, or a dict per row for several inputs;
    predictions likewise. No datatypes travel, so dtypes come from the signature."""

    def __init__(self, signature: ModelSignature):
        self.signature = signature

    def encode(self, inputs: dict[str, np.ndarray]) -> bytes:
        names = self.signature.input_names
        if len(names) == 1:
            rows = inputs[names[0]].tolist()
        else:
            rows = [{n: inputs[n][i].tolist() for n in names} for i in range(len(inputs[names[0]]))]
        return json.dumps({"instances": rows}).encode()

    def decode(self, payload: dict) -> tuple[dict[str, np.ndarray], list[str]]:
        predictions = payload.get("predictions")
        if not isinstance(predictions, list):
            raise InfrastructureError(f"predict answered without a predictions list: {str(payload)[:200]}")
        specs = self.signature.outputs
        if len(specs) == 1:
            arrays = {specs[0].name: np.asarray(predictions, dtype=specs[0].dtype)}
        else:
            try:
                arrays = {s.name: np.asarray([row[s.name] for row in predictions], dtype=s.dtype)
                          for s in specs}
            except (KeyError, TypeError) as err:
                return {}, [f"predictions are not rows by output name ({type(err).__name__}: {err})"]
        return arrays, array_problems(self.signature, arrays)
