"""KFP wrappers: export a model artifact to serving formats, verified."""

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
    atol: float = 1e-4,
    rtol: float = 1e-3,
):
    """Exports a model artifact to ONNX (torch.onnx dynamo exporter) and verifies it.

    The export is checked with onnx.checker, its inputs and outputs against the signature, and
    its outputs (onnxruntime, CPU) against the eager reference on the golden set at two batch
    sizes. The step fails, writing nothing, when any output is out of tolerance.

    Args:
        model: A TorchModel artifact (``model.pt2`` + ``signature.json`` + ``golden.npz``).
        opset: ONNX opset, 18-20.
        atol: Absolute tolerance per value.
        rtol: Relative tolerance per value (``|a - r| <= atol + rtol * |r|``).

    Returns:
        onnx_model: An OnnxModel artifact: ``model.onnx`` with the signature and golden set beside it.
        metrics: Max absolute and relative error per output and batch size.
        report: The verification table.
    """
    from kfp_serve.components.artifacts import expect, mark
    from kfp_serve.components.export.onnx_export import export_onnx as export
    from kfp_serve.components.signature import ModelSignature

    expect(model, "TorchModel")
    result = export(model.path, onnx_model.path, opset=opset, atol=atol, rtol=rtol)
    for batch, comparisons in result.comparisons.items():
        for c in comparisons:
            metrics.log_metric(f"{c.name}_max_abs_error_batch{batch}", c.max_abs_error)
            metrics.log_metric(f"{c.name}_max_rel_error_batch{batch}", c.max_rel_error)
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    mark(onnx_model, "OnnxModel", opset=opset,
         signature=ModelSignature.load(onnx_model.path).to_dict())
    print(result.markdown())
