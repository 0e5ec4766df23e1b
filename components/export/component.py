"""KFP wrappers: export a model artifact to serving formats, verified, and profile them."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def export_onnx(
    model: Input[Model],
    onnx_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    opset: int = 18,
    exporter: str = "auto",
    atol: float = 1e-4,
    rtol: float = 1e-3,
):
    """Exports a model artifact to ONNX and verifies it with onnxruntime.

    Checks the file with onnx.checker and its inputs/outputs against the signature, then runs
    the golden set through onnxruntime (CPU) at two batch sizes (and a second size of the other
    dynamic dims, e.g. the sequence length) and compares every output with the eager model.
    Fails, writing nothing, when any output is out of tolerance or NaN/Inf.
    Models over 2 GiB keep their weights in ``model.onnx.data`` beside the graph.

    Args:
        model: A TorchModel artifact (``model.pt2`` and/or ``model.ts``, ``signature.json``,
            ``golden.npz``), as save_torch_model writes it.
        opset: ONNX opset, 18-20.
        exporter: ``auto`` (``dynamo`` where the artifact has a torch.export program, else
            ``legacy``), ``dynamo`` (torch.export-based) or ``legacy`` (TorchScript-based, from
            the artifact's ``model.ts``).
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value (``|a - r| <= atol + rtol * |r|``).

    Returns:
        onnx_model: An OnnxModel artifact: ``model.onnx`` with the signature and golden set.
        metrics: Max absolute and relative error per output and batch size, export seconds.
        report: The verification tables.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.export.component_io import write_export_outputs
    from kfp_serve.components.export.onnx_export import export_onnx as export
    from kfp_serve.components.formats import onnx_ir_version
    from kfp_serve.components.storage.fetch import local_folder

    artifacts.read(model, artifacts.TorchModel)
    result = export(local_folder(model), onnx_model.path, opset=opset, atol=atol, rtol=rtol,
                    exporter=exporter)
    write_export_outputs(result, metrics, report)
    artifacts.mark(onnx_model, artifacts.OnnxModel(
        signature=result.signature, export=result.details, opset=opset,
        exporter=result.details["exporter"], onnx_ir_version=onnx_ir_version(result.path)))


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def export_torchscript(
    model: Input[Model],
    torchscript_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    method: str = "auto",
    freeze: bool = True,
    optimize_for_inference: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
):
    """Exports a model artifact to TorchScript (``model.pt``) and verifies it.

    ``saved`` uses the artifact's ``model.ts`` (traced from the eager model and checked at a
    second size, or scripted, when the model was saved); ``trace_program`` traces the exported
    ``model.pt2`` (which often fixes the batch size); ``auto`` is ``saved`` where there is one.
    The output returns a tuple in signature order, as Triton's pytorch backend needs. The saved
    file is reloaded and run on the golden set at two batch sizes (and a second size of the
    other dynamic dims), so a module that fixed a size fails here and not in production.

    Args:
        model: A TorchModel artifact.
        method: ``auto``, ``saved`` (the artifact's model.ts) or ``trace_program`` (a trace of
            the exported model.pt2).
        freeze: Inline weights and attributes (torch.jit.freeze).
        optimize_for_inference: Also apply torch.jit.optimize_for_inference (CPU-specific).
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value.

    Returns:
        torchscript_model: A TorchScriptModel artifact: ``model.pt``, signature and golden set.
        metrics: Max absolute and relative error per output and batch size, export seconds.
        report: The verification tables.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.export.component_io import write_export_outputs
    from kfp_serve.components.export.torchscript_export import export_torchscript as export
    from kfp_serve.components.storage.fetch import local_folder

    artifacts.read(model, artifacts.TorchModel)
    result = export(local_folder(model), torchscript_model.path, method=method, freeze=freeze,
                    optimize_for_inference=optimize_for_inference, atol=atol, rtol=rtol)
    write_export_outputs(result, metrics, report)
    artifacts.mark(torchscript_model, artifacts.TorchScriptModel(
        signature=result.signature, export=result.details, method=result.details["method"]))


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def export_model(
    model: Input[Model],
    exported_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    serving_format: str = "auto",
    exporter: str = "auto",
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
):
    """Exports a model artifact to the format it will be served in, verified.

    ``auto`` serves ONNX where an ONNX export passes (the dynamo exporter, then the legacy one
    where dynamo fails) and TorchScript where none does (a model with no ONNX route, such as
    packed sequences), saying why in the report. Verification is export_onnx's or
    export_torchscript's: two batch sizes, a second size of the other dynamic dims.

    Args:
        model: A TorchModel artifact, as save_torch_model writes it.
        serving_format: ``auto``, ``onnx`` or ``torchscript``.
        exporter: ONNX exporter: ``auto``, ``dynamo`` or ``legacy`` (see export_onnx).
        opset: ONNX opset, 18-20.
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value.

    Returns:
        exported_model: An OnnxModel or TorchScriptModel artifact; build_triton_repository
            and validate_endpoint take either.
        metrics: Max absolute and relative error per output and batch size, export seconds.
        report: The verification tables, the exporter and why a format was chosen.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.export.component_io import write_export_outputs
    from kfp_serve.components.export.serving import export_for_serving
    from kfp_serve.components.formats import onnx_ir_version
    from kfp_serve.components.storage.fetch import local_folder

    artifacts.read(model, artifacts.TorchModel)
    result = export_for_serving(local_folder(model), exported_model.path, serving_format=serving_format,
                                exporter=exporter, opset=opset, atol=atol, rtol=rtol)
    write_export_outputs(result, metrics, report)
    if result.model_format == "ONNX":
        record = artifacts.OnnxModel(
            signature=result.signature, export=result.details, opset=opset,
            exporter=result.details["exporter"], onnx_ir_version=onnx_ir_version(result.path))
    else:
        record = artifacts.TorchScriptModel(signature=result.signature, export=result.details,
                                            method=result.details["method"])
    artifacts.mark(exported_model, record)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def export_tensorrt(
    onnx_model: Input[Model],
    tensorrt_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    dim_ranges: Optional[Dict[str, List[int]]] = None,
    workspace_mib: int = 2048,
    atol: float = 1e-3,
    rtol: float = 1e-3,
):
    """Builds a TensorRT engine (``model.plan``) from a verified ONNX export and verifies it.

    Needs the GPU image (``Dockerfile.gpu``) and an NVIDIA GPU for this step; elsewhere it fails
    at once saying so. The optimization profile comes from the signature: the batch dim from
    min/opt/max_batch, other dynamic dims from ``dim_ranges``. A timing cache is saved beside
    the engine.

    Args:
        onnx_model: An OnnxModel artifact (from export_onnx).
        precision: ``fp32`` or ``fp16``.
        min_batch: Smallest batch the engine accepts.
        opt_batch: Batch size TensorRT tunes for.
        max_batch: Largest batch the engine accepts.
        dim_ranges: ``[min, opt, max]`` per other dynamic dim, e.g. ``{"seq": [1, 128, 512]}``.
        workspace_mib: Builder workspace limit in MiB.
        atol: Absolute tolerance per value (fp16 needs a looser one).
        rtol: Relative tolerance per value.

    Returns:
        tensorrt_model: A TensorRTModel artifact: ``model.plan``, ``timing.cache``, signature and
            golden set.
        metrics: Max absolute and relative error per output and batch size, build seconds.
        report: The verification tables.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.export.component_io import write_export_outputs
    from kfp_serve.components.export.tensorrt_export import export_tensorrt as export

    artifacts.read(onnx_model, artifacts.OnnxModel)
    result = export(onnx_model.path, tensorrt_model.path, precision=precision, min_batch=min_batch,
                    opt_batch=opt_batch, max_batch=max_batch, dim_ranges=dim_ranges,
                    workspace_mib=workspace_mib, atol=atol, rtol=rtol)
    write_export_outputs(result, metrics, report)
    artifacts.mark(tensorrt_model, artifacts.TensorRTModel(
        signature=result.signature, export=result.details, precision=precision, max_batch=max_batch))


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def profile_formats(
    model: Input[Model],
    onnx_model: Input[Model],
    torchscript_model: Input[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    batch_sizes: List[int] = [1, 8, 32],  # noqa: B006 (KFP reads the default; never mutated)
    seconds_per_batch: float = 2.0,
    threads: int = 0,
    budget_s: Optional[float] = None,
) -> str:
    """Measures latency and throughput of eager PyTorch, TorchScript and ONNX Runtime.

    onnxruntime and torch each run in their own process on the golden inputs (repeated to each
    batch size). Each measurement stops as soon as it is stable (the throughputs of its last
    three 50 ms windows within 5%), at most after seconds_per_batch; p50/p95 latency, samples/s
    and the spread go to the metrics and a table. Formats closer than 10% (or than their
    measured spreads) at the largest batch are a tie, which goes to ONNX, so the same model gets
    the same recommendation run after run.

    Args:
        model: The TorchModel artifact (the eager baseline).
        onnx_model: Its OnnxModel export.
        torchscript_model: Its TorchScriptModel export.
        batch_sizes: Batch sizes to measure.
        seconds_per_batch: Most measuring time per format and batch size (a stable
            measurement stops earlier).
        threads: Intra-op threads per runtime (0: the runtime's default).
        budget_s: Most measuring time for all formats and batch sizes together (empty: no
            budget beyond seconds_per_batch each).

    Returns:
        metrics: ``<format>_b<batch>_samples_per_s`` and ``_p50_ms`` for every measurement.
        report: The table, the recommendation and why (a clear winner, or a tie and its rule).
        Output: The recommended format for serving (``onnx`` or ``torchscript``).
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.export.profile import profile_formats as profile

    artifacts.read(model, artifacts.TorchModel)
    artifacts.read(onnx_model, artifacts.OnnxModel)
    artifacts.read(torchscript_model, artifacts.TorchScriptModel)
    from kfp_serve.components.storage.fetch import local_folder

    result = profile({"eager": local_folder(model), "torchscript": torchscript_model.path,
                      "onnx": onnx_model.path}, [int(b) for b in batch_sizes], seconds_per_batch,
                     threads, budget_s=budget_s)
    for m in result.measurements:
        metrics.log_metric(f"{m.model_format}_b{m.batch_size}_samples_per_s", round(m.samples_per_s, 1))
        metrics.log_metric(f"{m.model_format}_b{m.batch_size}_p50_ms", round(m.p50_ms, 4))
        metrics.log_metric(f"{m.model_format}_b{m.batch_size}_spread", round(m.spread, 4))
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    print(result.markdown())
    return result.recommended
