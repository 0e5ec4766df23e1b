"""The validation report: Markdown for the log, HTML with the latency chart for the UI."""

from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.validate.targets import OipRestTarget
from kfp_serve.components.validate.validation import validate


def test_html_report_renders_the_chart_and_tables(server, digits_onnx, tmp_path):
    signature, golden = ModelSignature.load(digits_onnx), GoldenSet.load(digits_onnx)
    result = validate(OipRestTarget(server.url, "digits", signature), golden, load_seconds=0.3,
                      concurrency=[1, 2])
    page = result.html()
    assert "<svg" in page and "Endpoint validation: <span class='PASSED'>PASSED" in page
    assert page.count("<table>") == 2 and "<td><code>logits</code></td>" in page
    assert "## Load" in result.markdown()
