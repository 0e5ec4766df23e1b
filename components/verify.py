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
from kfp_serve.components.signature import ModelSignature


@dataclass(frozen=True)
class OutputComparison:
    """How one output compares with its reference."""

    name: str
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    problem: str = ""
    masked: int = 0  # values at positions the output's mask hides, not compared

    @property
    def passed(self) -> bool:
        return not self.problem


def visible_positions(signature: ModelSignature | None,
                      inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per output the signature says is ``masked_by`` an input: True where that input is
    non-zero (the positions callers read)."""
    if signature is None:
        return {}
    return {spec.name: np.asarray(inputs[spec.masked_by]) != 0
            for spec in signature.outputs if spec.masked_by and spec.masked_by in inputs}


def mask_over(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A mask of an output's leading dims, spread over all of the output's values."""
    mask = np.asarray(mask)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim)), shape)


def compare_outputs(
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    atol: float,
    rtol: float,
    visible: dict[str, np.ndarray] | None = None,
) -> list[OutputComparison]:
    """Compare every reference output with the actual one (``|a - r| <= atol + rtol * |r|``).

    All problems are collected — a missing output, a shape or dtype change, NaN/Inf values, a
    tolerance exceeded — so one report names every mismatch. Where ``visible`` holds an
    output's mask (see :func:`visible_positions`), only the positions it shows are compared.
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
        masked = 0
        if name in (visible or {}):
            shown = mask_over(visible[name], ref.shape)  # type: ignore[index]
            masked = int(shown.size - np.count_nonzero(shown))
            ref64, got64 = ref64[shown], got64[shown]
        if not np.all(np.isfinite(ref64)):
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 "the reference itself holds NaN/Inf; fix the model or golden set",
                                 masked)
            )
            continue
        if not np.all(np.isfinite(got64)):
            bad = int(np.size(got64) - np.count_nonzero(np.isfinite(got64)))
            results.append(
                OutputComparison(name, float("nan"), float("nan"), atol, rtol,
                                 f"{bad} NaN/Inf value(s)", masked)
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
        results.append(OutputComparison(name, max_abs, max_rel, atol, rtol, problem, masked))
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
             f"{r.rtol:g}", ("pass" if r.passed else f"FAIL: {r.problem}")
             + (f" ({r.masked} masked values skipped)" if r.masked else "")] for r in results]
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
                      what: str, signature: ModelSignature | None = None
                      ) -> dict[str, list[OutputComparison]]:
    """Run ``run`` on the golden inputs at each verification batch size and compare; where the
    golden set has a resized variant (other dynamic dims at a second size), that too. Outputs
    the ``signature`` says are masked are compared at their visible positions only.

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
        comparisons[key] = compare_outputs(part.outputs, actual, atol, rtol,
                                           visible_positions(signature, part.inputs))
        failure = summarize_failures(comparisons[key], label.replace("batch size", "batch"))
        if failure:
            problems.append(failure)
    if problems:
        raise VerificationError(f"{what} disagrees with the eager model: " + " | ".join(problems))
    return comparisons
