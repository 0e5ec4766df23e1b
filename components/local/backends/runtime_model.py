"""Triton Python-based backend standing in for the onnxruntime and pytorch backends on CPU.

The same file is laid out as ``<backend-directory>/onnxruntime/model.py`` and
``<backend-directory>/pytorch/model.py``. Triton loads it for every model whose config says
``platform: "onnxruntime_onnx"`` or ``"pytorch_libtorch"``, so an unchanged production model
repository serves here. Tensors are bound by name for ONNX and by position for TorchScript (the
pytorch backend's ``<name>__<index>`` convention). Requests the dynamic batcher hands over
together run as ONE model call and are split back per request.

Threads follow the real backends' config parameters and defaults: ``intra_op_thread_count``
(onnxruntime_backend, README "Model Config Options") and ``INTRA_OP_THREAD_COUNT``
(pytorch_backend, README "Parameters"); absent or 0, each instance uses every core, as
onnxruntime and libtorch do by default. ``$KFP_SERVE_BACKEND_THREADS`` overrides both (tests
that run several servers side by side). This file runs inside Triton's Python stub, not the
suite's package, so it names its model files itself.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

#: the thread parameter each real backend reads from config.pbtxt
THREAD_PARAMETERS = {"onnx": "intra_op_thread_count", "torchscript": "INTRA_OP_THREAD_COUNT"}


def _threads(config, kind):
    """Intra-op threads per instance: the override, else the backend's parameter, else 0
    (the runtime's default: every core)."""
    override = os.environ.get("KFP_SERVE_BACKEND_THREADS")
    if override:
        return int(override)
    parameter = config.get("parameters", {}).get(THREAD_PARAMETERS[kind], {})
    return int(parameter.get("string_value") or 0)


class _Onnx:
    kind = "onnx"

    def __init__(self, path, inputs, outputs, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs, self.outputs = inputs, outputs

    def __call__(self, feed):
        return self.session.run(self.outputs, feed)


class _TorchScript:
    kind = "torchscript"

    def __init__(self, path, inputs, outputs, threads):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.module = torch.jit.load(path, map_location="cpu").eval()
        self.inputs, self.outputs = inputs, outputs

    def __call__(self, feed):
        with self.torch.no_grad():
            result = self.module(*(self.torch.from_numpy(feed[n]) for n in self.inputs))
        if isinstance(result, self.torch.Tensor):
            result = (result,)
        elif not isinstance(result, tuple):
            # as Triton's pytorch backend does (triton-inference-server/pytorch_backend,
            # src/libtorch.cc, ModelInstanceState::Execute): a dict or a list of tensors fails
            # every request
            raise RuntimeError(
                "PyTorch execute failure: output must be of type Tensor, List[str] or Tuple"
                " containing one of these two types. It should not be a List / Dictionary of"
                " Tensors or a Scalar")
        return [r.detach().cpu().numpy() for r in result]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        platform = config.get("platform") or config.get("backend")
        runtime = _TorchScript if platform in ("pytorch_libtorch", "pytorch") else _Onnx
        default_file = "model.pt" if runtime is _TorchScript else "model.onnx"
        filename = config.get("default_model_filename") or default_file
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in config["output"]]
        self.model = runtime(os.path.join(version_dir, filename), self.inputs,
                             [name for name, _ in self.outputs], _threads(config, runtime.kind))
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        try:
            arrays = [
                {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                for r in requests
            ]
        except Exception as err:
            return [self._error(f"bad request: {err}") for _ in requests]
        if self.batched and len(requests) > 1:
            sizes = [a[self.inputs[0]].shape[0] for a in arrays]
            feed = {n: np.concatenate([a[n] for a in arrays]) for n in self.inputs}
            try:
                results = self.model(feed)
            except Exception as err:
                return [self._error(str(err)) for _ in requests]
            bounds = np.cumsum([0, *sizes])
            return [self._response([r[bounds[i]:bounds[i + 1]] for r in results])
                    for i in range(len(requests))]
        responses = []
        for feed in arrays:
            try:
                responses.append(self._response(self.model(feed)))
            except Exception as err:
                responses.append(self._error(str(err)))
        return responses

    def _response(self, results):
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(value.astype(dtype, copy=False)))
            for (name, dtype), value in zip(self.outputs, results)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self):
        self.model = None
