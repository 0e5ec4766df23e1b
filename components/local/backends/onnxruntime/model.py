"""Triton Python-based backend that stands in for the onnxruntime backend on CPU machines.

Triton loads this file for every model whose config says ``platform: "onnxruntime_onnx"`` (or
``backend: "onnxruntime"``) when it lies at ``<backend-directory>/onnxruntime/model.py``, so an
unchanged production model repository serves here. Requests that the dynamic batcher hands over
together run as ONE onnxruntime call and are split back per request.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        filename = self.config.get("default_model_filename") or "model.onnx"
        options = ort.SessionOptions()
        threads = int(os.environ.get("KFP_SERVE_ORT_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            os.path.join(version_dir, filename), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i["name"] for i in self.config["input"]]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
            for o in self.config["output"]
        ]
        self.batched = int(self.config.get("max_batch_size", 0)) > 0

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
                results = self.session.run([o for o, _ in self.outputs], feed)
            except Exception as err:
                return [self._error(str(err)) for _ in requests]
            bounds = np.cumsum([0, *sizes])
            return [
                self._response([r[bounds[i]:bounds[i + 1]] for r in results])
                for i in range(len(requests))
            ]
        responses = []
        for feed in arrays:
            try:
                responses.append(self._response(self.session.run([o for o, _ in self.outputs], feed)))
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
        self.session = None
