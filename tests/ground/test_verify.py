"""Output comparison: every output within atol/rtol, every problem named."""

import numpy as np

from kfp_serve.components.verify import compare_outputs, comparison_table, summarize_failures


def test_within_tolerance_passes_with_errors_reported():
    ref = {"y": np.array([[1.0, -2.0]], np.float32)}
    got = {"y": np.array([[1.00001, -2.0]], np.float32)}
    [result] = compare_outputs(ref, got, atol=1e-4, rtol=0)
    assert result.passed
    assert 0 < result.max_abs_error < 2e-5
    assert summarize_failures([result], "ctx") == ""


def test_every_problem_is_collected():
    ref = {
        "a": np.ones((2, 2), np.float32),
        "b": np.ones((2, 2), np.float32),
        "c": np.ones((2, 2), np.float32),
        "d": np.ones((2, 2), np.float32),
    }
    got = {
        "a": np.full((2, 2), 1.5, np.float32),
        "b": np.array([[np.nan, 1], [1, np.inf]], np.float32),
        "c": np.ones((2, 3), np.float32),
    }
    results = {r.name: r for r in compare_outputs(ref, got, atol=1e-3, rtol=1e-3)}
    assert "4/4 values exceed atol=0.001" in results["a"].problem
    assert results["a"].max_abs_error == 0.5
    assert results["b"].problem == "2 NaN/Inf value(s)"
    assert results["c"].problem == "shape [2, 3] != reference [2, 2]"
    assert results["d"].problem.startswith("missing")
    line = summarize_failures(list(results.values()), "batch 2")
    assert line.startswith("batch 2: a: 4/4 values exceed")
    assert all(name in line for name in "abcd")
    assert "\n" not in line
    table = comparison_table(list(results.values())).markdown()
    assert table.count("FAIL") == 4


def test_relative_tolerance_scales_with_reference():
    ref = {"y": np.array([1000.0])}
    [ok] = compare_outputs(ref, {"y": np.array([1000.5])}, atol=0, rtol=1e-3)
    [bad] = compare_outputs(ref, {"y": np.array([1002.0])}, atol=0, rtol=1e-3)
    assert ok.passed and not bad.passed
    assert abs(bad.max_rel_error - 2e-3) < 1e-9


def test_masked_positions_are_skipped_and_counted():
    """A left-padded row: its first two positions are hidden by the mask, so their values (here
    wildly off, even NaN) are not compared; every visible one is."""
    from kfp_serve.components.signature import ModelSignature, TensorSpec
    from kfp_serve.components.verify import visible_positions

    signature = ModelSignature(
        (TensorSpec("attention_mask", "int64", ("batch", "seq")),),
        (TensorSpec("logits", "float32", ("batch", "seq", 3), masked_by="attention_mask"),))
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    ref = np.zeros((2, 4, 3), np.float32)
    got = ref.copy()
    got[0, :2] = [[7.0, np.nan, 1.0], [5.0, 5.0, 5.0]]
    [result] = compare_outputs({"logits": ref}, {"logits": got}, 1e-4, 1e-3,
                               visible_positions(signature, {"attention_mask": mask}))
    assert result.passed and result.masked == 6 and result.max_abs_error == 0
    assert "pass (6 masked values skipped)" in comparison_table([result]).markdown()
    got[1, 3, 2] = 1.0  # a visible position still fails
    [result] = compare_outputs({"logits": ref}, {"logits": got}, 1e-4, 1e-3,
                               visible_positions(signature, {"attention_mask": mask}))
    assert result.problem == "1/18 values exceed atol=0.0001 + rtol=0.001*|ref| (max abs error 1)"
