"""Numeric comparison of model outputs against reference outputs, per output.

Used by every export's verification and by live-endpoint validation, so the two report the same
numbers in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kfp_serve.components.errors import VerificationError, first_line
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.report import Table


@dataclass(frozen=True)
class OutputComparison:
    """How one output compares with its reference."""

    name: str
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    problem: str = ""

    @property
    def passed(self) -> bool:
        return not self.problem


def compare_outputs(
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    atol: float,
    rtol: float,
) -> list[OutputComparison]:
    """Compare every reference output with the actual one (``|a - r| <= atol + rtol * |r|``).

    All problems are collected — a missing output, a shape or dtype change, NaN/Inf values, a
    tolerance exceeded — so one report names every mismatch.
    """
    results = []
    for name, ref in reference.items():
        if name not in actual:
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 f"missing (got {sorted(actual)})")
            )
            continue
        got = np.asarray(actual[name])
        if got.shape != ref.shape:
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 f"shape {list(got.shape)} != reference {list(ref.shape)}")
            )
            continue
        ref64 = ref.astype(np.float64)
        got64 = got.astype(np.float64)
        if not np.all(np.isfinite(ref64)):
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 "the reference itself holds NaN/Inf; fix the model or golden set")
            )
            continue
        if not np.all(np.isfinite(got64)):
            bad = int(np.size(got64) - np.count_nonzero(np.isfinite(got64)))
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 f"{bad} NaN/Inf value(s)")
            )
            continue
        diff = np.abs(got64 - ref64)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(ref64), 1e-12)).max()) if diff.size else 0.0
        problem = ""
        excess = diff - (atol + rtol * np.abs(ref64))
        if diff.size and float(excess.max()) > 0:
            count = int(np.count_nonzero(excess > 0))
            problem = (
                f"{count}/{diff.size} values exceed atol={atol:g} + rtol={rtol:g}*|ref|"
                f" (max abs error {max_abs:.3g})"
            )
        results.append(OutputComparison(name, max_abs, max_rel, atol, rtol, problem))
    return results


def summarize_failures(results: list[OutputComparison], context: str) -> str:
    """One line naming every failed output, or '' when all passed."""
    failed = [f"{r.name}: {r.problem}" for r in results if not r.passed]
    if not failed:
        return ""
    return f"{context}: " + "; ".join(failed)


def comparison_table(results: list[OutputComparison]) -> Table:
    """The comparison, one row per output (render with ``.markdown()`` or ``.html()``)."""
    rows = [[f"`{r.name}`", f"{r.max_abs_error:.3g}", f"{r.max_rel_error:.3g}", f"{r.atol:g}",
             f"{r.rtol:g}", "pass" if r.passed else f"FAIL: {r.problem}"] for r in results]
    return Table(["output", "max abs error", "max rel error", "atol", "rtol", "result"], rows)


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def verification_batches(golden: GoldenSet) -> list[int]:
    """The batch sizes verified: the whole golden set, then a different, smaller one.

    A model exported from a single example batch can silently fix the batch dim; running a
    second size catches it.
    """
    full = golden.batch_size
    return [full, 1] if full > 1 else [full]


def verify_at_batches(run: Runner, golden: GoldenSet, atol: float, rtol: float,
                      what: str) -> dict[str, list[OutputComparison]]:
    """Run ``run`` on the golden inputs at each verification batch size and compare; where the
    golden set has a resized variant (other dynamic dims at a second size), that too.

    Returns the comparisons by case: ``"batch 16"``, ``"batch 1"``, and ``"resized"`` (other
    dynamic dims at their second size) where the golden set has that variant.

    Raises:
        VerificationError: one message naming every output out of tolerance at every size, or
            the size at which the runtime failed.
    """
    cases = [(f"batch {b}", f"batch size {b}", golden.slice(0, b)) for b in verification_batches(golden)]
    if golden.resized is not None:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in golden.resized.inputs.items())
        cases.append(("resized", f"the resized inputs ({shapes})", golden.resized))
    comparisons: dict[str, list[OutputComparison]] = {}
    problems = []
    for key, label, part in cases:
        try:
            actual = run(part.inputs)
        except VerificationError:
            raise
        except Exception as err:  # any runtime's own error type
            raise VerificationError(f"{what} failed at {label}: {first_line(err)}") from err
        comparisons[key] = compare_outputs(part.outputs, actual, atol, rtol)
        failure = summarize_failures(comparisons[key], label.replace("batch size", "batch"))
        if failure:
            problems.append(failure)
    if problems:
        raise VerificationError(f"{what} disagrees with the eager model: " + " | ".join(problems))
    return comparisons
