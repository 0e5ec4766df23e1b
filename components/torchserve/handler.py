"""The TorchServe handler kfp-serve ships inside every .mar it builds.

Self-contained on purpose: it runs in TorchServe's Python worker (for example KServe's
TorchServe image), where kfp-serve is not installed, so it needs only numpy and the model's
runtime (torch for TorchScript, onnxruntime for ONNX). It reads ``signature.json`` from the
archive, accepts KServe v1 (``{"instances": [...]}``, also Vertex AI's predict format) and Open
Inference Protocol v2 (``{"inputs": [...]}``) JSON bodies, and runs every request TorchServe
batches together as one model call.

Under TorchServe's JSON service envelope (``service_envelope=json``, as Vertex AI's prebuilt
PyTorch container runs it) the envelope unwraps ``{"instances": [...]}`` itself and the handler
receives one instance per item (pytorch/serve ts/torch_handler/request_envelope/json.py); it
then answers one prediction per instance, which the envelope wraps back.
"""

import json
import os

import numpy as np

_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
           "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


class RequestError(ValueError):
    """A request body that does not fit the signature (answered with HTTP 400)."""


def parse_request(body, signature):
    """``(inputs by name, protocol)`` from one request body (bytes, str or dict)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise RequestError(f"the request body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with 'instances' or 'inputs'")
    specs = {s["name"]: s for s in signature["inputs"]}
    if "inputs" in body:  # Open Inference Protocol v2
        arrays = {}
        for tensor in body["inputs"]:
            spec = specs.get(tensor.get("name"))
            if spec is None:
                raise RequestError(f"unknown input {tensor.get('name')!r}; the model takes {sorted(specs)}")
            try:
                data = np.asarray(tensor["data"], dtype=spec["dtype"])
                arrays[spec["name"]] = data.reshape(tensor["shape"])
            except (KeyError, ValueError, TypeError) as err:
                raise RequestError(f"input {spec['name']!r}: {err}") from err
        protocol = "v2"
    elif "instances" in body:  # KServe v1 / Vertex AI predict
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list")
        if len(specs) == 1 and not isinstance(instances[0], dict):
            name = next(iter(specs))
            instances = [{name: item} for item in instances]
        try:
            arrays = {name: np.asarray([inst[name] for inst in instances], dtype=spec["dtype"])
                      for name, spec in specs.items()}
        except KeyError as err:
            raise RequestError(f"every instance needs the input {err}") from err
        except (ValueError, TypeError) as err:
            raise RequestError(f"instances do not form tensors: {err}") from err
        protocol = "v1"
    else:
        raise RequestError("the request needs 'instances' (KServe v1) or 'inputs' (v2)")
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise RequestError(f"missing input(s) {missing}")
    for name, spec in specs.items():
        dims = spec["dims"]
        shape = arrays[name].shape
        if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            raise RequestError(f"input {name!r} has shape {list(shape)}; the model takes {dims}")
    return arrays, protocol


def format_response(outputs, signature, protocol, model_name):
    """One response body in the request's protocol."""
    if protocol == "v2":
        return {"model_name": model_name, "outputs": [
            {"name": s["name"], "datatype": _DTYPES[s["dtype"]],
             "shape": list(outputs[s["name"]].shape),
             "data": outputs[s["name"]].reshape(-1).tolist()}
            for s in signature["outputs"]]}
    names = [s["name"] for s in signature["outputs"]]
    rows = len(outputs[names[0]])
    if len(names) == 1:
        return {"predictions": outputs[names[0]].tolist()}
    return {"predictions": [{n: outputs[n][i].tolist() for n in names} for i in range(rows)]}


class ModelRunner:
    """Loads ``model.onnx`` or ``model.pt`` from the model folder and runs named inputs."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "signature.json")) as handle:
            self.signature = json.load(handle)
        self.input_names = [s["name"] for s in self.signature["inputs"]]
        self.output_names = [s["name"] for s in self.signature["outputs"]]
        onnx_path = os.path.join(model_dir, "model.onnx")
        if os.path.exists(onnx_path):
            import onnxruntime as ort

            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            self.run = lambda feed: dict(zip(self.output_names,
                                             self.session.run(self.output_names, feed)))
        else:
            import torch

            self.torch = torch
            self.module = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()
            self.run = self._run_torchscript

    def _run_torchscript(self, feed):
        with self.torch.no_grad():
            result = self.module(*(self.torch.from_numpy(feed[n]) for n in self.input_names))
        if isinstance(result, self.torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = [result[n] for n in self.output_names]
        return {n: r.detach().cpu().numpy() for n, r in zip(self.output_names, result)}


class KfpServeHandler:
    def __init__(self):
        self.runner = None
        self.model_name = "model"

    def initialize(self, context):
        self.runner = ModelRunner(context.system_properties.get("model_dir"))
        self.model_name = context.manifest.get("model", {}).get("modelName", "model")

    def is_instances(self, data):
        """True when ``data`` holds instances (a service envelope unwrapped the requests): TorchServe
        hands a request over as a dict with its ``body`` or ``data``, an instance is a value, or a
        dict by input name."""
        first = data[0]
        if not isinstance(first, dict):
            return True
        return set(first) == set(self.runner.input_names) and not {"body", "data"} & set(first)

    def handle_instances(self, instances):
        """One prediction per instance, in order (the envelope regroups them per request)."""
        try:
            arrays, _ = parse_request({"instances": list(instances)}, self.runner.signature)
        except RequestError as err:  # the envelope answers an exception with HTTP 500
            raise ValueError(f"kfp-serve handler: {err}") from err
        outputs = self.runner.run(arrays)
        response = format_response(outputs, self.runner.signature, "v1", self.model_name)
        return response["predictions"]

    def handle(self, data, context):
        if self.is_instances(data):
            return self.handle_instances(data)
        parsed, errors = [], {}
        for index, request in enumerate(data):
            try:
                body = request.get("body") if request.get("body") is not None else request.get("data")
                parsed.append(parse_request(body, self.runner.signature))
            except RequestError as err:
                errors[index] = str(err)
                parsed.append(None)
        good = [p for p in parsed if p is not None]
        results = []
        if good:
            sizes = [len(p[0][self.runner.input_names[0]]) for p in good]
            feed = {n: np.concatenate([p[0][n] for p in good]) for n in self.runner.input_names}
            outputs = self.runner.run(feed)
            bounds = np.cumsum([0, *sizes])
            results = [{n: v[bounds[i]:bounds[i + 1]] for n, v in outputs.items()}
                       for i in range(len(good))]
        responses, next_result = [], iter(results)
        for index, item in enumerate(parsed):
            if item is None:
                if hasattr(context, "set_response_status"):
                    context.set_response_status(code=400, phrase="Bad Request", idx=index)
                responses.append({"error": errors[index]})
            else:
                responses.append(format_response(next(next_result), self.runner.signature, item[1],
                                                 self.model_name))
        return responses


_service = KfpServeHandler()


def handle(data, context):
    """TorchServe's entry point: called with ``data=None`` once when the model loads."""
    if _service.runner is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
