"""The HTML validation report as a user sees it: rendered by headless Chromium, then checked
pixel by pixel for the latency chart's bars and the verdict's colour."""

import shutil
import subprocess

import numpy as np
from support import requires

from kfp_serve.components.validate.load import LoadLevel
from kfp_serve.components.validate.result import ValidationResult
from kfp_serve.components.verify import compare_outputs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = requires("chromium")
COLOURS = {"p50": (0x4C, 0x78, 0xA8), "p95": (0xF5, 0x85, 0x18), "p99": (0xE4, 0x57, 0x56),
           "passed": (0x1A, 0x7F, 0x37)}


def _screenshot(page: str, tmp_path) -> np.ndarray:
    from PIL import Image

    html = tmp_path / "report.html"
    html.write_text(page)
    png = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1000",
         f"--screenshot={png}", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return np.asarray(Image.open(png).convert("RGB"))


def _pixels(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(np.abs(image.astype(int) - colour) <= 3, axis=-1).sum())


def test_report_renders_chart_verdict_and_tables(tmp_path):
    reference = {"logits": np.ones((4, 10), np.float32)}
    result = ValidationResult(
        "http://127.0.0.1:8000", "digits", [],
        compare_outputs(reference, {"logits": reference["logits"] + 1e-6}, 1e-4, 1e-3), [1.0], 4,
        load=[LoadLevel(1, 500, 0, 1.0, 0.8, 1.2, 1.5), LoadLevel(4, 1500, 0, 1.0, 2.1, 3.5, 4.0),
              LoadLevel(16, 2000, 3, 1.0, 6.0, 9.5, 12.0)],
    )
    image = _screenshot(result.html(), tmp_path)
    counts = {name: _pixels(image, colour) for name, colour in COLOURS.items()}
    # three bars per percentile, the tallest (c=16) alone well over a thousand pixels
    assert counts["p99"] > counts["p95"] > counts["p50"] > 1000, counts
    assert counts["passed"] > 200, counts  # the green PASSED heading
    # the tables rendered as tables: grid lines of the cell borders
    grey = np.all(np.abs(image.astype(int) - (0xBB, 0xBB, 0xBB)) <= 8, axis=-1)
    assert int(grey.any(axis=1).sum()) > 10


def test_failed_report_shows_the_problems_in_red(tmp_path):
    reference = {"logits": np.ones((4, 10), np.float32)}
    result = ValidationResult("http://127.0.0.1:8000", "digits", ["input 'image' is FP16"],
                              compare_outputs(reference, {"logits": reference["logits"] + 1}, 1e-4, 0), [], 4)
    page = result.html()
    assert "input &#x27;image&#x27; is FP16" in page and "<svg" not in page
    image = _screenshot(page, tmp_path)
    assert _pixels(image, (0xCF, 0x22, 0x2E)) > 200  # the red FAILED heading
