"""Build a TensorRT engine from a verified ONNX export, and verify the engine.

Runs only where TensorRT and a CUDA GPU are (the GPU image, ``Dockerfile.gpu``). Everything that
decides *what* to build — optimization profiles from the signature, precision and workspace
checks — is plain Python and tested on CPU machines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.export.result import ExportResult
from kfp_serve.components.formats import FORMATS
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import BATCH, ModelSignature
from kfp_serve.components.staging import staged_directory
from kfp_serve.components.verify import verify_at_batches

ENGINE_FILE = FORMATS["tensorrt"].file  # what Triton's tensorrt_plan backend loads
ONNX_FILE = FORMATS["onnx"].file
TIMING_CACHE_FILE = "timing.cache"
PRECISIONS = ("fp32", "fp16")

Shape = tuple[int, ...]


Profile = dict[str, tuple[Shape, Shape, Shape]]


def optimization_profile(signature: ModelSignature, min_batch: int, opt_batch: int,
                         max_batch: int, dim_ranges: dict[str, list[int]] | None = None) -> Profile:
    """``input name -> (min, opt, max) shape`` for one TensorRT optimization profile.

    The batch dim takes ``min/opt/max_batch``; every other named dynamic dim needs a
    ``[min, opt, max]`` entry in ``dim_ranges`` (e.g. ``{"seq": [1, 128, 512]}``).
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UserError(f"batch sizes must satisfy 1 <= min ({min_batch}) <= opt ({opt_batch})"
                        f" <= max ({max_batch})")
    ranges: dict[str, list[int]] = {BATCH: [min_batch, opt_batch, max_batch], **(dim_ranges or {})}
    for name, values in ranges.items():
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise UserError(f"dim range {name!r}={values} must be [min, opt, max] with"
                            " 1 <= min <= opt <= max")
    profile = {}
    for spec in signature.inputs:
        shapes: list[list[int]] = [[], [], []]
        for dim in spec.dims:
            if isinstance(dim, int):
                values = [dim, dim, dim]
            elif dim in ranges:
                values = ranges[dim]
            else:
                raise UserError(
                    f"input {spec.name!r} has dynamic dim {dim!r}: give its range, e.g."
                    f" dim_ranges={{{dim!r}: [1, 64, 256]}}"
                )
            for i in range(3):
                shapes[i].append(int(values[i]))
        profile[spec.name] = (tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2]))
    return profile


def require_tensorrt_and_gpu() -> Any:
    """Import TensorRT and check for a CUDA GPU; a one-line error says what is missing."""
    try:
        import tensorrt
    except ImportError as err:
        raise InfrastructureError(
            "TensorRT is not installed here: export_tensorrt runs in the GPU image (build"
            " Dockerfile.gpu from an NGC TensorRT or PyTorch base) on a node with an NVIDIA GPU"
        ) from err
    import torch

    if not torch.cuda.is_available():
        raise InfrastructureError(
            "no CUDA GPU is visible: export_tensorrt needs an NVIDIA GPU (request nvidia.com/gpu"
            " for this step, e.g. task.set_accelerator_type('NVIDIA_TESLA_T4'))"
        )
    return tensorrt


def build_engine(trt: Any, onnx_path: Path, profile: Profile,
                 precision: str, workspace_bytes: int, timing_cache: bytes) -> tuple[bytes, bytes]:
    """Build and serialize an engine; returns ``(engine, updated timing cache)``."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise UserError("this GPU has no fast fp16; build with precision='fp32'")
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimization.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InfrastructureError("TensorRT could not build the engine (see the builder log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def engine_runner(trt: Any, engine_bytes: bytes, signature: ModelSignature):
    """A function that runs the engine on named numpy inputs (buffers are torch CUDA tensors)."""
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = []
        for name in signature.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for spec in signature.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            buffer = torch.empty(shape, dtype=getattr(torch, spec.dtype), device="cuda")
            outputs[spec.name] = buffer
            context.set_tensor_address(spec.name, buffer.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise InfrastructureError("TensorRT execution failed")
        stream.synchronize()
        return {name: value.cpu().numpy() for name, value in outputs.items()}

    return run


def export_tensorrt(onnx_dir: str | Path, output_dir: str | Path, precision: str = "fp32",
                    min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32,
                    dim_ranges: dict[str, list[int]] | None = None, workspace_mib: int = 2048,
                    timing_cache_in: str | Path | None = None, atol: float = 1e-3,
                    rtol: float = 1e-3) -> ExportResult:
    """Build ``output_dir/model.plan`` from a verified ONNX export and verify the engine.

    Writes ``timing.cache`` beside the engine so a later build on the same GPU is faster.
    """

    if precision == "int8":
        raise UserError("int8 needs calibration data and is not supported yet; use fp16 or fp32")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not supported; use one of {list(PRECISIONS)}")
    if workspace_mib < 64:
        raise UserError(f"workspace_mib={workspace_mib} is too small; give at least 64 MiB")
    if atol < 0 or rtol < 0:
        raise UserError("atol and rtol must be >= 0")
    source = Path(onnx_dir)
    signature = ModelSignature.load(source)
    golden = GoldenSet.load(source)
    profile = optimization_profile(signature, min_batch, opt_batch, max_batch, dim_ranges)
    if not (source / ONNX_FILE).is_file():
        raise UserError(f"{source / ONNX_FILE} is missing; pass an export_onnx artifact")
    trt = require_tensorrt_and_gpu()
    started = time.perf_counter()
    cache_in = Path(timing_cache_in).read_bytes() if timing_cache_in else b""
    with staged_directory(output_dir) as staging:
        try:
            engine, cache = build_engine(trt, source / ONNX_FILE, profile, precision,
                                         workspace_mib * 1024 * 1024, cache_in)
        except (UserError, InfrastructureError):
            raise
        except Exception as err:
            raise InfrastructureError(f"TensorRT build failed: {first_line(err)}") from err
        (staging / ENGINE_FILE).write_bytes(engine)
        (staging / TIMING_CACHE_FILE).write_bytes(cache)
        in_profile = golden.slice(0, min(golden.batch_size, max_batch))
        comparisons = verify_at_batches(engine_runner(trt, engine, signature), in_profile,
                                        atol, rtol, f"the TensorRT engine ({precision})", signature)
        signature.save(staging)
        golden.save(staging)
    details = {"precision": precision, "batch profile": f"{min_batch}/{opt_batch}/{max_batch}",
               "workspace": f"{workspace_mib} MiB", "tensorrt": trt.__version__}
    return ExportResult("TensorRT", Path(output_dir) / ENGINE_FILE, signature, comparisons, details,
                        time.perf_counter() - started,
                        resized_shapes=in_profile.resized_shapes)
